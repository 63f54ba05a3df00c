//! Rows of the `retry` schema and their protobuf form.

use chrono::{DateTime, Utc};
use haven_proto::retry::v1 as pb;
use uuid::Uuid;

/// Where an item is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Processing,
    Resolved,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Processing,
        Status::Resolved,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Resolved => "resolved",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

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

/// The columns every item query returns, in [`ItemRow`] order, for a table aliased `r`.
pub const ITEM_COLUMNS: &str = "r.id, r.tenant_id, r.user_id, r.operation_type, r.payload::text AS payload, \
     r.status, r.attempts, r.max_attempts, r.last_error, r.next_retry_at, r.worker_id, r.claimed_at, \
     r.lease_expires_at, r.reference_id, r.reference_table, r.idempotency_key, r.created_at, \
     r.updated_at, r.resolved_at";

/// One row of `retry.retry_items`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ItemRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Option<String>,
    pub operation_type: String,
    pub payload: String,
    pub status: String,
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
    pub outcome: String,
    pub error: Option<String>,
    pub worker_id: Option<String>,
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl ItemRow {
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Failed)
    }

    pub fn to_proto(&self) -> pb::RetryItem {
        pb::RetryItem {
            id: self.id.to_string(),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.clone().unwrap_or_default(),
            operation_type: self.operation_type.clone(),
            payload_json: self.payload.clone(),
            status: self.status().to_proto() as i32,
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
        let outcome = match self.outcome.as_str() {
            "running" => pb::AttemptOutcome::Running,
            "succeeded" => pb::AttemptOutcome::Succeeded,
            "failed" => pb::AttemptOutcome::Failed,
            "permanent" => pb::AttemptOutcome::Permanent,
            "lease_expired" => pb::AttemptOutcome::LeaseExpired,
            _ => pb::AttemptOutcome::Unspecified,
        };
        pb::RetryAttempt {
            attempt: self.attempt,
            started_at: Some(timestamp(self.started_at)),
            finished_at: self.finished_at.map(timestamp),
            duration_ms: self.duration_ms.unwrap_or(0),
            outcome: outcome as i32,
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
    pub fn add(&mut self, status: &str, n: i64) {
        match Status::parse(status) {
            Some(Status::Pending) => self.pending += n,
            Some(Status::Processing) => self.processing += n,
            Some(Status::Resolved) => self.resolved += n,
            Some(Status::Failed) => self.failed += n,
            Some(Status::Cancelled) => self.cancelled += n,
            None => {}
        }
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
