//! Claims due items and publishes them on `haven.retry.dispatch.<operation_type>`.
//!
//! It sleeps until the earliest item falls due or a lease runs out, and wakes at once when
//! PostgreSQL notifies that something new is due (enqueue, retry-now, a rescheduled failure),
//! so an item due now is dispatched within milliseconds, without polling.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haven_bus::Bus;
use haven_proto::events::v1::RetryDispatch;
use haven_proto::time::timestamp;
use haven_retry_client::dispatch_subject;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::publish_lifecycle;
use crate::model::ItemRow;
use crate::store::{NOTIFY_CHANNEL, Store};

/// The longest the dispatcher sleeps without being woken (a safety net for clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How often leases are checked for expiry and the in-flight count refreshed.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// When the periodic checks are next due, and the room left under the in-flight cap.
struct Checks {
    next_rescue: tokio::time::Instant,
    next_in_flight: tokio::time::Instant,
    room: i64,
}

pub struct Dispatcher {
    pub store: Store,
    pub bus: Bus,
    pub worker_id: String,
    pub batch: i64,
    pub max_in_flight: i64,
    /// Most leases one tenant may hold (0: no limit).
    pub max_in_flight_per_tenant: i64,
    /// Poked when work may be due: by NOTIFY, and by this process's result handling.
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    pub async fn run(self, token: CancellationToken) {
        spawn_listener(self.store.pool.clone(), self.wake.clone(), token.clone());
        let mut failures = 0u32;
        let now = tokio::time::Instant::now();
        let mut checks = Checks {
            next_rescue: now,
            next_in_flight: now,
            room: 0,
        };
        while !token.is_cancelled() {
            match self.round(&mut checks).await {
                Ok(Some(sleep)) => {
                    failures = 0;
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(sleep) => {}
                    }
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tracing::warn!(error = %e, ?backoff, "dispatch round failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// One round: rescue expired leases, claim and publish. `None` means "go again at once";
    /// `Some(d)` means nothing is due for `d`.
    async fn round(&self, checks: &mut Checks) -> Result<Option<Duration>, String> {
        // Leases and the in-flight count change slowly: look at them a few times a second,
        // not on every round of a busy queue.
        let now = tokio::time::Instant::now();
        if now >= checks.next_rescue {
            checks.next_rescue = now + CHECK_EVERY;
            let rescued = self
                .store
                .rescue_expired(500)
                .await
                .map_err(|e| e.to_string())?;
            if !rescued.is_empty() {
                tracing::warn!(count = rescued.len(), "rescued items whose lease expired");
                metrics::counter!("haven_retry_lease_expired_total")
                    .increment(rescued.len() as u64);
                publish_lifecycle(&self.bus, &rescued)
                    .await
                    .map_err(|e| e.to_string())?;
                // More may have expired than one rescue takes.
                checks.next_rescue = now;
            }
        }
        if self.max_in_flight > 0 && (now >= checks.next_in_flight || checks.room < self.batch) {
            checks.next_in_flight = now + CHECK_EVERY;
            checks.room =
                self.max_in_flight - self.store.in_flight().await.map_err(|e| e.to_string())?;
        }
        let room = if self.max_in_flight > 0 {
            checks.room
        } else {
            self.batch
        };
        if room <= 0 {
            // Owners are behind: wait for results to free room.
            return Ok(Some(Duration::from_millis(50)));
        }
        let claimed = self
            .store
            .claim(
                &self.worker_id,
                room.min(self.batch),
                self.max_in_flight_per_tenant,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !claimed.is_empty() {
            let count = claimed.len();
            checks.room -= count as i64;
            let unsent = self.publish(claimed).await;
            if unsent == count {
                // The bus takes nothing: back off rather than claim again at once.
                return Err(format!("none of {count} dispatches could be published"));
            }
            return Ok(None);
        }
        let next = self.store.next_wake().await.map_err(|e| e.to_string())?;
        let sleep = next
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
            // A lease check may be due before anything falls due.
            .min(
                checks
                    .next_rescue
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            );
        if sleep.is_zero() {
            // Due now but claimed by another replica; give it a moment.
            return Ok(Some(Duration::from_millis(5)));
        }
        Ok(Some(sleep))
    }

    /// Publishes claimed items; those the bus did not take are given back at once. Returns
    /// how many were not sent.
    async fn publish(&self, claimed: Vec<ItemRow>) -> usize {
        let now = Utc::now();
        let mut pending = Vec::with_capacity(claimed.len());
        let mut unsent = Vec::new();
        for item in &claimed {
            let lag = (now - item.next_retry_at)
                .to_std()
                .unwrap_or(Duration::ZERO);
            metrics::histogram!("haven_retry_dispatch_lag_seconds").record(lag.as_secs_f64());
            let dispatch = RetryDispatch {
                id: item.id.to_string(),
                tenant_id: item.tenant_id.to_string(),
                operation_type: item.operation_type.clone(),
                attempt: item.attempts,
                max_attempts: item.max_attempts,
                payload_json: item.payload.clone(),
                lease_expires_at: item.lease_expires_at.map(timestamp),
                reference_id: item.reference_id.clone().unwrap_or_default(),
                reference_table: item.reference_table.clone().unwrap_or_default(),
                dispatched_at: Some(timestamp(now)),
                due_at: Some(timestamp(item.next_retry_at)),
            };
            let msg_id = format!("{}:{}", item.id, item.attempts);
            let payload = prost::Message::encode_to_vec(&dispatch).into();
            match self
                .bus
                .publish_start(&dispatch_subject(&item.operation_type), payload, &msg_id)
                .await
            {
                Ok(ack) => pending.push((item, ack)),
                Err(e) => {
                    tracing::warn!(error = %e, item = %item.id, "dispatch not sent");
                    unsent.push((item.id, item.attempts));
                }
            }
        }
        for (item, ack) in pending {
            if let Err(e) = ack.await {
                tracing::warn!(error = %e, item = %item.id, "dispatch not stored");
                unsent.push((item.id, item.attempts));
            }
        }
        metrics::counter!("haven_retry_dispatched_total")
            .increment((claimed.len() - unsent.len()) as u64);
        if !unsent.is_empty() {
            // If even this fails, the lease expiry rescues them.
            if let Err(e) = self.store.unclaim(&unsent).await {
                tracing::warn!(error = %e, "cannot give back unsent claims; their leases will expire");
            }
        }
        unsent.len()
    }
}

/// LISTENs for "something is due" and pokes the dispatcher. Reconnects after a database
/// restart; a notification missed meanwhile is covered by the dispatcher's own wake-ups.
fn spawn_listener(pool: sqlx::PgPool, wake: Arc<Notify>, token: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                tracing::warn!(error = %e, "cannot LISTEN; retrying");
                continue;
            }
            wake.notify_one();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    n = listener.recv() => match n {
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            wake.notify_one();
                            break;
                        }
                    },
                }
            }
        }
    });
}
