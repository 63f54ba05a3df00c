//! Rows of the `retry` schema and their protobuf form.

use chrono::{DateTime, Utc};
use haven_proto::retry::v1 as pb;
use haven_proto::time::timestamp;
use uuid::Uuid;

use crate::machine::ItemState;

use haven_db::text_enum;

text_enum! {
    /// Where an item is in its life (`retry_items.status`).
    pub enum Status in "retry_items.status" {
        Pending = "pending",
        Processing = "processing",
        Resolved = "resolved",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// How one attempt went (`retry_attempts.outcome`): running until its result or its
    /// lease expiry is recorded.
    pub enum AttemptOutcome in "retry_attempts.outcome" {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Permanent = "permanent",
        LeaseExpired = "lease_expired",
        Cancelled = "cancelled",
    }
}

impl Status {
    pub fn from_proto(value: i32) -> Result<Option<Status>, String> {
        match pb::RetryStatus::try_from(value) {
            Ok(pb::RetryStatus::Unspecified) => Ok(None),
            Ok(pb::RetryStatus::Pending) => Ok(Some(Status::Pending)),
            Ok(pb::RetryStatus::Processing) => Ok(Some(Status::Processing)),
            Ok(pb::RetryStatus::Resolved) => Ok(Some(Status::Resolved)),
            Ok(pb::RetryStatus::Failed) => Ok(Some(Status::Failed)),
            Ok(pb::RetryStatus::Cancelled) => Ok(Some(Status::Cancelled)),
            Err(_) => Err(format!("status: unknown value {value}")),
        }
    }

    pub fn to_proto(self) -> pb::RetryStatus {
        match self {
            Status::Pending => pb::RetryStatus::Pending,
            Status::Processing => pb::RetryStatus::Processing,
            Status::Resolved => pb::RetryStatus::Resolved,
            Status::Failed => pb::RetryStatus::Failed,
            Status::Cancelled => pb::RetryStatus::Cancelled,
        }
    }
}

impl AttemptOutcome {
    pub fn to_proto(self) -> pb::AttemptOutcome {
        match self {
            AttemptOutcome::Running => pb::AttemptOutcome::Running,
            AttemptOutcome::Succeeded => pb::AttemptOutcome::Succeeded,
            AttemptOutcome::Failed => pb::AttemptOutcome::Failed,
            AttemptOutcome::Permanent => pb::AttemptOutcome::Permanent,
            AttemptOutcome::LeaseExpired => pb::AttemptOutcome::LeaseExpired,
            AttemptOutcome::Cancelled => pb::AttemptOutcome::Cancelled,
        }
    }
}

/// Calls the macro in brackets with the columns every item query returns, as one string
/// literal typed for sqlx's query macros (`!`/`?` nullability, the enum's type), so that
/// [`ItemRow`] is built without inference: the same text works where sqlx cannot see a
/// column's table (a CTE's `SELECT *`). The table is aliased `r`. This is the only spelling
/// of the list: the dynamic query reads it through [`item_columns`].
macro_rules! with_item_columns {
    ([$($then:tt)*]($($args:tt)*)) => {
        $($then)*!(
            r#"r.id AS "id!", r.tenant_id AS "tenant_id!", r.user_id AS "user_id?",
             r.operation_type AS "operation_type!", r.payload::text AS "payload!",
             r.status AS "status!: crate::model::Status", r.attempts AS "attempts!",
             r.max_attempts AS "max_attempts!", r.last_error AS "last_error?",
             r.next_retry_at AS "next_retry_at!", r.worker_id AS "worker_id?",
             r.claimed_at AS "claimed_at?", r.lease_expires_at AS "lease_expires_at?",
             r.reference_id AS "reference_id?", r.reference_table AS "reference_table?",
             r.idempotency_key AS "idempotency_key?", r.source_msg_id AS "source_msg_id?",
             r.created_at AS "created_at!", r.updated_at AS "updated_at!",
             r.resolved_at AS "resolved_at?""#,
            $($args)*
        )
    };
}

/// `sqlx::query_as!` for [`ItemRow`]s: `query_items!("SELECT ", " FROM retry.retry_items r
/// WHERE …", args…)` puts the item columns between the two literals, so each statement is
/// checked at compile time like any other.
macro_rules! query_items {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        $crate::model::with_item_columns!([$crate::model::query_items](@with $before, $after $(, $arg)*))
    };
    ($columns:literal, @with $before:literal, $after:literal $(, $arg:expr)*) => {
        sqlx::query_as!($crate::model::ItemRow, $before + $columns + $after $(, $arg)*)
    };
}

macro_rules! columns_literal {
    ($columns:literal,) => {
        $columns
    };
}

pub(crate) use {query_items, with_item_columns};

/// The item columns for SQL built at run time, where sqlx's overrides mean nothing: the
/// typed list with each `AS "name!: Type"` turned into `AS name`.
pub fn item_columns() -> &'static str {
    static PLAIN: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| plain_columns(with_item_columns!([columns_literal]())));
    &PLAIN
}

