//! What the queue accepts and from whom, before anything is stored: operation types on this
//! deployment's allow-list (`HAVEN_RETRY_OPERATION_TYPES`), and at most
//! `HAVEN_RETRY_MAX_PENDING_PER_TENANT` pending items per tenant, so one tenant cannot fill
//! the queue that every tenant shares.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::validate;

/// How long a tenant's pending count is trusted before it is counted again. Within it, the
/// count grows with every admission, so the cap is overshot by at most what other replicas
/// admit meanwhile.
const COUNT_TTL: Duration = Duration::from_secs(1);

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every operation type.
    Any,
    /// `integrations.*`: every type under a prefix (kept with its dot).
    Prefix(String),
    /// `integrations.register_webhook`.
    Exact(String),
}

/// The operation types a deployment accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationTypes(Vec<Pattern>);

impl OperationTypes {
    /// Parses `*`, or a comma-separated list of types and `prefix.*` patterns.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let pattern = if entry == "*" {
                Pattern::Any
            } else if let Some(prefix) = entry.strip_suffix(".*") {
                validate::operation_type(prefix).map_err(|e| format!("`{entry}`: {e}"))?;
                Pattern::Prefix(format!("{prefix}."))
            } else {
                validate::operation_type(entry).map_err(|e| format!("`{entry}`: {e}"))?;
                Pattern::Exact(entry.to_owned())
            };
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Err("the list is empty: give `*` or the operation types to accept".into());
        }
        Ok(OperationTypes(patterns))
    }

    pub fn allows(&self, operation_type: &str) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => operation_type.starts_with(prefix.as_str()),
            Pattern::Exact(exact) => exact == operation_type,
        })
    }
}

/// Why an enqueue was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "operation_type: `{0}` is not accepted by this deployment (HAVEN_RETRY_OPERATION_TYPES)"
    )]
    NotAllowed(String),
    #[error(
        "this tenant already has {cap} pending items, the most this deployment holds for one tenant; retry later"
    )]
    Backlog { cap: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The admission checks, shared by the gRPC and NATS enqueue paths.
pub struct Admission {
    store: Store,
    pub types: OperationTypes,
    /// 0: no cap.
    pub max_pending: i64,
    counts: Mutex<HashMap<Uuid, (i64, Instant)>>,
}

impl Admission {
    pub fn new(store: Store, types: OperationTypes, max_pending: i64) -> Self {
        Admission {
            store,
            types,
            max_pending,
            counts: Mutex::default(),
        }
    }

    /// Admits one new item of `operation_type` for `tenant`, or says why not.
    pub async fn admit(&self, tenant: Uuid, operation_type: &str) -> Result<(), Refused> {
        if !self.types.allows(operation_type) {
            return Err(Refused::NotAllowed(operation_type.to_owned()));
        }
        if self.max_pending <= 0 {
            return Ok(());
        }
        let cached = self.cached(tenant);
        let pending = match cached {
            Some(n) => n,
            None => {
                let n = self.store.pending_of(tenant, self.max_pending).await?;
                self.store_count(tenant, n);
                n
            }
        };
        if pending >= self.max_pending {
            return Err(Refused::Backlog {
                cap: self.max_pending,
            });
        }
        self.bump(tenant);
        Ok(())
    }

    fn cached(&self, tenant: Uuid) -> Option<i64> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < COUNT_TTL)
            .map(|(n, _)| *n)
    }

    fn store_count(&self, tenant: Uuid, n: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        // Forget stale tenants now and then, so the map stays as small as the busy set.
        if counts.len() > 10_000 {
            counts.retain(|_, (_, at)| at.elapsed() < COUNT_TTL);
        }
        counts.insert(tenant, (n, Instant::now()));
    }

    fn bump(&self, tenant: Uuid) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = counts.get_mut(&tenant) {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allow_lists_take_types_and_prefixes() {
        let list = OperationTypes::parse("integrations.*, exports.statistics_variant").unwrap();
        assert!(list.allows("integrations.register_webhook"));
        assert!(list.allows("exports.statistics_variant"));
        assert!(!list.allows("exports.statistics_variant_extra"));
        assert!(!list.allows("integrationsx.a"));
        assert!(!list.allows("shopify.sync_order"));
        assert!(
            OperationTypes::parse("*")
                .unwrap()
                .allows("anything.at_all")
        );
        for bad in ["", " , ", "Integrations.*", "a..b", "x.*.y"] {
            assert!(OperationTypes::parse(bad).is_err(), "{bad:?}");
        }
    }
}
