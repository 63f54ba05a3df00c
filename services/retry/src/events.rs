//! Lifecycle events, `haven.retry.events.resolved` and `.failed` (the dead letter), and the
//! relay that publishes them from the outbox.
//!
//! A transition writes its event to `retry.outbox` in its own transaction; the relay
//! publishes what the outbox holds and deletes each row only after JetStream acknowledged
//! it. A crash or an outage in between leaves the row, published later: events are
//! at-least-once, and the row's message id makes the bus drop a repeat.

use std::sync::Arc;
use std::time::Duration;

use haven_bus::{Bus, Fate, Outgoing};
use haven_proto::events::v1::RetryLifecycle;
use haven_proto::time::timestamp;
use haven_retry_client::{FAILED_SUBJECT, RESOLVED_SUBJECT};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::{ItemRow, Status};
use crate::store::RELAY_LOCK;

/// Events published per round.
const BATCH: i64 = 256;
/// How long a round waits for the bus's acks.
const PUBLISH_WITHIN: Duration = Duration::from_secs(5);
/// How often the outbox is looked at without being poked: rows another replica wrote and
/// could not publish (it died) are taken over within this.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// An event, ready for the outbox.
pub struct Event {
    pub subject: &'static str,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// The event of an item that reached resolved or failed; `None` for other statuses.
pub fn lifecycle(item: &ItemRow) -> Option<Event> {
    let subject = match item.status {
        Status::Resolved => RESOLVED_SUBJECT,
        Status::Failed => FAILED_SUBJECT,
        Status::Pending | Status::Processing | Status::Cancelled => return None,
    };
    let event = RetryLifecycle {
        item: Some(item.to_proto()),
        occurred_at: Some(timestamp(item.updated_at)),
    };
    Some(Event {
        subject,
        // The transition's own id: an item fails (or resolves) at most once per attempt.
        msg_id: format!("{}:{}:{}", item.id, item.attempts, item.status),
        payload: prost::Message::encode_to_vec(&event),
    })
}

/// Publishes the outbox until `token` is cancelled.
pub struct Relay {
    pub pool: PgPool,
    pub bus: Bus,
    /// Poked by the store when it wrote events.
    pub wake: Arc<Notify>,
}

impl Relay {
    pub async fn run(self, token: CancellationToken) {
        let mut failures = 0u32;
        while !token.is_cancelled() {
            let wait = match self.round().await {
                // Full: more may be waiting.
                Ok(n) if n as i64 == BATCH => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    SWEEP_EVERY
                }
                Err(e) => {
                    failures += 1;
                    let backoff = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tracing::warn!(error = %e, ?backoff, "lifecycle events not published; will retry");
                    backoff
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes up to [`BATCH`] rows and deletes those stored. The rows stay locked while
    /// they are published, so replicas relaying at once take different ones. Returns how
    /// many rows it took.
    async fn round(&self) -> Result<usize, String> {
        // One replica relays at a time, the others waiting their turn, so the rows need no
        // lock of their own: a row lock (`FOR UPDATE SKIP LOCKED`) wrote each event once more
        // to the WAL between its insert and its delete.
        //
        // The commit does not wait for the disk: a delete lost to a crash of PostgreSQL only
        // publishes its events again, which the bus drops by their ids. Waiting for it, the
        // relay fell behind the results in a backlog (34,000 events in the outbox after 30 s).
        // BEGIN, that setting and the lock go in one round trip.
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock({RELAY_LOCK})"
            )))
            .await
            .map_err(|e| e.to_string())?;
        let rows = sqlx::query!(
            "SELECT seq, subject, msg_id, payload FROM retry.outbox ORDER BY seq LIMIT $1",
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(0);
        }
        let taken = rows.len();
        let messages = rows
            .iter()
            .map(|r| Outgoing {
                subject: r.subject.clone(),
                payload: r.payload.clone().into(),
                msg_id: r.msg_id.clone(),
            })
            .collect();
        let fates = self.bus.publish_all(messages, PUBLISH_WITHIN).await;
        let mut stored = Vec::new();
        let mut dead_letters = 0u64;
        let mut problem = None;
        for (row, fate) in rows.iter().zip(fates) {
            match fate {
                Fate::Stored => {
                    stored.push(row.seq);
                    if row.subject == FAILED_SUBJECT {
                        dead_letters += 1;
                    }
                }
                Fate::Refused(reason) | Fate::Unknown(reason) => problem = Some(reason),
            }
        }
        // Planned at each round. PostgreSQL's prepared plan, made after five rounds while
        // the outbox held a few rows, is a scan of the whole table (`Seq Scan`, `Filter: seq
        // = ANY ($1)`) and stays so as the table grows: when a burst of results outran the
        // relay (1M items drained at 7,000 a second), each delete of 256 rows took 1.3-2.1 s
        // and the relay fell further behind with every round.
        sqlx::query!("DELETE FROM retry.outbox WHERE seq = ANY($1)", &stored)
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        metrics::counter!("haven_retry_events_published_total").increment(stored.len() as u64);
        metrics::counter!("haven_retry_dead_letters_total").increment(dead_letters);
        match problem {
            Some(reason) => Err(format!(
                "{} of {taken} events not stored yet: {reason}",
                taken - stored.len()
            )),
            None => Ok(taken),
        }
    }
}
