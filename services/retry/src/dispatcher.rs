//! Claims due items and publishes them on `haven.retry.dispatch.<operation_type>`; rescues
//! items whose lease ran out, in a task of its own.
//!
//! The dispatcher sleeps until the earliest item falls due, and wakes at once when
//! PostgreSQL notifies that something new is due (enqueue, retry-now, a rescheduled failure),
//! so an item due now is dispatched within milliseconds, without polling. Due times are read
//! with the database's clock, the one that wrote them.
//!
//! It wakes a little before ([`Dispatcher::ahead`]) and claims what falls due by then, and
//! publishes each claimed item when it falls due: a claim takes a few milliseconds on a busy
//! database, which would otherwise be added to every scheduled item's lateness.
//!
//! A claim is given back only when its dispatch was certainly not stored. When the bus does
//! not answer in time the dispatch may still be stored (the client sends its buffer after a
//! reconnect), so the claim is kept and the same `id:attempt` is published again until the
//! bus answers or the lease ends; JetStream drops the repeat.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haven_bus::{Bus, Fate, Outgoing};
use haven_proto::events::v1::RetryDispatch;
use haven_proto::time::timestamp;
use haven_retry_client::dispatch_subject;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::ItemRow;
use crate::store::{NOTIFY_CHANNEL, Store};
use crate::window::Window;

/// The longest the dispatcher or the rescue sleeps without being woken: a safety net for a
/// missed notification (a row written by hand) or a clock jump.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// How long one round waits for the bus's acks of its whole batch.
const PUBLISH_WITHIN: Duration = Duration::from_secs(5);
/// How often dispatches with no answer yet are published again.
const RESEND_EVERY: Duration = Duration::from_secs(1);
/// Claimed batches whose dispatches may be publishing while the next claim runs.
const PUBLISHING_AHEAD: usize = 2;
/// Expired leases rescued per transaction.
const RESCUE_BATCH: i64 = 500;

pub struct Dispatcher {
    pub store: Store,
    pub bus: Bus,
    pub worker_id: String,
    pub batch: i64,
    /// How far ahead of their due time items are claimed.
    pub ahead: Duration,
    /// Most leases standing at once across replicas, adapted to the owners.
    pub window: Arc<Window>,
    /// Most leases one tenant may hold (0: no limit).
    pub max_in_flight_per_tenant: i64,
    /// Poked when work may be due: by NOTIFY, and by this process's result handling.
    pub wake: Arc<Notify>,
}

/// A claim whose dispatch the bus has not acknowledged yet.
struct Unconfirmed {
    item: ItemRow,
    /// After this (by this process's clock, a little before the lease) the rescue takes it.
    until: Instant,
}

impl Dispatcher {
    pub async fn run(self, token: CancellationToken) {
        spawn_listener(self.store.pool.clone(), self.wake.clone(), token.clone());
        let rescue = Rescue {
            store: self.store.clone(),
            wake: self.wake.clone(),
            window: self.window.clone(),
        };
        tokio::spawn(rescue.run(token.clone()));
        let mut publishing = Publishing::default();
        self.dispatch(&token, &mut publishing).await;
        // Publishes under way, and those waiting for their items' due times (at most `ahead`
        // away), finish (each within PUBLISH_WITHIN), so that a stop does not leave their
        // claims to the lease rescue.
        while publishing.now.join_next().await.is_some() {}
        while publishing.scheduled.join_next().await.is_some() {}
    }

