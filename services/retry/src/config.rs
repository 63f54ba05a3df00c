use std::net::SocketAddr;
use std::time::Duration;

use haven_server::CommonArgs;

use crate::backoff::{Backoff, BackoffPolicy};

/// haven-retry: The durable retry queue for failed operations: enqueue, backoff, dispatch
/// over NATS, outcomes, dead letters and the error-management API.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "haven-retry", version, about, long_about = None)]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "HAVEN_RETRY_ADDR", default_value = "127.0.0.1:50052")]
    pub addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        env = "HAVEN_RETRY_METRICS_ADDR",
        default_value = "127.0.0.1:9152"
    )]
    pub metrics_addr: String,
    /// This replica's name in claims; defaults to host name, process id and a random suffix.
    #[arg(long, env = "HAVEN_RETRY_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How long an owner has to report an attempt's result before the item is rescued.
    #[arg(long, env = "HAVEN_RETRY_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Items claimed per round.
    #[arg(long, env = "HAVEN_RETRY_CLAIM_BATCH", default_value_t = 256)]
    pub claim_batch: i64,
    /// How far ahead of its due time an item may be claimed; it is published when it falls
    /// due, never before, so a claim's own time (a few milliseconds on a busy database) does
    /// not make it late. `0s`: claim only what is due. 100 ms rather than 25: on a slow
    /// machine the dispatcher's rounds (a claim, then the looks at capacity and the next due
    /// time) outran 25 ms often enough to put its p99 at 7 to 13 ms, against 5 ms.
    #[arg(long, env = "HAVEN_RETRY_CLAIM_AHEAD", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub claim_ahead: Duration,
    /// Most items leased at once across replicas; dispatch pauses beyond it (0: no limit).
    /// When leases expire unanswered, each dispatcher keeps fewer (what owners finished in a
    /// lease) and grows back to this after leases pass without expiry.
    #[arg(long, env = "HAVEN_RETRY_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: i64,
    /// Most items one tenant may hold leased at once (0: no per-tenant limit); claiming also
    /// takes tenants in turn, so one tenant's backlog never holds back another's due item.
    #[arg(
        long,
        env = "HAVEN_RETRY_MAX_IN_FLIGHT_PER_TENANT",
        default_value_t = 2_000
    )]
    pub max_in_flight_per_tenant: i64,
    /// Most pending items one tenant may have; Enqueue answers ResourceExhausted beyond it and
    /// NATS enqueues wait in the stream (0: no limit).
    #[arg(
        long,
        env = "HAVEN_RETRY_MAX_PENDING_PER_TENANT",
        default_value_t = 100_000
    )]
    pub max_pending_per_tenant: i64,
    /// Operation types this deployment accepts: `*`, or a comma-separated list of types and
    /// `prefix.*` patterns, e.g. `integrations.*,exports.statistics_variant`.
    #[arg(long, env = "HAVEN_RETRY_OPERATION_TYPES", default_value = "*")]
    pub operation_types: String,
    /// Backoff base: the first retry waits up to this long.
    #[arg(long, env = "HAVEN_RETRY_BACKOFF_BASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub backoff_base: Duration,
    /// Backoff cap: no retry waits longer (unless the owner asks, e.g. Retry-After).
    #[arg(long, env = "HAVEN_RETRY_BACKOFF_CAP", default_value = "1h", value_parser = humantime::parse_duration)]
    pub backoff_cap: Duration,
    /// Resolved and cancelled items (and their attempt history) are deleted this long after
    /// their last change; failed items are kept until someone acts on them. `0s` keeps all.
    #[arg(long, env = "HAVEN_RETRY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Per operation type backoff, e.g. `integrations.refresh_token=1s:5m,exports.statistics_variant=30s:2h`.
    #[arg(long, env = "HAVEN_RETRY_BACKOFF", default_value = "")]
    pub backoff_overrides: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// Settings for tests: the given servers, ephemeral ports.
    pub fn for_test(common: CommonArgs) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: "127.0.0.1:0".into(),
            worker_id: None,
            lease: Duration::from_secs(60),
            claim_batch: 256,
            claim_ahead: Duration::from_millis(100),
            max_in_flight: 10_000,
            max_in_flight_per_tenant: 2_000,
            max_pending_per_tenant: 100_000,
            operation_types: "*".into(),
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            backoff_overrides: String::new(),
            retention: Duration::from_secs(30 * 24 * 3600),
            common,
        }
    }

    pub fn backoff_policy(&self) -> Result<BackoffPolicy, String> {
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return Err(
                "HAVEN_RETRY_BACKOFF_BASE must be > 0 and <= HAVEN_RETRY_BACKOFF_CAP".into(),
            );
        }
        Ok(BackoffPolicy {
            default: Backoff {
                base: self.backoff_base,
                cap: self.backoff_cap,
            },
            per_type: BackoffPolicy::parse_overrides(&self.backoff_overrides)
                .map_err(|e| format!("HAVEN_RETRY_BACKOFF: {e}"))?,
        })
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            format!(
                "{host}-{}-{}",
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..6]
            )
        })
    }
}

use uuid::Uuid;

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
