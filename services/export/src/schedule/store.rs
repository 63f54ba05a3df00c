//! Schedules in and out of `exports.scheduled_exports`, always by the caller's tenant.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::model::{Delivery, Frequency, RangeType, Schedule, ScheduleFormat, Settings};
use super::slots::catch_up;

type Result<T> = std::result::Result<T, sqlx::Error>;

haven_db::text_enum! {
    /// `scheduled_export_runs.status`.
    pub enum RunStatus in "scheduled_export_runs.status" {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
        Skipped = "skipped",
    }
}

struct Row {
    id: Uuid,
    tenant_id: Uuid,
    user_id: String,
    export_type: String,
    format: ScheduleFormat,
    field_selection: Vec<String>,
    date_range_type: RangeType,
    frequency: Frequency,
    weekday: Option<i16>,
    day_of_month: Option<i16>,
    time_of_day: NaiveTime,
    time_zone: String,
    enabled: bool,
    delivery_method: Delivery,
    delivery_email: Option<String>,
    last_run_at: Option<DateTime<Utc>>,
    next_run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Schedule {
    fn from(r: Row) -> Schedule {
        Schedule {
            id: r.id,
            tenant_id: r.tenant_id,
            user_id: r.user_id,
            settings: Settings {
                export_type: r.export_type,
                format: r.format,
                fields: r.field_selection,
                range: r.date_range_type,
                frequency: r.frequency,
                weekday: r.weekday,
                day_of_month: r.day_of_month,
                time_of_day: r.time_of_day,
                time_zone: r.time_zone,
                enabled: r.enabled,
                delivery: r.delivery_method,
                delivery_email: r.delivery_email,
            },
            last_run_at: r.last_run_at,
            next_run_at: r.next_run_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Every column, typed, for each query below (sqlx checks each one).
macro_rules! select_schedules {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            r#"SELECT id, tenant_id, user_id, export_type, format AS "format: ScheduleFormat",
                      field_selection, date_range_type AS "date_range_type: RangeType",
                      frequency AS "frequency: Frequency", weekday, day_of_month, time_of_day,
                      time_zone, enabled, delivery_method AS "delivery_method: Delivery",
                      delivery_email, last_run_at, next_run_at, created_at, updated_at
               FROM exports.scheduled_exports "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn insert(
    pool: &PgPool,
    tenant: Uuid,
    user: &str,
    s: &Settings,
    next_run_at: DateTime<Utc>,
) -> Result<Schedule> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO exports.scheduled_exports
             (id, tenant_id, user_id, export_type, format, field_selection, date_range_type,
              frequency, weekday, day_of_month, time_of_day, time_zone, enabled,
              delivery_method, delivery_email, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        id,
        tenant,
        user,
        s.export_type,
        s.format as ScheduleFormat,
        &s.fields,
        s.range as RangeType,
        s.frequency as Frequency,
        s.weekday,
        s.day_of_month,
        s.time_of_day,
        s.time_zone,
        s.enabled,
        s.delivery as Delivery,
        s.delivery_email,
        next_run_at,
    )
    .execute(pool)
    .await?;
    get(pool, tenant, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The tenant's schedule `id`; another tenant's is `None`, as an unknown one.
pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Option<Schedule>> {
    Ok(
        select_schedules!("WHERE tenant_id = $1 AND id = $2", tenant, id)
            .fetch_optional(pool)
            .await?
            .map(Schedule::from),
    )
}

/// A page of the tenant's schedules, oldest first, after the schedule `after`.
pub async fn list(
    pool: &PgPool,
    tenant: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Schedule>> {
    Ok(select_schedules!(
        "WHERE tenant_id = $1 AND ($2::uuid IS NULL OR (created_at, id) >
             (SELECT created_at, id FROM exports.scheduled_exports WHERE tenant_id = $1 AND id = $2))
         ORDER BY created_at, id LIMIT $3",
        tenant,
        after,
        limit
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Schedule::from)
    .collect())
}

pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    s: &Settings,
    next_run_at: DateTime<Utc>,
) -> Result<Option<Schedule>> {
    let updated = sqlx::query!(
        "UPDATE exports.scheduled_exports SET
             export_type = $3, format = $4, field_selection = $5, date_range_type = $6,
             frequency = $7, weekday = $8, day_of_month = $9, time_of_day = $10, time_zone = $11,
             enabled = $12, delivery_method = $13, delivery_email = $14, next_run_at = $15,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        tenant,
        id,
        s.export_type,
        s.format as ScheduleFormat,
        &s.fields,
        s.range as RangeType,
        s.frequency as Frequency,
        s.weekday,
        s.day_of_month,
        s.time_of_day,
        s.time_zone,
        s.enabled,
        s.delivery as Delivery,
        s.delivery_email,
        next_run_at,
    )
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    get(pool, tenant, id).await
}

/// Deletes the tenant's schedule (and its runs); `false` when there was none.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<bool> {
    Ok(sqlx::query!(
        "DELETE FROM exports.scheduled_exports WHERE tenant_id = $1 AND id = $2",
        tenant,
        id
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Older missed slots recorded per schedule at most (a schedule paused for years should not
/// write thousands of rows).
const MAX_SKIPPED: usize = 100;

/// One slot claimed for running.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run_id: Uuid,
    pub schedule: Schedule,
    pub slot: DateTime<Utc>,
    /// Not the slot that just came: the scheduler was away across it.
    pub late: bool,
    /// A run taken over after its file was stored: only the sending is left.
    pub stored: Option<Stored>,
}

/// A run's stored file.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object_key: String,
    pub export_id: Uuid,
    pub rows: i64,
}

/// `lease` as the seconds `make_interval` takes.
fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Claims every enabled schedule due at `now` (at most `limit`), in one transaction: the
/// latest due slot becomes a pending run leased to the caller for `lease`, older missed ones
/// are recorded as skipped, and next_run_at moves past `now`. Rows locked by another replica
/// are skipped, and the run's unique `(schedule_id, scheduled_for)` makes a slot run once
/// however claims interleave.
pub async fn claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>> {
    let mut tx = pool.begin().await?;
    let due: Vec<Schedule> = select_schedules!(
        "WHERE enabled AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(Schedule::from)
    .collect();
    let mut claimed = Vec::with_capacity(due.len());
    for schedule in due {
        let Ok(rule) = schedule.settings.rule() else {
            tracing::error!(schedule = %schedule.id, zone = %schedule.settings.time_zone, "a stored schedule has a time zone this build does not know; leaving it");
            continue;
        };
        let Some(plan) = catch_up(&rule, schedule.next_run_at, now, MAX_SKIPPED) else {
            continue;
        };
        for slot in &plan.skipped {
            sqlx::query!(
                "INSERT INTO exports.scheduled_export_runs (id, schedule_id, tenant_id, scheduled_for, status, late)
                 VALUES ($1, $2, $3, $4, 'skipped', true)
                 ON CONFLICT (schedule_id, scheduled_for) DO NOTHING",
                Uuid::now_v7(),
                schedule.id,
                schedule.tenant_id,
                slot
            )
            .execute(&mut *tx)
            .await?;
        }
        let run_id = sqlx::query_scalar!(
            "INSERT INTO exports.scheduled_export_runs
                 (id, schedule_id, tenant_id, scheduled_for, status, late, leased_until)
             VALUES ($1, $2, $3, $4, 'pending', $5, now() + make_interval(secs => $6))
             ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
             RETURNING id",
            Uuid::now_v7(),
            schedule.id,
            schedule.tenant_id,
            plan.run,
            plan.late,
            secs(lease)
        )
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE exports.scheduled_exports SET next_run_at = $2, last_run_at = $3 WHERE id = $1",
            schedule.id,
            plan.next,
            plan.run
        )
        .execute(&mut *tx)
        .await?;
        if let Some(run_id) = run_id {
            claimed.push(Claimed {
                run_id,
                schedule,
                slot: plan.run,
                late: plan.late,
                stored: None,
            });
        }
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Takes over (at most `limit`) pending runs whose lease lapsed — the replica running them
/// died, or could not hand a failed send to the retry queue — with a fresh `lease`. A run
/// whose file was stored only needs sending ([`Claimed::stored`]).
pub async fn reclaim_lapsed(pool: &PgPool, lease: Duration, limit: i64) -> Result<Vec<Claimed>> {
    let lapsed = sqlx::query!(
        r#"UPDATE exports.scheduled_export_runs r
           SET leased_until = now() + make_interval(secs => $1), updated_at = now()
           FROM (SELECT id FROM exports.scheduled_export_runs
                 WHERE status = 'pending' AND leased_until < now()
                 ORDER BY leased_until LIMIT $2 FOR UPDATE SKIP LOCKED) due
           WHERE r.id = due.id
           RETURNING r.id, r.schedule_id, r.scheduled_for, r.late, r.object_key, r.export_id,
                     (SELECT h.record_count FROM exports.export_history h WHERE h.id = r.export_id)
                         AS "rows?""#,
        secs(lease),
        limit
    )
    .fetch_all(pool)
    .await?;
    let mut claimed = Vec::with_capacity(lapsed.len());
    for run in lapsed {
        let Some(schedule) = select_schedules!("WHERE id = $1", run.schedule_id)
            .fetch_optional(pool)
            .await?
            .map(Schedule::from)
        else {
            continue; // deleted since; its runs went with it
        };
        tracing::warn!(run = %run.id, schedule = %schedule.id, slot = %run.scheduled_for, "a scheduled export's lease lapsed; taking it over");
        let stored = match (run.object_key, run.export_id) {
            (Some(object_key), Some(export_id)) => Some(Stored {
                object_key,
                export_id,
                rows: run.rows.unwrap_or(0),
            }),
            _ => None,
        };
        claimed.push(Claimed {
            run_id: run.id,
            schedule,
            slot: run.scheduled_for,
            late: run.late,
            stored,
        });
    }
    Ok(claimed)
}

/// Extends the lease of a run still pending; `false` when it is no longer leased.
pub async fn renew(pool: &PgPool, run: Uuid, lease: Duration) -> Result<bool> {
    Ok(sqlx::query!(
        "UPDATE exports.scheduled_export_runs SET leased_until = now() + make_interval(secs => $2)
         WHERE id = $1 AND status = 'pending' AND leased_until IS NOT NULL",
        run,
        secs(lease)
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Gives up the lease: the retry queue owns the run's sending now.
pub async fn release(pool: &PgPool, run: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE exports.scheduled_export_runs SET leased_until = NULL WHERE id = $1",
        run
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Keeps the run's stored file before it is sent, so a retried or taken-over send finds it.
pub async fn keep_file(pool: &PgPool, run: Uuid, object_key: &str, export_id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE exports.scheduled_export_runs SET object_key = $2, export_id = $3, updated_at = now()
         WHERE id = $1",
        run,
        object_key,
        export_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records how an attempt at a run ended; a run that is no longer pending holds no lease.
pub async fn finish_run(
    pool: &PgPool,
    run: Uuid,
    status: RunStatus,
    object_key: Option<&str>,
    export_id: Option<Uuid>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE exports.scheduled_export_runs
         SET status = $2, object_key = COALESCE($3, object_key), export_id = COALESCE($4, export_id),
             last_error = $5, attempts = attempts + 1, updated_at = now(),
             leased_until = CASE WHEN $2 = 'pending' THEN leased_until END
         WHERE id = $1",
        run,
        status as RunStatus,
        object_key,
        export_id,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A run as listed.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub schedule_id: Uuid,
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    pub late: bool,
    pub export_id: Option<Uuid>,
    pub object_key: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The tenant's schedule's runs, latest slot first.
pub async fn runs(pool: &PgPool, tenant: Uuid, schedule: Uuid, limit: i64) -> Result<Vec<RunRow>> {
    sqlx::query_as!(
        RunRow,
        r#"SELECT id, schedule_id, scheduled_for, status AS "status: RunStatus", late, export_id,
                  object_key, attempts, last_error, created_at, updated_at
           FROM exports.scheduled_export_runs
           WHERE tenant_id = $1 AND schedule_id = $2
           ORDER BY scheduled_for DESC
           LIMIT $3"#,
        tenant,
        schedule,
        limit
    )
    .fetch_all(pool)
    .await
}

/// A run to deliver again, with its schedule and the rows its export held.
pub async fn for_delivery(pool: &PgPool, run: Uuid) -> Result<Option<(RunRow, Schedule, i64)>> {
    let Some(row) = sqlx::query_as!(
        RunRow,
        r#"SELECT id, schedule_id, scheduled_for, status AS "status: RunStatus", late, export_id,
                  object_key, attempts, last_error, created_at, updated_at
           FROM exports.scheduled_export_runs WHERE id = $1"#,
        run
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let Some(schedule) = select_schedules!("WHERE id = $1", row.schedule_id)
        .fetch_optional(pool)
        .await?
        .map(Schedule::from)
    else {
        return Ok(None);
    };
    let rows = sqlx::query_scalar!(
        "SELECT record_count FROM exports.export_history WHERE id = $1",
        row.export_id
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(0);
    Ok(Some((row, schedule, rows)))
}