    async fn dispatch(&self, token: &CancellationToken, publishing: &mut Publishing) {
        let mut connected = self.bus.connected();
        let mut unconfirmed = Vec::new();
        let mut next_resend = Instant::now();
        let mut failures = 0u32;
        let mut looked_again = false;
        while !token.is_cancelled() {
            // Claims made while NATS is away could not be sent: wait for it.
            if !*connected.borrow_and_update() {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = connected.changed() => {}
                    _ = tokio::time::sleep(MAX_SLEEP) => {}
                }
                continue;
            }
            if !unconfirmed.is_empty() && Instant::now() >= next_resend {
                unconfirmed = self.resend(unconfirmed).await;
                next_resend = Instant::now() + RESEND_EVERY;
            }
            match self
                .round(&mut unconfirmed, publishing, &mut looked_again)
                .await
            {
                Ok(Some(mut sleep)) => {
                    failures = 0;
                    if !unconfirmed.is_empty() {
                        sleep = sleep.min(next_resend.saturating_duration_since(Instant::now()));
                    }
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

    /// One round: claim, and publish in the background. `None` means "go again at once";
    /// `Some(d)` means nothing is due for `d`.
    ///
    /// The next claim runs while the bus stores the last one's dispatches (at most
    /// [`PUBLISHING_AHEAD`] batches), so neither the commit's flush nor the bus's
    /// acknowledgements leave the other idle.
    async fn round(
        &self,
        unconfirmed: &mut Vec<Unconfirmed>,
        publishing: &mut Publishing,
        looked_again: &mut bool,
    ) -> Result<Option<Duration>, String> {
        while let Some(finished) = publishing.scheduled.try_join_next() {
            settle(Some(finished), unconfirmed)?;
        }
        while publishing.now.len() >= PUBLISHING_AHEAD {
            settle(publishing.now.join_next().await, unconfirmed)?;
        }
        let max_in_flight = self.window.limit(Instant::now());
        let claim = self
            .store
            .claim(
                &self.worker_id,
                self.batch,
                max_in_flight,
                self.max_in_flight_per_tenant,
                self.ahead,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !claim.items.is_empty() {
            *looked_again = false;
            let until = Instant::now() + self.store.lease.mul_f64(0.9);
            let (due, later) = due_groups(claim.items, claim.begun, Utc::now());
            if !due.is_empty() {
                publishing.now.spawn(self.publish_at(vec![due], until));
            }
            if !later.is_empty() {
                publishing.scheduled.spawn(self.publish_at(later, until));
            }
            return Ok(None);
        }
        // Nothing to claim: what is being published settles first (a refused dispatch is
        // due again at once). Those waiting for their due time wake the dispatcher
        // themselves if the bus refuses them.
        while !publishing.now.is_empty() {
            settle(publishing.now.join_next().await, unconfirmed)?;
        }
        // At the in-flight cap nothing is claimable, whatever is due: owners are behind and
        // their results wake us. Asked first because it is a sum of the maintained counts,
        // while the next due time walks the pending index's dead entries (13.8 ms a look in
        // a drain of 100,000, against a claim's 14 ms).
        if max_in_flight > 0
            && self
                .store
                .at_capacity(max_in_flight)
                .await
                .map_err(|e| e.to_string())?
        {
            *looked_again = false;
            return Ok(Some(Duration::from_millis(100)));
        }
        let Some(due_in) = self.store.next_due_in().await.map_err(|e| e.to_string())? else {
            return Ok(Some(MAX_SLEEP));
        };
        if due_in > self.ahead {
            *looked_again = false;
            return Ok(Some((due_in - self.ahead).min(MAX_SLEEP)));
        }
        // Due now, though the claim took nothing: it may have fallen due while the claim
        // ran (the claim's `now()` is older than this look's). One more claim at once,
        // rather than the 20 ms wait below for an item that is not claimable.
        if !*looked_again {
            *looked_again = true;
            return Ok(None);
        }
        *looked_again = false;
        // Due but not claimable, below the cap: the tenant is at its own cap, or another
        // replica is claiming it.
        Ok(Some(Duration::from_millis(20)))
    }

    /// Publishes each group when it falls due; the groups' publishes overlap, so a slow
    /// acknowledgement does not hold back the next group.
    fn publish_at(
        &self,
        groups: Vec<DueGroup>,
        until: Instant,
    ) -> impl Future<Output = Published> + Send + 'static {
        let (bus, store, wake) = (self.bus.clone(), self.store.clone(), self.wake.clone());
        async move {
            let count = groups.iter().map(|g| g.items.len()).sum();
            let results = futures::future::join_all(groups.into_iter().map(|group| {
                let (bus, store, wake) = (&bus, &store, &wake);
                async move {
                    tokio::time::sleep_until(group.at).await;
                    publish(bus, store, wake, group.items).await
                }
            }))
            .await;
            let mut published = Published {
                count,
                stored: 0,
                unclear: Vec::new(),
                until,
            };
            for (stored, unclear) in results {
                published.stored += stored;
                published.unclear.extend(unclear);
            }
            published
        }
    }

    /// Publishes the dispatches still unanswered again, with the same message ids; returns
    /// those still unanswered. Past their lease they are left to the rescue.
    async fn resend(&self, unconfirmed: Vec<Unconfirmed>) -> Vec<Unconfirmed> {
        let now = Instant::now();
        let (live, late): (Vec<_>, Vec<_>) = unconfirmed.into_iter().partition(|u| u.until > now);
        if !late.is_empty() {
            tracing::warn!(
                count = late.len(),
                "dispatches never acknowledged before their lease ran out; the lease rescue takes them"
            );
        }
        let Some(until) = live.iter().map(|u| u.until).min() else {
            return Vec::new();
        };
        let count = live.len();
        let (stored, unclear) = publish(
            &self.bus,
            &self.store,
            &self.wake,
            live.into_iter()
                .map(|u| Due {
                    item: u.item,
                    at: now,
                })
                .collect(),
        )
        .await;
        if stored > 0 {
            tracing::info!(
                stored,
                of = count,
                "unanswered dispatches acknowledged on resend"
            );
        }
        unclear
            .into_iter()
            .map(|item| Unconfirmed { item, until })
            .collect()
    }
}

/// Claimed items that fall due together.
struct DueGroup {
    /// When the last of them falls due, by this process's clock.
    at: Instant,
    items: Vec<Due>,
}

/// A claimed item and when it falls due by this process's clock.
struct Due {
    item: ItemRow,
    at: Instant,
}

/// Items due within this of each other are published together: the timer's resolution.
const GROUP_WITHIN: Duration = Duration::from_millis(1);

/// Splits a claim into the items already due and groups of those falling due later, in due
/// order. Due times are the database's, reckoned from the claim's `now()` (`claimed_at`) to
/// `begun`, which is no earlier; `wall_now` stands in if `claimed_at` is missing.
fn due_groups(
    items: Vec<ItemRow>,
    begun: Instant,
    wall_now: chrono::DateTime<Utc>,
) -> (DueGroup, Vec<DueGroup>) {
    let mut items: Vec<Due> = items
        .into_iter()
        .map(|item| {
            let db_now = item.claimed_at.unwrap_or(wall_now);
            let at = match (item.next_retry_at - db_now).to_std() {
                Ok(wait) => begun + wait,
                // Already due: by how long, for the lag it is published with.
                Err(_) => (db_now - item.next_retry_at)
                    .to_std()
                    .ok()
                    .and_then(|late| begun.checked_sub(late))
                    .unwrap_or(begun),
            };
            Due { item, at }
        })
        .collect();
    items.sort_by_key(|d| d.at);
    let split = items.partition_point(|d| d.at <= begun);
    let later_items = items.split_off(split);
    let due = DueGroup { at: begun, items };
    let mut later: Vec<DueGroup> = Vec::new();
    for d in later_items {
        match later.last_mut() {
            Some(group) if d.at <= group.items[0].at + GROUP_WITHIN => {
                group.at = d.at;
                group.items.push(d);
            }
            _ => later.push(DueGroup {
                at: d.at,
                items: vec![d],
            }),
        }
    }
    (due, later)
}

impl DueGroup {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Claims being published: `now` those due at once (at most [`PUBLISHING_AHEAD`] batches,
/// which the dispatcher waits for), `scheduled` those waiting for their due time.
#[derive(Default)]
struct Publishing {
    now: JoinSet<Published>,
    scheduled: JoinSet<Published>,
}

/// Publishes claimed items. Those certainly not stored are given back at once, and the
/// dispatcher woken to take them again; returns how many were stored and the items whose
/// fate is unknown.
async fn publish(
    bus: &Bus,
    store: &Store,
    wake: &Notify,
    claimed: Vec<Due>,
) -> (usize, Vec<ItemRow>) {
    let now = Utc::now();
    let published_at = Instant::now();
    let (claimed, lags): (Vec<ItemRow>, Vec<Duration>) = claimed
        .into_iter()
        .map(|d| (d.item, published_at.saturating_duration_since(d.at)))
        .unzip();
    let messages = claimed
        .iter()
        .map(|item| {
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
            Outgoing {
                subject: dispatch_subject(&item.operation_type),
                payload: prost::Message::encode_to_vec(&dispatch).into(),
                msg_id: format!("{}:{}", item.id, item.attempts),
            }
        })
        .collect();
    let fates = bus.publish_all(messages, PUBLISH_WITHIN).await;
    let mut stored = 0;
    let mut refused = Vec::new();
    let mut unclear = Vec::new();
    let (mut refused_reason, mut unclear_reason) = (None, None);
    for ((item, fate), lag) in claimed.into_iter().zip(fates).zip(lags) {
        match fate {
            Fate::Stored => {
                stored += 1;
                metrics::histogram!("haven_retry_dispatch_lag_seconds").record(lag.as_secs_f64());
            }
            Fate::Refused(reason) => {
                refused_reason.get_or_insert((item.id, reason));
                refused.push((item.id, item.attempts));
            }
            Fate::Unknown(reason) => {
                unclear_reason.get_or_insert((item.id, reason));
                unclear.push(item);
            }
        }
    }
    // One line per round, naming the first item and its reason, not one per item.
    if let Some((first, reason)) = unclear_reason {
        tracing::warn!(count = unclear.len(), %first, %reason, "dispatches not acknowledged; claims kept, will publish them again");
    }
    if let Some((first, reason)) = refused_reason {
        tracing::warn!(count = refused.len(), %first, %reason, "dispatches refused by the bus; claims given back");
    }
    metrics::counter!("haven_retry_dispatched_total").increment(stored as u64);
    if !refused.is_empty() {
        // If even this fails, the lease expiry rescues them.
        match store.unclaim(&refused).await {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot give back refused claims; their leases will expire")
            }
        }
    }
    (stored, unclear)
}

/// A batch of claims whose dispatches were published.
struct Published {
    count: usize,
    stored: usize,
    unclear: Vec<ItemRow>,
    until: Instant,
}

/// Takes a finished publish: its unanswered claims join `unconfirmed`; a batch the bus took
/// none of is an error, so the dispatcher backs off rather than claim again at once.
fn settle(
    finished: Option<Result<Published, tokio::task::JoinError>>,
    unconfirmed: &mut Vec<Unconfirmed>,
) -> Result<(), String> {
    let Some(finished) = finished else {
        return Ok(());
    };
    let published = finished.map_err(|e| format!("publishing stopped: {e}"))?;
    let until = published.until;
    unconfirmed.extend(
        published
            .unclear
            .into_iter()
            .map(|item| Unconfirmed { item, until }),
    );
    if published.stored == 0 {
        return Err(format!(
            "none of {} dispatches acknowledged by the bus",
            published.count
        ));
    }
    Ok(())
}

/// Rescues items whose lease ran out, on its own so that a slow bus or a busy dispatcher
/// never holds it back. It sleeps until the earliest lease ends.
struct Rescue {
    store: Store,
    /// The dispatcher's: rescued items are due again.
    wake: Arc<Notify>,
    /// Expiries mean owners are behind: the window is cut.
    window: Arc<Window>,
}

impl Rescue {
    async fn run(self, token: CancellationToken) {
        let mut failures = 0u32;
        while !token.is_cancelled() {
            let wait = match self.round().await {
                Ok(wait) => {
                    failures = 0;
                    wait
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "lease rescue failed; will retry");
                    Duration::from_millis(200 * u64::from(failures.min(25)))
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Rescues what has expired; returns how long until the next lease may run out.
    async fn round(&self) -> Result<Duration, crate::store::StoreError> {
        loop {
            let rescued = self.store.rescue_expired(RESCUE_BATCH).await?;
            if rescued.is_empty() {
                break;
            }
            tracing::warn!(count = rescued.len(), "rescued items whose lease expired");
            metrics::counter!("haven_retry_lease_expired_total").increment(rescued.len() as u64);
            self.window.expired(rescued.len(), Instant::now());
            self.wake.notify_one();
            if (rescued.len() as i64) < RESCUE_BATCH {
                break;
            }
        }
        // A lease taken after this look ends at least one lease from now.
        let next = self
            .store
            .next_expiry_in()
            .await?
            .unwrap_or(self.store.lease);
        Ok(next.min(self.store.lease).min(MAX_SLEEP) + Duration::from_millis(5))
    }
}

/// LISTENs for "something is due" and pokes the dispatcher. After the connection was lost
/// (sqlx reconnects and LISTENs again by itself) it pokes too: a notification sent
/// meanwhile was missed.
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
                    n = listener.try_recv() => match n {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => {
                            tracing::warn!("LISTEN connection lost; listening again");
                            wake.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                            wake.notify_one();
                            break;
                        }
                    },
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::Status;
    use chrono::{DateTime, TimeDelta};
    use uuid::Uuid;

    /// An item claimed at `claimed_at`, due `due_in` ms after it (negative: overdue).
    fn claimed(claimed_at: DateTime<Utc>, due_in: i64) -> ItemRow {
        ItemRow {
            id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            user_id: None,
            operation_type: "test.op".into(),
            payload: "{}".into(),
            status: Status::Processing,
            attempts: 1,
            max_attempts: 5,
            last_error: None,
            next_retry_at: claimed_at + TimeDelta::milliseconds(due_in),
            worker_id: Some("w".into()),
            claimed_at: Some(claimed_at),
            lease_expires_at: None,
            reference_id: None,
            reference_table: None,
            idempotency_key: None,
            source_msg_id: None,
            created_at: claimed_at,
            updated_at: claimed_at,
            resolved_at: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn overdue_items_go_at_once_and_later_ones_at_their_due_time() {
        let db_now = Utc::now();
        let begun = Instant::now();
        let items = [15, -30, 0, 4, 4, 5, -1]
            .into_iter()
            .map(|due_in| claimed(db_now, due_in))
            .collect();
        let (due, later) = due_groups(items, begun, db_now);
        assert_eq!(due.at, begun);
        assert_eq!(due.items.len(), 3, "the overdue and the one due now");
        // The most overdue first; its lag counts from its due time.
        assert_eq!(due.items[0].at, begun - ms(30));
        let groups: Vec<(Duration, usize)> = later
            .iter()
            .map(|g| (g.at - begun, g.items.len()))
            .collect();
        // 4, 4 and 5 ms are one group, sent when its last falls due; 15 ms is its own.
        assert_eq!(groups, vec![(ms(5), 3), (ms(15), 1)]);
        for group in &later {
            assert!(group.items.iter().all(|d| d.at <= group.at), "never early");
        }
    }

    #[test]
    fn a_group_spans_at_most_the_timer_resolution() {
        let db_now = Utc::now();
        let begun = Instant::now();
        let items = (1..=10).map(|i| claimed(db_now, i)).collect();
        let (due, later) = due_groups(items, begun, db_now);
        assert!(due.is_empty());
        for group in &later {
            let first = group.items[0].at;
            assert!(group.at - first <= GROUP_WITHIN);
        }
        assert_eq!(later.iter().map(|g| g.items.len()).sum::<usize>(), 10);
    }

    #[test]
    fn without_the_claims_clock_the_service_clock_stands_in() {
        let db_now = Utc::now();
        let begun = Instant::now();
        let mut item = claimed(db_now, 50);
        item.claimed_at = None;
        let (due, later) = due_groups(vec![item], begun, db_now + TimeDelta::milliseconds(20));
        assert!(due.is_empty());
        assert_eq!(later[0].at, begun + ms(30));
    }
}
