//! The record of every export, written when it ends however it ends, its event, and the
//! queries that read it back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use haven_bus::Bus;
use haven_proto::common::v1::DateRange;
use haven_proto::events::v1::ExportEvent;
use haven_proto::export::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ExportError;

pub const COMPLETED_SUBJECT: &str = "haven.exports.events.completed";
pub const FAILED_SUBJECT: &str = "haven.exports.events.failed";

/// What the history keeps of an export besides how it ended.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: String,
    /// A catalogue key, or a report's key (`billing_usage`, `brand_analytics`).
    pub export_type: &'static str,
    pub format: StoredFormat,
    pub fields: Vec<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Rows at most; 0 for a report, which has no limit to cut it.
    pub limit: u64,
}

pub enum Ending {
    Completed {
        rows: u64,
        bytes: u64,
        truncated: bool,
    },
    Cancelled {
        rows: u64,
        bytes: u64,
    },
    Failed {
        rows: u64,
        bytes: u64,
        error: String,
    },
}

use haven_proto::time::timestamp as ts;

haven_db::text_enum! {
    /// How an export ended, as `export_history.status` stores it.
    pub enum Status in "export_history.status" {
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl Status {
    pub fn to_proto(self) -> pb::ExportStatus {
        match self {
            Status::Completed => pb::ExportStatus::Completed,
            Status::Failed => pb::ExportStatus::Failed,
            Status::Cancelled => pb::ExportStatus::Cancelled,
        }
    }
}

haven_db::text_enum! {
    /// The format column of `export_history`.
    pub enum StoredFormat in "export_history.format" {
        Csv = "csv",
        Json = "json",
        Ndjson = "ndjson",
        Rows = "rows",
        Pdf = "pdf",
    }
}

impl StoredFormat {
    pub fn to_proto(self) -> pb::ExportFormat {
        match self {
            StoredFormat::Csv => pb::ExportFormat::Csv,
            StoredFormat::Json => pb::ExportFormat::Json,
            StoredFormat::Ndjson => pb::ExportFormat::Ndjson,
            StoredFormat::Rows => pb::ExportFormat::Unspecified,
            StoredFormat::Pdf => pb::ExportFormat::Pdf,
        }
    }
}

/// Writes the history row and publishes the event. Failures here are logged, not returned:
/// the caller's stream has already ended.
pub async fn record(pool: &PgPool, bus: &Bus, record: &Record, ending: &Ending, took: Duration) {
    let (status, rows, bytes, truncated, error) = match ending {
        Ending::Completed {
            rows,
            bytes,
            truncated,
        } => (Status::Completed, *rows, *bytes, *truncated, None),
        Ending::Cancelled { rows, bytes } => (
            Status::Cancelled,
            *rows,
            *bytes,
            false,
            Some("the caller went away".to_owned()),
        ),
        Ending::Failed { rows, bytes, error } => {
            (Status::Failed, *rows, *bytes, false, Some(error.clone()))
        }
    };
    let mut entry = Entry {
        id: record.id,
        tenant_id: record.tenant_id,
        user_id: record.user_id.clone(),
        export_type: record.export_type.to_owned(),
        format: record.format,
        fields: record.fields.clone(),
        range_start: record.start,
        range_end: record.end,
        record_count: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        duration_ms: i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
        status,
        error,
        truncated,
        created_at: Utc::now(),
    };
    let created_at = sqlx::query_scalar!(
        r#"INSERT INTO exports.export_history
             (id, tenant_id, user_id, export_type, format, fields, range_start, range_end, row_limit,
              record_count, bytes, duration_ms, status, error, truncated, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::int8, $13, $14, $15, now() - $12::int8 * interval '1 millisecond')
         RETURNING created_at"#,
        entry.id,
        entry.tenant_id,
        entry.user_id,
        entry.export_type,
        entry.format.as_str(),
        &entry.fields,
        entry.range_start,
        entry.range_end,
        i64::try_from(record.limit).unwrap_or(i64::MAX),
        entry.record_count,
        entry.bytes,
        entry.duration_ms,
        status.as_str(),
        entry.error.as_deref(),
        truncated,
    )
    .fetch_one(pool)
    .await;
    match created_at {
        Ok(t) => entry.created_at = t,
        Err(e) => tracing::error!(error = %e, export = %record.id, "cannot record export history"),
    }
    metrics::counter!("haven_export_rows_total", "type" => record.export_type).increment(rows);
    metrics::counter!("haven_export_bytes_total", "type" => record.export_type).increment(bytes);
    metrics::counter!("haven_exports_total", "status" => status.as_str()).increment(1);
    tracing::info!(export = %record.id, r#type = record.export_type, format = record.format.as_str(), status = status.as_str(), rows, bytes, duration_ms = entry.duration_ms, "export ended");
    let subject = match status {
        Status::Completed => COMPLETED_SUBJECT,
        Status::Failed | Status::Cancelled => FAILED_SUBJECT,
    };
    let event = ExportEvent {
        entry: Some(entry.to_proto()),
        occurred_at: Some(ts(Utc::now())),
        statistics_run: None,
    };
    if let Err(e) = bus.publish(subject, &event, &record.id.to_string()).await {
        tracing::warn!(error = %e, export = %record.id, "cannot publish export event");
    }
}

/// One history row as stored.
pub struct Entry {
    id: Uuid,
    tenant_id: Uuid,
    user_id: String,
    export_type: String,
    format: StoredFormat,
    fields: Vec<String>,
    range_start: DateTime<Utc>,
    range_end: DateTime<Utc>,
    record_count: i64,
    bytes: i64,
    duration_ms: i64,
    status: Status,
    error: Option<String>,
    truncated: bool,
    pub created_at: DateTime<Utc>,
}

impl Entry {
    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn to_proto(&self) -> pb::ExportHistoryEntry {
        pb::ExportHistoryEntry {
            id: self.id.to_string(),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.clone(),
            export_type: self.export_type.clone(),
            format: self.format.to_proto() as i32,
            fields: self.fields.clone(),
            date_range: Some(DateRange {
                start: Some(ts(self.range_start)),
                end: Some(ts(self.range_end)),
            }),
            record_count: u64::try_from(self.record_count).unwrap_or(0),
            bytes: u64::try_from(self.bytes).unwrap_or(0),
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            status: self.status.to_proto() as i32,
            error: self.error.clone().unwrap_or_default(),
            truncated: self.truncated,
            created_at: Some(ts(self.created_at)),
        }
    }
}

/// A page of the tenant's history, newest first, or the one entry `id` when given. `after`
/// is the last entry of the previous page; `export_type` empty means every type.
pub async fn query(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Option<Uuid>,
    export_type: &str,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Entry>, ExportError> {
    Ok(sqlx::query_as!(
        Entry,
        r#"SELECT id, tenant_id, user_id, export_type, format AS "format: StoredFormat", fields,
                range_start, range_end, record_count, bytes, duration_ms,
                status AS "status: Status", error, truncated, created_at
         FROM exports.export_history
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id = $2)
           AND ($3 = '' OR export_type = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
         ORDER BY created_at DESC, id DESC LIMIT $6"#,
        tenant_id,
        id,
        export_type,
        after.map(|c| c.0),
        after.map(|c| c.1),
        limit,
    )
    .fetch_all(pool)
    .await?)
}
