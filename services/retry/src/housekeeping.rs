//! Background upkeep every replica runs: folding the counts' deltas into the counts, and
//! retention, which deletes resolved and cancelled items once `HAVEN_RETRY_RETENTION` has
//! passed so the table (and every list over it) holds what is live, failed or recent.
//!
//! Retention deletes in small batches, each its own short transaction with a pause between,
//! so pruning a large backlog never holds many row locks or the table's attention for long.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Items deleted per transaction.
const PRUNE_BATCH: i64 = 500;
/// Pause between full batches, leaving room to the queue's own work.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);
/// How often retention looks again once nothing is left to delete.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How often the counts' deltas are folded (readers add what is not folded yet).
const FOLD_EVERY: Duration = Duration::from_secs(5);

/// Folds the counts' deltas until `token` is cancelled.
pub async fn fold_counts(store: Store, token: CancellationToken) {
    repeat("folding counts", token, || async {
        store.fold_counts().await?;
        Ok(FOLD_EVERY)
    })
    .await;
}

/// Deletes resolved and cancelled items older than `keep` until `token` is cancelled.
pub async fn retention(store: Store, keep: Duration, token: CancellationToken) {
    repeat("retention", token, || async {
        let n = store.prune(keep, PRUNE_BATCH).await?;
        if n > 0 {
            metrics::counter!("haven_retry_pruned_total").increment(n);
            tracing::debug!(deleted = n, "retention deleted old items");
        }
        Ok(if n as i64 == PRUNE_BATCH {
            PRUNE_PAUSE
        } else {
            PRUNE_EVERY
        })
    })
    .await;
}

/// Runs `round` until `token` is cancelled, sleeping what it returns; a failure is logged
/// and retried after a growing pause (1 s per failure in a row, at most a minute).
async fn repeat<F, Fut>(what: &str, token: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Duration, StoreError>>,
{
    let mut failures = 0u32;
    while !token.is_cancelled() {
        let wait = match round().await {
            Ok(wait) => {
                failures = 0;
                wait
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, task = what, "background task failed; will retry");
                Duration::from_secs(u64::from(failures.min(60)))
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
