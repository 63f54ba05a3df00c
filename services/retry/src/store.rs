//! Every SQL statement of the retry queue. Batched where throughput matters (enqueue,
//! claim, results: one statement over `unnest` arrays), row by row for the operator API.
//! Static statements are sqlx's query macros, checked at compile time against the
//! migrations (the offline data in `.sqlx/`); only [`Store::list`] builds its SQL at run time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::backoff::BackoffPolicy;
use crate::events;
use crate::machine::{Decision, Event, ItemState, transition};
use crate::model::{
    AttemptOutcome, AttemptRow, Counts, ItemRow, Status, item_columns, query_items,
};

/// The advisory lock claims take when the number of leases is capped.
const CLAIM_LOCK: i64 = 0x6861_7665_6e5f_6366;
/// Advisory lock held by the replica folding the counts' deltas.
const FOLD_LOCK: i64 = 0x6861_7665_6e5f_6366 + 1;
/// Advisory lock held by the replica publishing the outbox's events.
pub(crate) const RELAY_LOCK: i64 = 0x6861_7665_6e5f_6366 + 2;

/// The channel a dispatcher LISTENs on to learn that something fell due.
pub const NOTIFY_CHANNEL: &str = "haven_retry_due";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(sqlx::Error),
    /// A row holds what this version cannot read, e.g. a status a newer version wrote
    /// ([`haven_db::UnknownValue`]): a fault to report, not an outage to wait out.
    #[error("unreadable row: {0}")]
    Unreadable(sqlx::Error),
    #[error("retry item {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Precondition(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::ColumnDecode { .. }) {
            StoreError::Unreadable(e)
        } else {
            StoreError::Db(e)
        }
    }
}

/// Whose items a call may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Tenant(Uuid),
    /// Platform admins only.
    All,
}

impl Scope {
    fn tenant(self) -> Option<Uuid> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::All => None,
        }
    }
}

/// A validated item to insert.
#[derive(Clone, Debug)]
pub struct NewItem {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Option<String>,
    pub operation_type: String,
    pub payload: String,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub first_run: FirstRun,
    pub reference_id: Option<String>,
    pub reference_table: Option<String>,
    pub idempotency_key: Option<String>,
    pub source_msg_id: Option<String>,
}

/// When a new item is first due. Delays are added to the database's clock, the one every
/// other due time is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstRun {
    Now,
    After(Duration),
    At(DateTime<Utc>),
}

/// How an attempt ended, as reported or as found at lease expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Permanent,
    LeaseExpired,
}

impl From<Outcome> for AttemptOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Succeeded => AttemptOutcome::Succeeded,
            Outcome::Failed => AttemptOutcome::Failed,
            Outcome::Permanent => AttemptOutcome::Permanent,
            Outcome::LeaseExpired => AttemptOutcome::LeaseExpired,
        }
    }
}

/// One attempt's result, to apply.
#[derive(Clone, Debug)]
pub struct ResultIn {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub attempt: i32,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub retry_after: Duration,
}

impl ResultIn {
    /// The event it is for the state machine.
    fn event(&self) -> Event {
        let attempt = self.attempt;
        match self.outcome {
            Outcome::Succeeded => Event::Succeeded { attempt },
            Outcome::Failed => Event::Failed {
                attempt,
                retry_after: self.retry_after,
            },
            Outcome::Permanent => Event::Permanent { attempt },
            Outcome::LeaseExpired => Event::LeaseExpired { attempt },
        }
    }
}

/// An operator's request about one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    RetryNow,
    Cancel,
}

impl Command {
    fn event(self) -> Event {
        match self {
            Command::RetryNow => Event::RetryNow,
            Command::Cancel => Event::Cancel,
        }
    }

    fn refusal(self, id: Uuid, status: Status) -> StoreError {
        StoreError::Precondition(match self {
            Command::RetryNow => {
                format!("item {id} is {status}: only failed or pending items can be retried")
            }
            Command::Cancel => format!("item {id} is {status}: it cannot be cancelled"),
        })
    }
}

/// Items one claim took.
pub struct Claim {
    pub items: Vec<ItemRow>,
    /// This process's clock just after the claim's transaction began, so no earlier than its
    /// `now()` (each item's `claimed_at`): a due time reckoned from here is never early.
    pub begun: tokio::time::Instant,
}

/// What became of a result.
#[derive(Clone, Debug)]
pub enum Applied {
    /// The item moved on; `item` is its new state.
    Transition(Box<ItemRow>),
    /// The item had already taken this very result (a redelivery): nothing to do, its
    /// lifecycle event went to the outbox with the first.
    Replayed,
    /// For an attempt that is no longer current (or another tenant's item): ignored.
    Stale,
}

/// One page of items.
#[derive(Clone, Debug)]
pub struct Page {
    pub items: Vec<ItemRow>,
    pub next: Option<(DateTime<Utc>, Uuid)>,
    pub total: i64,
    pub counts: Counts,
}

/// Per operation type figures.
#[derive(Clone, Debug)]
pub struct TypeStats {
    pub operation_type: String,
    pub counts: Counts,
    pub total_attempts: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
    pub lease: Duration,
    pub backoff: BackoffPolicy,
    /// Poked after a commit that wrote lifecycle events to the outbox, so the relay
    /// publishes them at once.
    pub outbox: Arc<Notify>,
}

