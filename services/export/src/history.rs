//! The record of every export, written when it ends however it ends, and its event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use haven_bus::Bus;
use haven_proto::common::v1::DateRange;
use haven_proto::events::v1::ExportEvent;
use haven_proto::export::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::plan::Plan;

pub const COMPLETED_SUBJECT: &str = "haven.exports.events.completed";
pub const FAILED_SUBJECT: &str = "haven.exports.events.failed";

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
    }
}

impl StoredFormat {
    pub fn to_proto(self) -> pb::ExportFormat {
        match self {
            StoredFormat::Csv => pb::ExportFormat::Csv,
            StoredFormat::Json => pb::ExportFormat::Json,
            StoredFormat::Ndjson => pb::ExportFormat::Ndjson,
            StoredFormat::Rows => pb::ExportFormat::Unspecified,
        }
    }
}

/// Writes the history row and publishes the event. Failures here are logged, not returned:
/// the caller's stream has already ended.
pub async fn record(pool: &PgPool, bus: &Bus, plan: &Plan, ending: &Ending, took: Duration) {
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
    let duration_ms = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
    let fields: Vec<String> = plan.fields.iter().map(|f| f.key.to_owned()).collect();
    let created_at = sqlx::query_scalar!(
        r#"INSERT INTO exports.export_history
             (id, tenant_id, user_id, export_type, format, fields, range_start, range_end, row_limit,
              record_count, bytes, duration_ms, status, error, truncated, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::int8, $13, $14, $15, now() - $12::int8 * interval '1 millisecond')
         RETURNING created_at"#,
        plan.id,
        plan.tenant_id,
        plan.user_id,
        plan.ty.key,
        plan.format.as_str(),
        &fields,
        plan.start,
        plan.end,
        i64::try_from(plan.limit).unwrap_or(i64::MAX),
        i64::try_from(rows).unwrap_or(i64::MAX),
        i64::try_from(bytes).unwrap_or(i64::MAX),
        duration_ms,
        status.as_str(),
        error.as_deref(),
        truncated,
    )
    .fetch_one(pool)
    .await;
    let created_at = match created_at {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, export = %plan.id, "cannot record export history");
            Utc::now()
        }
    };
    metrics::counter!("haven_export_rows_total", "type" => plan.ty.key).increment(rows);
    metrics::counter!("haven_export_bytes_total", "type" => plan.ty.key).increment(bytes);
    metrics::counter!("haven_exports_total", "status" => status.as_str()).increment(1);
    tracing::info!(export = %plan.id, r#type = plan.ty.key, format = plan.format.as_str(), status = status.as_str(), rows, bytes, duration_ms, "export ended");
    let entry = entry(
        plan.id,
        plan.tenant_id,
        &plan.user_id,
        plan.ty.key,
        plan.format.to_proto(),
        fields,
        plan.start,
        plan.end,
        rows,
        bytes,
        duration_ms,
        status,
        error.unwrap_or_default(),
        truncated,
        created_at,
    );
    let subject = match status {
        Status::Completed => COMPLETED_SUBJECT,
        Status::Failed | Status::Cancelled => FAILED_SUBJECT,
    };
    let event = ExportEvent {
        entry: Some(entry),
        occurred_at: Some(ts(Utc::now())),
    };
    if let Err(e) = bus.publish(subject, &event, &plan.id.to_string()).await {
        tracing::warn!(error = %e, export = %plan.id, "cannot publish export event");
    }
}

#[allow(clippy::too_many_arguments)]
pub fn entry(
    id: Uuid,
    tenant_id: Uuid,
    user_id: &str,
    export_type: &str,
    format: pb::ExportFormat,
    fields: Vec<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    rows: u64,
    bytes: u64,
    duration_ms: i64,
    status: Status,
    error: String,
    truncated: bool,
    created_at: DateTime<Utc>,
) -> pb::ExportHistoryEntry {
    pb::ExportHistoryEntry {
        id: id.to_string(),
        tenant_id: tenant_id.to_string(),
        user_id: user_id.to_owned(),
        export_type: export_type.to_owned(),
        format: format as i32,
        fields,
        date_range: Some(DateRange {
            start: Some(ts(start)),
            end: Some(ts(end)),
        }),
        record_count: rows,
        bytes,
        duration_ms: u64::try_from(duration_ms).unwrap_or(0),
        status: status.to_proto() as i32,
        error,
        truncated,
        created_at: Some(ts(created_at)),
    }
}
