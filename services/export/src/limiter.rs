//! Fair sharing: one tenant's heavy exports cannot take every connection. Each tenant may
//! run a bounded number of exports at once, and the service a bounded number in all (below
//! the pool size, so history and the other calls always find a connection); past either a
//! clear `ResourceExhausted`.
//!
//! The permit lives as long as the stream's task, not the RPC call: a tower layer would see
//! the call end when the response headers go out, while the rows are still flowing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::error::ExportError;

#[derive(Clone)]
pub struct TenantLimiter {
    per_tenant: usize,
    global: usize,
    running: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// Held while an export runs; dropping it frees the slot.
pub struct Permit {
    tenant: Uuid,
    running: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl TenantLimiter {
    pub fn new(per_tenant: usize, global: usize) -> Self {
        TenantLimiter {
            per_tenant: per_tenant.max(1),
            global: global.max(1),
            running: Arc::default(),
        }
    }

    pub fn acquire(&self, tenant: Uuid) -> Result<Permit, ExportError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = running.values().sum();
        if total >= self.global {
            metrics::counter!("haven_export_rejected_total", "reason" => "global_limit")
                .increment(1);
            return Err(ExportError::Busy(format!(
                "the export service already runs {} exports, the most it runs at once; retry in a moment",
                self.global
            )));
        }
        let count = running.entry(tenant).or_insert(0);
        if *count >= self.per_tenant {
            metrics::counter!("haven_export_rejected_total", "reason" => "tenant_limit")
                .increment(1);
            return Err(ExportError::Busy(format!(
                "this tenant already runs {} exports, the most allowed at once; retry when one finishes",
                self.per_tenant
            )));
        }
        *count += 1;
        Ok(Permit {
            tenant,
            running: self.running.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = running.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_tenant_and_freed_on_drop() {
        let limiter = TenantLimiter::new(2, 3);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = limiter.acquire(a).unwrap();
        let _second = limiter.acquire(a).unwrap();
        assert_eq!(
            limiter
                .acquire(a)
                .err()
                .map(|e| tonic::Status::from(e).code()),
            Some(tonic::Code::ResourceExhausted)
        );
        let _other = limiter.acquire(b).expect("another tenant is not affected");
        // Three run: the service is full for everyone.
        assert_eq!(
            limiter
                .acquire(Uuid::new_v4())
                .err()
                .map(|e| tonic::Status::from(e).code()),
            Some(tonic::Code::ResourceExhausted)
        );
        drop(first);
        assert!(limiter.acquire(a).is_ok());
    }
}