/// Strips sqlx's output overrides (`AS "id!"`, `AS "status!: Status"`) to plain aliases.
fn plain_columns(typed: &str) -> String {
    typed
        .split(',')
        .map(|column| {
            let column = column.trim();
            match column.split_once(" AS \"") {
                Some((expr, alias)) => {
                    let name = alias
                        .split([':', '!', '?', '"'])
                        .next()
                        .unwrap_or(alias)
                        .trim();
                    format!("{expr} AS {name}")
                }
                None => column.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of `retry.retry_items`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ItemRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Option<String>,
    pub operation_type: String,
    pub payload: String,
    pub status: Status,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub next_retry_at: DateTime<Utc>,
    pub worker_id: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub reference_id: Option<String>,
    pub reference_table: Option<String>,
    pub idempotency_key: Option<String>,
    /// The message id it arrived with over NATS, which recognises a redelivered enqueue.
    pub source_msg_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// One row of `retry.retry_attempts`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub worker_id: Option<String>,
}

impl ItemRow {
    /// What the state machine needs to know of it.
    pub fn state(&self) -> ItemState {
        ItemState {
            status: self.status,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
        }
    }

    pub fn to_proto(&self) -> pb::RetryItem {
        pb::RetryItem {
            id: self.id.to_string(),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.clone().unwrap_or_default(),
            operation_type: self.operation_type.clone(),
            payload_json: self.payload.clone(),
            status: self.status.to_proto() as i32,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            last_error: self.last_error.clone().unwrap_or_default(),
            next_retry_at: Some(timestamp(self.next_retry_at)),
            worker_id: self.worker_id.clone().unwrap_or_default(),
            claimed_at: self.claimed_at.map(timestamp),
            lease_expires_at: self.lease_expires_at.map(timestamp),
            reference_id: self.reference_id.clone().unwrap_or_default(),
            reference_table: self.reference_table.clone().unwrap_or_default(),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            resolved_at: self.resolved_at.map(timestamp),
            attempt_history: Vec::new(),
        }
    }
}

impl AttemptRow {
    pub fn to_proto(&self) -> pb::RetryAttempt {
        pb::RetryAttempt {
            attempt: self.attempt,
            started_at: Some(timestamp(self.started_at)),
            finished_at: self.finished_at.map(timestamp),
            duration_ms: self.duration_ms.unwrap_or(0),
            outcome: self.outcome.to_proto() as i32,
            error: self.error.clone().unwrap_or_default(),
            worker_id: self.worker_id.clone().unwrap_or_default(),
        }
    }
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub processing: i64,
    pub resolved: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl Counts {
    pub fn add(&mut self, status: Status, n: i64) {
        *self.of_mut(status) += n;
    }

    /// The count of one status.
    pub fn of(mut self, status: Status) -> i64 {
        *self.of_mut(status)
    }

    fn of_mut(&mut self, status: Status) -> &mut i64 {
        match status {
            Status::Pending => &mut self.pending,
            Status::Processing => &mut self.processing,
            Status::Resolved => &mut self.resolved,
            Status::Failed => &mut self.failed,
            Status::Cancelled => &mut self.cancelled,
        }
    }

    /// All statuses together.
    pub fn total(self) -> i64 {
        Status::ALL.iter().map(|s| self.of(*s)).sum()
    }

    pub fn to_proto(self) -> pb::StatusCounts {
        pb::StatusCounts {
            pending: self.pending,
            processing: self.processing,
            resolved: self.resolved,
            failed: self.failed,
            cancelled: self.cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings are the ones the migration's CHECK constraints and the SQL use.
    #[test]
    fn spellings_match_the_schema() {
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            statuses,
            ["pending", "processing", "resolved", "failed", "cancelled"]
        );
        let outcomes: Vec<&str> = AttemptOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "running",
                "succeeded",
                "failed",
                "permanent",
                "lease_expired",
                "cancelled"
            ]
        );
    }

    #[test]
    fn unknown_value_names_value_and_column() {
        let e = haven_db::UnknownValue {
            column: "retry_items.status",
            value: "paused".into(),
        };
        assert_eq!(
            e.to_string(),
            "unknown value `paused` in retry_items.status"
        );
    }

    /// The run-time list names the same columns as the typed one, in [`ItemRow`] order.
    #[test]
    fn plain_item_columns_drop_the_overrides() {
        assert_eq!(
            item_columns(),
            "r.id AS id, r.tenant_id AS tenant_id, r.user_id AS user_id, \
             r.operation_type AS operation_type, r.payload::text AS payload, r.status AS status, \
             r.attempts AS attempts, r.max_attempts AS max_attempts, r.last_error AS last_error, \
             r.next_retry_at AS next_retry_at, r.worker_id AS worker_id, r.claimed_at AS claimed_at, \
             r.lease_expires_at AS lease_expires_at, r.reference_id AS reference_id, \
             r.reference_table AS reference_table, r.idempotency_key AS idempotency_key, \
             r.source_msg_id AS source_msg_id, r.created_at AS created_at, \
             r.updated_at AS updated_at, r.resolved_at AS resolved_at"
        );
    }

    #[test]
    fn counts_add_up_by_status() {
        let mut c = Counts::default();
        for (n, s) in Status::ALL.iter().enumerate() {
            c.add(*s, n as i64 + 1);
        }
        for (n, s) in Status::ALL.iter().enumerate() {
            assert_eq!(c.of(*s), n as i64 + 1);
        }
        assert_eq!(c.total(), 15);
    }
}
