//! Deletes resolved and cancelled items once `HAVEN_RETRY_RETENTION` has passed, so the
//! table (and every count and list over it) holds what is live, failed or recent.
//!
//! Small batches, each its own short transaction, with a pause between them: pruning a large
//! backlog never holds many row locks or the table's attention for long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Items deleted per transaction.
const BATCH: i64 = 500;
/// Pause between batches, leaving room to the queue's own work.
const PAUSE: Duration = Duration::from_millis(50);
/// How often retention looks again once nothing is left to delete.
const EVERY: Duration = Duration::from_secs(300);

pub struct Retention {
    pub store: Store,
    pub keep: Duration,
}

impl Retention {
    pub async fn run(self, token: CancellationToken) {
        let mut failures = 0u32;
        while !token.is_cancelled() {
            let wait = match self.store.prune(self.keep, BATCH).await {
                Ok(n) => {
                    failures = 0;
                    if n > 0 {
                        metrics::counter!("haven_retry_pruned_total").increment(n);
                        tracing::debug!(deleted = n, "retention deleted old items");
                    }
                    if n as i64 == BATCH { PAUSE } else { EVERY }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "retention could not delete old items; will retry");
                    Duration::from_secs(u64::from(failures.min(60)))
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