impl Store {
    /// Inserts `items` in one statement. Returns, per input, the stored item and whether it
    /// is new; a duplicate (by source message id, or by idempotency key among live items)
    /// returns the existing one. `None` when neither insert nor duplicate could be found
    /// (the duplicate finished in between): the caller retries.
    pub async fn enqueue(
        &self,
        items: &[NewItem],
    ) -> Result<Vec<Option<(ItemRow, bool)>>, StoreError> {
        let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let tenants: Vec<Uuid> = items.iter().map(|i| i.tenant_id).collect();
        let users: Vec<Option<String>> = items.iter().map(|i| i.user_id.clone()).collect();
        let types: Vec<String> = items.iter().map(|i| i.operation_type.clone()).collect();
        let payloads: Vec<String> = items.iter().map(|i| i.payload.clone()).collect();
        let max_attempts: Vec<i32> = items.iter().map(|i| i.max_attempts).collect();
        let errors: Vec<Option<String>> = items.iter().map(|i| i.last_error.clone()).collect();
        let run_at: Vec<Option<DateTime<Utc>>> = items
            .iter()
            .map(|i| match i.first_run {
                FirstRun::At(at) => Some(at),
                FirstRun::Now | FirstRun::After(_) => None,
            })
            .collect();
        let delays: Vec<i64> = items
            .iter()
            .map(|i| match i.first_run {
                FirstRun::After(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                FirstRun::Now | FirstRun::At(_) => 0,
            })
            .collect();
        let reference_ids: Vec<Option<String>> =
            items.iter().map(|i| i.reference_id.clone()).collect();
        let reference_tables: Vec<Option<String>> =
            items.iter().map(|i| i.reference_table.clone()).collect();
        let keys: Vec<Option<String>> = items.iter().map(|i| i.idempotency_key.clone()).collect();
        let sources: Vec<Option<String>> = items.iter().map(|i| i.source_msg_id.clone()).collect();
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<ItemRow> = query_items!(
            "INSERT INTO retry.retry_items AS r (id, tenant_id, user_id, operation_type, payload, max_attempts,
                 last_error, next_retry_at, reference_id, reference_table, idempotency_key, source_msg_id)
             SELECT t.id, t.tenant_id, t.user_id, t.operation_type, t.payload::jsonb, t.max_attempts,
                 t.last_error, COALESCE(t.run_at, now() + t.delay_ms * interval '1 millisecond'),
                 t.reference_id, t.reference_table,
                 t.idempotency_key, t.source_msg_id
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                         $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[])
                  AS t(id, tenant_id, user_id, operation_type, payload, max_attempts, last_error, run_at,
                       reference_id, reference_table, idempotency_key, source_msg_id, delay_ms)
             ON CONFLICT DO NOTHING
             RETURNING ",
            "",
            &ids,
            &tenants,
            &users as &[Option<String>],
            &types,
            &payloads,
            &max_attempts,
            &errors as &[Option<String>],
            &run_at as &[Option<DateTime<Utc>>],
            &reference_ids as &[Option<String>],
            &reference_tables as &[Option<String>],
            &keys as &[Option<String>],
            &sources as &[Option<String>],
            &delays,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut by_id: HashMap<Uuid, ItemRow> = inserted.into_iter().map(|r| (r.id, r)).collect();
        let created_any = !by_id.is_empty();

        let missing: Vec<&NewItem> = items
            .iter()
            .filter(|i| !by_id.contains_key(&i.id))
            .collect();
        let mut existing: Vec<ItemRow> = Vec::new();
        if !missing.is_empty() {
            let source_tenants: Vec<Uuid> = missing
                .iter()
                .filter(|i| i.source_msg_id.is_some())
                .map(|i| i.tenant_id)
                .collect();
            let sources: Vec<String> = missing
                .iter()
                .filter_map(|i| i.source_msg_id.clone())
                .collect();
            let key_tenants: Vec<Uuid> = missing
                .iter()
                .filter(|i| i.idempotency_key.is_some())
                .map(|i| i.tenant_id)
                .collect();
            let keys: Vec<String> = missing
                .iter()
                .filter_map(|i| i.idempotency_key.clone())
                .collect();
            existing = query_items!(
                "SELECT ",
                " FROM retry.retry_items r
                 WHERE r.id IN (
                     -- Each half probes its own partial unique index.
                     SELECT s.id FROM retry.retry_items s
                     JOIN unnest($1::uuid[], $2::text[]) AS u(tenant_id, msg_id)
                       ON s.tenant_id = u.tenant_id AND s.source_msg_id = u.msg_id
                     WHERE s.source_msg_id IS NOT NULL
                     UNION ALL
                     SELECT k.id FROM retry.retry_items k
                     JOIN unnest($3::uuid[], $4::text[]) AS u(tenant_id, idempotency_key)
                       ON k.tenant_id = u.tenant_id AND k.idempotency_key = u.idempotency_key
                     WHERE k.idempotency_key IS NOT NULL AND k.status IN ('pending', 'processing'))",
                &source_tenants,
                &sources,
                &key_tenants,
                &keys,
            )
            .fetch_all(&mut *tx)
            .await?;
        }
        if created_any {
            notify(&mut tx).await?;
        }
        tx.commit().await?;

        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(row) = by_id.remove(&item.id) {
                out.push(Some((row, true)));
                continue;
            }
            let dup = existing.iter().find(|e| {
                (item.source_msg_id.is_some()
                    && e.tenant_id == item.tenant_id
                    && e.source_msg_id == item.source_msg_id)
                    || (item.idempotency_key.is_some()
                        && e.tenant_id == item.tenant_id
                        && e.idempotency_key == item.idempotency_key)
            });
            out.push(dup.map(|d| (d.clone(), false)));
        }
        Ok(out)
    }

    /// Claims up to `limit` due items for `worker`: attempts + 1, a lease, and a history row.
    /// `FOR UPDATE SKIP LOCKED` lets any number of replicas claim side by side.
    ///
    /// At most `max_leases` items are leased at once across replicas (0: no cap): claims then
    /// take a transaction-scoped advisory lock and count the leases inside it, so two
    /// replicas claiming at once cannot both fill the same room.
    ///
    /// The plan must not depend on statistics, which may have been taken while the queue was
    /// empty (with them, a join walked every pending row against the candidates: 1.4 s a
    /// claim). So the candidates are locked by primary key alone and their status checked on
    /// the locked row, and `turn` counts in ROWS mode: in the default RANGE mode PostgreSQL 15
    /// reads every peer of the current row, every due item of a bulk enqueue sharing one time.
    ///
    /// Items falling due within `ahead` are claimed too (their lease runs from their due
    /// time); the caller publishes each when it falls due, which [`Claim::begun`] lets it
    /// reckon by its own clock.
    pub async fn claim(
        &self,
        worker: &str,
        limit: i64,
        max_leases: i64,
        per_tenant_leases: i64,
        ahead: Duration,
    ) -> Result<Claim, StoreError> {
        // A claim's commit does not wait for the disk. A claim lost to a crash of PostgreSQL
        // only makes its items due again, and their next claim repeats the same attempt
        // number, so the bus drops the repeated dispatch (`id:attempt`); a result's commit,
        // which waits, makes the claims before it durable too. So a slow disk (a vacuum's
        // writes) does not hold back dispatching.
        //
        // BEGIN, that setting and the cap's lock go in one simple query: one round trip
        // instead of three. Alone on the machine each took 0.1-0.2 ms of a small claim's
        // 1.5-2 ms; under load every round trip waits for the backend to be scheduled.
        let begin = if max_leases > 0 {
            format!(
                "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock({CLAIM_LOCK})"
            )
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off".to_owned()
        };
        let mut tx = self.pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;
        // The transaction's `now()` (each item's `claimed_at`) was taken before this.
        let begun = tokio::time::Instant::now();
        // Tenants take turns: `tenants` lists every tenant with pending items (one index probe
        // each), `candidates` takes each one's due items oldest first, numbered, and keeps the
        // first `limit` by turn, so every tenant's first due item comes before any tenant's
        // second. A tenant already holding `per_tenant_leases` leases (0: no cap) gets none.
        // Candidates are read unlocked and then locked with SKIP LOCKED, so a replica claiming
        // at the same time takes the others.
        //
        // Leases held (`held`, the view `leases_held`) come from the maintained counts,
        // folded and not yet folded, which in one snapshot are exact; the claims before this
        // one committed before it took the lock. Counting the processing rows instead read every entry of the lease
        // index, dead ones included: 15,000 entries and 8 of a claim's 12 ms in a backlog.
        let claimed = query_items!(
            "WITH RECURSIVE held AS (
                 SELECT tenant_id, n FROM retry.leases_held
             ), room AS (
                 SELECT CASE WHEN $5::bigint = 0 THEN $2::bigint
                        ELSE GREATEST(0, LEAST($2::bigint, ($5::bigint - (SELECT coalesce(sum(n), 0) FROM held))::bigint)) END AS n
             ), tenants AS (
                 (SELECT tenant_id FROM retry.retry_items WHERE status = 'pending'
                  ORDER BY tenant_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.tenant_id FROM retry.retry_items r
                         WHERE r.status = 'pending' AND r.tenant_id > t.tenant_id
                         ORDER BY r.tenant_id LIMIT 1)
                 FROM tenants t WHERE t.tenant_id IS NOT NULL
             ), candidates AS (
                 SELECT c.id FROM tenants t CROSS JOIN LATERAL (
                     SELECT r.id, r.next_retry_at, row_number() OVER (ORDER BY r.next_retry_at ROWS UNBOUNDED PRECEDING) AS turn
                     FROM retry.retry_items r
                     WHERE r.tenant_id = t.tenant_id AND r.status = 'pending'
                       AND r.next_retry_at <= now() + $6::bigint * interval '1 millisecond'
                     ORDER BY r.next_retry_at
                     LIMIT CASE WHEN $4::bigint = 0 THEN $2::bigint ELSE GREATEST(0, LEAST($2::bigint, ($4::bigint - coalesce(
                         (SELECT h.n FROM held h WHERE h.tenant_id = t.tenant_id), 0))::bigint)) END
                 ) c
                 WHERE t.tenant_id IS NOT NULL
                 ORDER BY c.turn, c.next_retry_at
                 LIMIT (SELECT n FROM room)
             ), due AS (
                 -- The newest version of each row, locked: another replica may have claimed
                 -- it since this statement's snapshot, so its status is checked below.
                 SELECT r.id, r.status FROM retry.retry_items r
                 WHERE r.id = ANY(ARRAY(SELECT id FROM candidates))
                 FOR UPDATE OF r SKIP LOCKED
             ), claimed AS (
                 UPDATE retry.retry_items r
                 SET status = 'processing', attempts = r.attempts + 1, worker_id = $1, claimed_at = now(),
                     lease_expires_at = GREATEST(now(), r.next_retry_at) + $3::bigint * interval '1 millisecond',
                     updated_at = now()
                 FROM due WHERE r.id = due.id AND due.status = 'pending'
                 RETURNING ",
            // The attempt's row is written once, when it ends; until then the item itself
            // (`claimed_at`, `worker_id`) is the running attempt.
            "
             )
             SELECT * FROM claimed",
            worker,
            limit,
            i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX),
            per_tenant_leases,
            max_leases,
            i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Claim {
            items: claimed,
            begun,
        })
    }

    /// How many items `tenant` has pending, counted up to `cap` (so the count costs at most
    /// `cap` index entries).
    pub async fn pending_of(&self, tenant: Uuid, cap: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM (SELECT 1 FROM retry.retry_items
                 WHERE tenant_id = $1 AND status = 'pending' LIMIT $2) pending"#,
            tenant,
            cap
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Gives back claims whose dispatch could not be published: they are due again at once,
    /// and the attempt they never made is forgotten (a running attempt has no row).
    pub async fn unclaim(&self, claims: &[(Uuid, i32)]) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.1).collect();
        sqlx::query!(
            "UPDATE retry.retry_items r SET status = 'pending', attempts = r.attempts - 1, worker_id = NULL,
                 claimed_at = NULL, lease_expires_at = NULL, next_retry_at = now(), updated_at = now()
             FROM unnest($1::uuid[], $2::int[]) AS u(id, attempt)
             WHERE r.id = u.id AND r.attempts = u.attempt AND r.status = 'processing'",
            &ids,
            &attempts,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies attempt results in one transaction: [`transition`] decides for each, and the
    /// decisions become one UPDATE per table. The rows are locked (`FOR UPDATE`) before
    /// deciding, so no other result, rescue or operator call can change an item between the
    /// decision and its UPDATE. A result for an attempt that is no longer current is ignored.
    pub async fn apply_results(&self, results: &[ResultIn]) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let applied = self.apply_in(&mut tx, results).await?;
        tx.commit().await?;
        self.published(&applied);
        Ok(applied)
    }

    /// Pokes the relay when `applied` wrote lifecycle events.
    fn published(&self, applied: &[Applied]) {
        if applied.iter().any(|a| matches!(a, Applied::Transition(_))) {
            self.outbox.notify_one();
        }
    }

    /// [`Store::apply_results`] inside `tx`; every transition's lifecycle event is written
    /// to the outbox in it.
    async fn apply_in(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        results: &[ResultIn],
    ) -> Result<Vec<Applied>, StoreError> {
        let mut ids: Vec<Uuid> = results.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        // Rows are locked in id order, so concurrent batches cannot deadlock.
        let current = sqlx::query!(
            r#"SELECT id, tenant_id, operation_type, attempts, max_attempts,
                   status AS "status: Status", claimed_at, worker_id
               FROM retry.retry_items WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
            &ids,
        )
        .fetch_all(&mut **tx)
        .await?;
        struct Current {
            tenant_id: Uuid,
            operation_type: String,
            state: ItemState,
            /// The running attempt: when it was claimed, and by whom.
            claimed_at: Option<DateTime<Utc>>,
            worker_id: Option<String>,
        }
        let mut rows: HashMap<Uuid, Current> = current
            .into_iter()
            .map(|row| {
                (
                    row.id,
                    Current {
                        tenant_id: row.tenant_id,
                        operation_type: row.operation_type,
                        state: ItemState {
                            status: row.status,
                            attempts: row.attempts,
                            max_attempts: row.max_attempts,
                        },
                        claimed_at: row.claimed_at,
                        worker_id: row.worker_id,
                    },
                )
            })
            .collect();

        let mut rng = SmallRng::from_rng(&mut rand::rng());
        // Per input: the index into the update arrays, or why it was not applied.
        enum Plan {
            Update,
            Replay,
            Stale,
        }
        let mut plans = Vec::with_capacity(results.len());
        let (
            mut u_id,
            mut u_status,
            mut u_delay,
            mut u_error,
            mut u_outcome,
            mut u_attempt,
            mut u_duration,
            mut u_started,
            mut u_worker,
        ) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for r in results {
            // Another tenant's item is as good as none.
            let Some(cur) = rows.get_mut(&r.id).filter(|c| c.tenant_id == r.tenant_id) else {
                plans.push(Plan::Stale);
                continue;
            };
            let decision = transition(&cur.state, r.event());
            let (status, retry_after) = match decision {
                Decision::Resolve => (Status::Resolved, Duration::ZERO),
                Decision::Reschedule { retry_after } => (Status::Pending, retry_after),
                Decision::Fail(_) => (Status::Failed, Duration::ZERO),
                Decision::Replay => {
                    plans.push(Plan::Replay);
                    continue;
                }
                // An operator's decisions never follow a result.
                Decision::Ignore
                | Decision::Requeue { .. }
                | Decision::Cancel
                | Decision::Unchanged
                | Decision::Refuse => {
                    plans.push(Plan::Stale);
                    continue;
                }
            };
            // Only a pending item waits; the delay is unused otherwise.
            let attempts = u32::try_from(cur.state.attempts).unwrap_or(1);
            let delay =
                self.backoff
                    .for_type(&cur.operation_type)
                    .delay(attempts, retry_after, &mut rng);
            u_id.push(r.id);
            u_status.push(status);
            u_delay.push(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            u_error.push(r.error.clone());
            u_outcome.push(AttemptOutcome::from(r.outcome));
            u_attempt.push(r.attempt);
            u_duration.push(r.duration_ms);
            u_started.push(cur.claimed_at);
            u_worker.push(cur.worker_id.clone());
            // A second result for the same attempt in this batch meets the new state.
            cur.state.status = status;
            plans.push(Plan::Update);
        }

        let mut updated: HashMap<Uuid, ItemRow> = HashMap::new();
        if !u_id.is_empty() {
            let rows: Vec<ItemRow> = query_items!(
                "UPDATE retry.retry_items r SET
                     status = u.status,
                     next_retry_at = CASE WHEN u.status = 'pending' THEN now() + u.delay_ms * interval '1 millisecond'
                                          ELSE r.next_retry_at END,
                     last_error = CASE WHEN u.outcome = 'succeeded' THEN r.last_error ELSE u.error END,
                     worker_id = NULL, lease_expires_at = NULL,
                     resolved_at = CASE WHEN u.status = 'resolved' THEN now() ELSE r.resolved_at END,
                     updated_at = now()
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[])
                      AS u(id, status, delay_ms, error, outcome)
                 WHERE r.id = u.id
                 RETURNING ",
                "",
                &u_id,
                &u_status as &[Status],
                &u_delay,
                &u_error as &[Option<String>],
                &u_outcome as &[AttemptOutcome],
            )
            .fetch_all(&mut **tx)
            .await?;
            updated = rows.into_iter().map(|r| (r.id, r)).collect();
            // The attempt's one row, started when the item was claimed. A row already there
            // was written at the claim by an earlier version of this service.
            sqlx::query!(
                "INSERT INTO retry.retry_attempts AS a
                     (item_id, attempt, started_at, worker_id, finished_at, outcome, error, duration_ms)
                 SELECT u.id, u.attempt, coalesce(u.started_at, now()), u.worker_id, now(), u.outcome, u.error,
                        CASE WHEN u.outcome = 'lease_expired'
                             THEN (extract(epoch FROM now() - coalesce(u.started_at, now())) * 1000)::bigint
                             ELSE u.duration_ms END
                 FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                      AS u(id, attempt, started_at, worker_id, outcome, error, duration_ms)
                 ON CONFLICT (item_id, attempt) DO UPDATE SET
                     finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error,
                     duration_ms = CASE WHEN excluded.outcome = 'lease_expired'
                                        THEN (extract(epoch FROM now() - a.started_at) * 1000)::bigint
                                        ELSE excluded.duration_ms END",
                &u_id,
                &u_attempt,
                &u_started as &[Option<DateTime<Utc>>],
                &u_worker as &[Option<String>],
                &u_outcome as &[AttemptOutcome],
                &u_error as &[Option<String>],
                &u_duration,
            )
            .execute(&mut **tx)
            .await?;
            if u_status.contains(&Status::Pending) {
                notify(tx).await?;
            }
        }
        let events: Vec<events::Event> = updated.values().filter_map(events::lifecycle).collect();
        if !events.is_empty() {
            let subjects: Vec<&str> = events.iter().map(|e| e.subject).collect();
            let msg_ids: Vec<String> = events.iter().map(|e| e.msg_id.clone()).collect();
            let payloads: Vec<Vec<u8>> = events.iter().map(|e| e.payload.clone()).collect();
            sqlx::query!(
                "INSERT INTO retry.outbox (subject, msg_id, payload)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
                &subjects as &[&str],
                &msg_ids,
                &payloads,
            )
            .execute(&mut **tx)
            .await?;
        }

        let mut seen_update: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
        Ok(results
            .iter()
            .zip(plans)
            .map(|(r, plan)| match plan {
                Plan::Update if seen_update.insert(r.id) => updated
                    .get(&r.id)
                    .cloned()
                    .map(|row| Applied::Transition(Box::new(row)))
                    .unwrap_or(Applied::Stale),
                Plan::Update => Applied::Stale,
                Plan::Replay => Applied::Replayed,
                Plan::Stale => Applied::Stale,
            })
            .collect())
    }

    /// Rescues items whose lease ran out with no result (the owner crashed): the attempt
    /// counts as failed with "lease expired" and the item is rescheduled (or fails).
    /// The rows stay locked until their results are applied, in one transaction, so
    /// replicas rescuing at the same time take different rows.
    pub async fn rescue_expired(&self, limit: i64) -> Result<Vec<ItemRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let expired = sqlx::query!(
            "SELECT id, tenant_id, attempts FROM retry.retry_items
             WHERE status = 'processing' AND lease_expires_at <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let results: Vec<ResultIn> = expired
            .into_iter()
            .map(|row| ResultIn {
                id: row.id,
                tenant_id: row.tenant_id,
                attempt: row.attempts,
                outcome: Outcome::LeaseExpired,
                error: Some("lease expired".into()),
                duration_ms: 0,
                retry_after: Duration::ZERO,
            })
            .collect();
        let applied = self.apply_in(&mut tx, &results).await?;
        tx.commit().await?;
        self.published(&applied);
        Ok(applied
            .into_iter()
            .filter_map(|a| match a {
                Applied::Transition(row) => Some(*row),
                Applied::Replayed | Applied::Stale => None,
            })
            .collect())
    }

    /// How long until the earliest pending item falls due, by the database's clock (the one
    /// `next_retry_at` was computed with); `None` when nothing is pending. Rounded up: a
    /// dispatcher woken a fraction of a millisecond early would find nothing to claim and
    /// take the item for one due but not claimable, waiting 20 ms more.
    ///
    /// Each tenant's first due item, tenants taken in turn as the claim does (two probes of
    /// the tenant-first pending index per tenant with pending items), rather than a `min()`
    /// the planner may answer by reading every pending entry. Planned at every call
    /// ([`fresh_plan`]).
    pub async fn next_due_in(&self) -> Result<Option<Duration>, StoreError> {
        let ms: Option<i64> = fresh_plan(
            "WITH RECURSIVE tenants AS (
                 (SELECT tenant_id FROM retry.retry_items WHERE status = 'pending'
                  ORDER BY tenant_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.tenant_id FROM retry.retry_items r
                         WHERE r.status = 'pending' AND r.tenant_id > t.tenant_id
                         ORDER BY r.tenant_id LIMIT 1)
                 FROM tenants t WHERE t.tenant_id IS NOT NULL
             )
             SELECT ceil(extract(epoch FROM min(first.next_retry_at) - now()) * 1000)::bigint
             FROM tenants t CROSS JOIN LATERAL (
                 SELECT r.next_retry_at FROM retry.retry_items r
                 WHERE r.tenant_id = t.tenant_id AND r.status = 'pending'
                 ORDER BY r.next_retry_at LIMIT 1
             ) first
             WHERE t.tenant_id IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ms.map(millis))
    }

    /// How long until the earliest lease runs out, by the database's clock; `None` when
    /// nothing is leased. Planned at every call ([`fresh_plan`]).
    pub async fn next_expiry_in(&self) -> Result<Option<Duration>, StoreError> {
        let ms: Option<i64> = fresh_plan(
            "SELECT (extract(epoch FROM min(lease_expires_at) - now()) * 1000)::bigint
             FROM retry.retry_items WHERE status = 'processing'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ms.map(millis))
    }

    /// Deletes up to `limit` resolved or cancelled items last changed more than `older_than`
    /// ago (by the database's clock), oldest first, with their attempt history (which no
    /// foreign key cascades: see migration 0009). Rows another replica is deleting are
    /// skipped. Returns how many were deleted.
    pub async fn prune(&self, older_than: Duration, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "WITH old AS (
                 SELECT id FROM retry.retry_items
                 WHERE status IN ('resolved', 'cancelled')
                   AND updated_at < now() - $1::bigint * interval '1 millisecond'
                 ORDER BY updated_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), history AS (
                 DELETE FROM retry.retry_attempts a USING old WHERE a.item_id = old.id
             )
             DELETE FROM retry.retry_items r USING old WHERE r.id = old.id",
            i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX),
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Whether at least `cap` items are leased, across all replicas, from the maintained
    /// counts (a few rows, where the processing rows are as many as the cap).
    pub async fn at_capacity(&self, cap: i64) -> Result<bool, StoreError> {
        let n = sqlx::query_scalar!(
            r#"SELECT coalesce(sum(n), 0)::bigint AS "n!" FROM retry.leases_held"#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n >= cap)
    }

    /// Newest first, `page_size` at a time, after `cursor`.
    pub async fn list(
        &self,
        scope: Scope,
        status: Option<Status>,
        operation_type: Option<&str>,
        page_size: i64,
        cursor: Option<(DateTime<Utc>, Uuid)>,
    ) -> Result<Page, StoreError> {
        fn filters(qb: &mut QueryBuilder<Postgres>, scope: Scope, op: Option<&str>) {
            qb.push(" WHERE true");
            if let Some(t) = scope.tenant() {
                qb.push(" AND r.tenant_id = ").push_bind(t);
            }
            if let Some(op) = op {
                qb.push(" AND r.operation_type = ").push_bind(op);
            }
        }
        // Stays dynamic: the WHERE clause holds only the filters given, so each combination is
        // planned on its own index instead of one generic plan for `$n IS NULL OR …`.
        //
        // A tenant's page over every status is the newest of each status's newest, each read
        // in order from `(tenant_id, status, created_at, id)`: the index on
        // `(tenant_id, created_at, id)` that served it took a write at every claim and result
        // (migration 0010). Across tenants no index serves the order, so one scan does.
        // One branch per status filter; `None`: no filter.
        let branches: Vec<Option<Status>> = match (status, scope) {
            (Some(s), Scope::Tenant(_) | Scope::All) => vec![Some(s)],
            (None, Scope::Tenant(_)) => Status::ALL.iter().copied().map(Some).collect(),
            (None, Scope::All) => vec![None],
        };
        let mut qb = QueryBuilder::new("SELECT * FROM (");
        for (i, branch) in branches.into_iter().enumerate() {
            if i > 0 {
                qb.push(" UNION ALL ");
            }
            qb.push(format!(
                "(SELECT {} FROM retry.retry_items r",
                item_columns()
            ));
            filters(&mut qb, scope, operation_type);
            if let Some(s) = branch {
                qb.push(" AND r.status = ").push_bind(s);
            }
            if let Some((at, id)) = cursor {
                qb.push(" AND (r.created_at, r.id) < (")
                    .push_bind(at)
                    .push(", ")
                    .push_bind(id)
                    .push(")");
            }
            qb.push(" ORDER BY r.created_at DESC, r.id DESC LIMIT ")
                .push_bind(page_size + 1)
                .push(")");
        }
        qb.push(") r ORDER BY r.created_at DESC, r.id DESC LIMIT ")
            .push_bind(page_size + 1);
        let mut items: Vec<ItemRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        let next = if items.len() as i64 > page_size {
            items.truncate(usize::try_from(page_size).unwrap_or(0));
            items.last().map(|i| (i.created_at, i.id))
        } else {
            None
        };

        // Dynamic for the same reason: the page's filters, without status and cursor.
        // From the maintained counts, folded and not yet folded: a few rows, not every item.
        let mut qb = QueryBuilder::new(
            "SELECT status, sum(n)::bigint AS n FROM (SELECT r.status, r.n FROM retry.item_counts r",
        );
        filters(&mut qb, scope, operation_type);
        qb.push(" UNION ALL SELECT r.status, r.n FROM retry.item_count_deltas r");
        filters(&mut qb, scope, operation_type);
        qb.push(") c GROUP BY status");
        let mut counts = Counts::default();
        for row in qb.build().fetch_all(&self.pool).await? {
            counts.add(row.try_get("status")?, row.try_get("n")?);
        }
        let total = status.map_or_else(|| counts.total(), |s| counts.of(s));
        Ok(Page {
            items,
            next,
            total,
            counts,
        })
    }

    /// One item with its attempt history.
    pub async fn get(
        &self,
        scope: Scope,
        id: Uuid,
    ) -> Result<(ItemRow, Vec<AttemptRow>), StoreError> {
        let item = self
            .find(scope, id)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let attempts = sqlx::query_as!(
            AttemptRow,
            r#"SELECT attempt, started_at, finished_at, duration_ms,
                   outcome AS "outcome: AttemptOutcome", error, worker_id
               FROM retry.retry_attempts WHERE item_id = $1 ORDER BY attempt"#,
            id,
        )
        .fetch_all(&self.pool)
        .await?;
        let attempts = with_running(&item, attempts);
        Ok((item, attempts))
    }

    async fn find(&self, scope: Scope, id: Uuid) -> Result<Option<ItemRow>, StoreError> {
        Ok(query_items!(
            "SELECT ",
            " FROM retry.retry_items r WHERE r.id = $1 AND ($2::uuid IS NULL OR r.tenant_id = $2)",
            id,
            scope.tenant(),
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A failed or pending item becomes pending and due now, claim cleared; an exhausted one
    /// gets one more attempt.
    pub async fn retry_now(&self, scope: Scope, id: Uuid) -> Result<ItemRow, StoreError> {
        self.command(scope, id, Command::RetryNow).await
    }

    /// The item becomes cancelled and is never dispatched again. Cancelling a cancelled item
    /// is a no-op; a resolved one cannot be cancelled.
    pub async fn cancel(&self, scope: Scope, id: Uuid) -> Result<ItemRow, StoreError> {
        self.command(scope, id, Command::Cancel).await
    }

    /// Reads the item `FOR UPDATE`, lets [`transition`] decide, and applies the decision in
    /// the same transaction, so a result or a claim cannot slip in between.
    async fn command(
        &self,
        scope: Scope,
        id: Uuid,
        command: Command,
    ) -> Result<ItemRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let item: ItemRow = query_items!(
            "SELECT ",
            " FROM retry.retry_items r
             WHERE r.id = $1 AND ($2::uuid IS NULL OR r.tenant_id = $2) FOR UPDATE",
            id,
            scope.tenant(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound(id))?;
        let row = match transition(&item.state(), command.event()) {
            Decision::Requeue { max_attempts } => {
                // A finished item frees its idempotency key; if a live item took it since,
                // this one cannot come back beside it (no retry of the call can change that).
                if let Some(key) = &item.idempotency_key {
                    let holder = sqlx::query_scalar!(
                        "SELECT id FROM retry.retry_items
                         WHERE tenant_id = $1 AND idempotency_key = $2 AND id <> $3
                           AND status IN ('pending', 'processing')",
                        item.tenant_id,
                        key,
                        id,
                    )
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(holder) = holder {
                        return Err(StoreError::Precondition(format!(
                            "idempotency_key: live item {holder} holds the key `{key}` now; retry or cancel that one instead"
                        )));
                    }
                }
                query_items!(
                    "WITH changed AS (
                         UPDATE retry.retry_items r SET status = 'pending', next_retry_at = now(), worker_id = NULL,
                             claimed_at = NULL, lease_expires_at = NULL, max_attempts = $2, updated_at = now()
                         WHERE r.id = $1
                         RETURNING ",
                    "
                     ), notified AS (SELECT pg_notify($3, '') FROM changed)
                     SELECT changed.* FROM changed, notified",
                    id,
                    max_attempts,
                    NOTIFY_CHANNEL,
                )
                .fetch_one(&mut *tx)
                .await?
            }
            Decision::Cancel => {
                if item.status == Status::Processing {
                    // Its running attempt ends here; a result reported later is stale. (A
                    // `running` row was written at the claim by an earlier version.)
                    let started = item.claimed_at.unwrap_or_else(Utc::now);
                    sqlx::query!(
                        "INSERT INTO retry.retry_attempts AS a
                             (item_id, attempt, started_at, worker_id, finished_at, outcome, duration_ms)
                         VALUES ($1, $2, $3::timestamptz, $4, now(), 'cancelled', (extract(epoch FROM now() - $3::timestamptz) * 1000)::bigint)
                         ON CONFLICT (item_id, attempt) DO UPDATE SET outcome = 'cancelled', finished_at = now(),
                             duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
                         WHERE a.outcome = 'running'",
                        id,
                        item.attempts,
                        started,
                        item.worker_id,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                query_items!(
                    "UPDATE retry.retry_items r SET status = 'cancelled', worker_id = NULL, lease_expires_at = NULL,
                         updated_at = now()
                     WHERE r.id = $1
                     RETURNING ",
                    "",
                    id,
                )
                .fetch_one(&mut *tx)
                .await?
            }
            Decision::Unchanged => item,
            // A result's decisions never follow an operator's request.
            Decision::Refuse
            | Decision::Resolve
            | Decision::Reschedule { .. }
            | Decision::Fail(_)
            | Decision::Replay
            | Decision::Ignore => return Err(command.refusal(id, item.status)),
        };
        tx.commit().await?;
        Ok(row)
    }

    /// Figures per operation type.
    pub async fn stats(&self, scope: Scope) -> Result<Vec<TypeStats>, StoreError> {
        // Counts, attempts and last errors from the maintained counts (folded and not yet
        // folded); the oldest pending item from the pending rows alone.
        let rows = sqlx::query!(
            r#"SELECT c.operation_type AS "operation_type!", c.status AS "status!: Status",
                    sum(c.n)::bigint AS "n!", sum(c.attempts)::bigint AS "attempts!",
                    (array_agg(c.last_error ORDER BY c.last_error_at DESC) FILTER (WHERE c.last_error IS NOT NULL))[1] AS last_error,
                    max(c.last_error_at) AS last_error_at
             FROM (SELECT operation_type, status, n, attempts, last_error, last_error_at
                   FROM retry.item_counts WHERE ($1::uuid IS NULL OR tenant_id = $1)
                   UNION ALL
                   SELECT operation_type, status, n, attempts, last_error, last_error_at
                   FROM retry.item_count_deltas WHERE ($1::uuid IS NULL OR tenant_id = $1)) c
             GROUP BY c.operation_type, c.status ORDER BY c.operation_type"#,
            scope.tenant(),
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest: HashMap<String, DateTime<Utc>> = sqlx::query!(
            r#"SELECT operation_type, min(created_at) AS "oldest!" FROM retry.retry_items
             WHERE ($1::uuid IS NULL OR tenant_id = $1) AND status = 'pending'
             GROUP BY operation_type"#,
            scope.tenant(),
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.operation_type, r.oldest))
        .collect();
        let mut out: Vec<(TypeStats, Option<DateTime<Utc>>)> = Vec::new();
        for row in rows {
            let op = row.operation_type;
            if out.last().is_none_or(|(s, _)| s.operation_type != op) {
                out.push((
                    TypeStats {
                        operation_type: op,
                        counts: Counts::default(),
                        total_attempts: 0,
                        oldest_pending: None,
                        last_error: None,
                    },
                    None,
                ));
            }
            let Some((stats, last_at)) = out.last_mut() else {
                continue;
            };
            stats.counts.add(row.status, row.n);
            stats.total_attempts += row.attempts;
            let error_at = row.last_error_at;
            if error_at.is_some() && error_at > *last_at {
                *last_at = error_at;
                stats.last_error = row.last_error;
            }
        }
        // A type whose items were all deleted keeps its count rows (at zero): not listed.
        Ok(out
            .into_iter()
            .map(|(mut s, _)| {
                s.oldest_pending = oldest.get(&s.operation_type).copied();
                s
            })
            .filter(|s| s.counts.total() > 0)
            .collect())
    }

    /// Moves the counts' deltas into the counts, when no other replica is doing it. Returns
    /// how many (tenant, type, status) rows changed.
    pub async fn fold_counts(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ours = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock($1) AS "ours!""#,
            FOLD_LOCK
        )
        .fetch_one(&mut *tx)
        .await?;
        if !ours {
            return Ok(0);
        }
        let changed = sqlx::query!(
            "WITH d AS (DELETE FROM retry.item_count_deltas RETURNING *)
             INSERT INTO retry.item_counts AS c
             SELECT tenant_id, operation_type, status, sum(n), sum(attempts),
                    (array_agg(last_error ORDER BY last_error_at DESC) FILTER (WHERE last_error IS NOT NULL))[1],
                    max(last_error_at)
             FROM d GROUP BY tenant_id, operation_type, status
             ON CONFLICT (tenant_id, operation_type, status) DO UPDATE SET
                 n = c.n + EXCLUDED.n,
                 attempts = c.attempts + EXCLUDED.attempts,
                 last_error = CASE WHEN c.last_error_at IS NULL OR EXCLUDED.last_error_at >= c.last_error_at
                                   THEN coalesce(EXCLUDED.last_error, c.last_error)
                                   ELSE c.last_error END,
                 last_error_at = greatest(c.last_error_at, EXCLUDED.last_error_at)"
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed.rows_affected())
    }
}

/// `attempts` of `item` with its running attempt, which has no row until it ends: while the
/// item is processing, its claim (`claimed_at`, `worker_id`) is that attempt.
fn with_running(item: &ItemRow, mut attempts: Vec<AttemptRow>) -> Vec<AttemptRow> {
    if item.status == Status::Processing && !attempts.iter().any(|a| a.attempt == item.attempts) {
        attempts.push(AttemptRow {
            attempt: item.attempts,
            started_at: item.claimed_at.unwrap_or(item.updated_at),
            finished_at: None,
            duration_ms: None,
            outcome: AttemptOutcome::Running,
            error: None,
            worker_id: item.worker_id.clone(),
        });
    }
    attempts
}

/// A query without parameters, planned at each call rather than once per connection.
///
/// A prepared statement without parameters keeps the plan of its first run until the table's
/// statistics change. The next due time's, first run while the queue was empty, kept a scan of
/// the whole table through a burst of 300,000 items: 94 ms a look, and 13 % of a core,
/// where the pending index answers in 2 ms. Planning each time costs a fraction of that.
fn fresh_plan(
    sql: &'static str,
) -> sqlx::query::QueryScalar<'static, Postgres, Option<i64>, sqlx::postgres::PgArguments> {
    sqlx::query_scalar(sql).persistent(false)
}

/// A wait in milliseconds as a duration; past moments are no wait.
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Wakes the dispatchers (`LISTEN` on [`NOTIFY_CHANNEL`]) when the transaction commits.
async fn notify(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query!("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
