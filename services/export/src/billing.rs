//! The billing usage export (README, "Billing usage export"): AI usage and cost across every
//! tenant, for platform admins, as one row per event or summed per day and tenant or model.
//! The rows and `totalRecords` come from one REPEATABLE READ snapshot, so the count always
//! matches the rows; a range holding more rows than the limit is refused, never cut.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use haven_proto::export::v1 as pb;
use uuid::Uuid;

use crate::error::ExportError;
use crate::history::{Record, StoredFormat};
use crate::plan::midnight;
use crate::render::{CopyInput, CsvCell, CsvRows, JsonArray, RenderError, RowRenderer};

/// The history and limits key of this export.
pub const TYPE_KEY: &str = "billing_usage";
/// Rows one billing export may hold unless `HAVEN_EXPORT_MAX_RECORDS` says otherwise.
pub const DEFAULT_MAX_RECORDS: u64 = 10_000_000;
/// Days covered when the request names no start date (the end defaults to today).
const DEFAULT_DAYS: i64 = 30;
/// The longest range one export may span, as for every export.
const MAX_DAYS: i64 = 3660;
/// An event's UTC day.
const DAY: &str = "(u.created_at AT TIME ZONE 'UTC')::date";

/// The CSV header, exactly as the billing dashboard's accounting import expects it.
pub const CSV_COLUMNS: [&str; 6] = [
    "date",
    "tenant_name",
    "model_used",
    "input_tokens",
    "output_tokens",
    "cost_cents",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One row per usage event.
    All,
    /// One row per UTC day and tenant.
    ByTenant,
    /// One row per UTC day and model.
    ByModel,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::ByTenant => "by_tenant",
            Scope::ByModel => "by_model",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// The JSON file's `metadata`, in seed 002's key order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    exported_at: String,
    date_range: DateRange,
    total_records: u64,
    scope: &'static str,
}

#[derive(serde::Serialize)]
struct DateRange {
    start: String,
    end: String,
}

/// A checked billing export.
#[derive(Clone, Debug)]
pub struct Billing {
    pub record: Record,
    pub format: Format,
    pub scope: Scope,
    /// First and last UTC day, both included.
    pub first: NaiveDate,
    pub last: NaiveDate,
}

fn date(field: &'static str, value: &str) -> Result<NaiveDate, ExportError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ExportError::invalid(field, format!("`{value}` is not a date (YYYY-MM-DD)")))
}

/// Checks `request` and fills in the defaults: csv, `all`, the last 30 days up to today.
pub fn resolve(
    request: &pb::BillingExportRequest,
    tenant_id: Uuid,
    user_id: &str,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Billing, ExportError> {
    let format = match pb::ExportFormat::try_from(request.format) {
        Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Csv) => Format::Csv,
        Ok(pb::ExportFormat::Json) => Format::Json,
        Ok(pb::ExportFormat::Ndjson | pb::ExportFormat::Pdf) | Err(_) => {
            return Err(ExportError::invalid(
                "format",
                "the billing export is csv or json",
            ));
        }
    };
    let scope = match pb::BillingScope::try_from(request.scope) {
        Ok(pb::BillingScope::Unspecified | pb::BillingScope::All) => Scope::All,
        Ok(pb::BillingScope::ByTenant) => Scope::ByTenant,
        Ok(pb::BillingScope::ByModel) => Scope::ByModel,
        Err(_) => {
            return Err(ExportError::invalid(
                "scope",
                format!(
                    "unknown value {}; expected all, by_tenant or by_model",
                    request.scope
                ),
            ));
        }
    };
    let last = match request.end_date.as_str() {
        "" => now.date_naive(),
        value => date("end_date", value)?,
    };
    let first = match request.start_date.as_str() {
        "" => last - Duration::days(DEFAULT_DAYS - 1),
        value => date("start_date", value)?,
    };
    if first > last {
        return Err(ExportError::invalid(
            "start_date",
            format!("{first} is after end_date {last}"),
        ));
    }
    if (last - first).num_days() >= MAX_DAYS {
        return Err(ExportError::invalid(
            "start_date",
            format!("the range is longer than {MAX_DAYS} days"),
        ));
    }
    let record = Record {
        id: Uuid::now_v7(),
        tenant_id,
        user_id: user_id.to_owned(),
        export_type: TYPE_KEY,
        format: match format {
            Format::Csv => StoredFormat::Csv,
            Format::Json => StoredFormat::Json,
        },
        fields: CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
        start: midnight(first),
        // The end of the last day, as the history of other exports records an inclusive end.
        end: midnight(last) + Duration::days(1) - Duration::microseconds(1),
        limit,
    };
    Ok(Billing {
        record,
        format,
        scope,
        first,
        last,
    })
}

impl Billing {
    /// `WHERE` over `app.usage_events u` for the range. Dates are formatted by us (COPY
    /// takes no parameters).
    fn range(&self) -> String {
        format!(
            "u.created_at >= '{}'::timestamptz AND u.created_at < '{}'::timestamptz",
            midnight(self.first).format("%Y-%m-%d %H:%M:%S+00"),
            midnight(self.last + Duration::days(1)).format("%Y-%m-%d %H:%M:%S+00"),
        )
    }

    /// The rows, oldest day first.
    fn select(&self) -> String {
        let from = format!(
            "FROM app.usage_events u JOIN app.tenants t ON t.id = u.tenant_id WHERE {}",
            self.range()
        );
        match self.scope {
            Scope::All => format!(
                "SELECT {DAY} AS date, t.name AS tenant_name, u.model AS model_used, \
                 u.input_tokens, u.output_tokens, u.cost_cents {from} \
                 ORDER BY u.created_at, u.id"
            ),
            Scope::ByTenant => format!(
                "SELECT {DAY} AS date, t.name AS tenant_name, '' AS model_used, \
                 sum(u.input_tokens)::int8 AS input_tokens, sum(u.output_tokens)::int8 AS output_tokens, \
                 sum(u.cost_cents)::int8 AS cost_cents {from} \
                 GROUP BY 1, u.tenant_id, t.name ORDER BY 1, t.name, u.tenant_id"
            ),
            Scope::ByModel => format!(
                "SELECT {DAY} AS date, '' AS tenant_name, u.model AS model_used, \
                 sum(u.input_tokens)::int8 AS input_tokens, sum(u.output_tokens)::int8 AS output_tokens, \
                 sum(u.cost_cents)::int8 AS cost_cents {from} \
                 GROUP BY 1, u.model ORDER BY 1, u.model"
            ),
        }
    }

    /// Counts the rows `copy_sql` will send; run first, in the same snapshot. Cheaper than
    /// the rows: no join (every event's tenant exists, by its foreign key), no order, no sums.
    pub fn count_sql(&self) -> String {
        let range = self.range();
        match self.scope {
            Scope::All => format!("SELECT count(*) FROM app.usage_events u WHERE {range}"),
            Scope::ByTenant => format!(
                "SELECT count(*) FROM (SELECT 1 FROM app.usage_events u WHERE {range} \
                 GROUP BY {DAY}, u.tenant_id) s"
            ),
            Scope::ByModel => format!(
                "SELECT count(*) FROM (SELECT 1 FROM app.usage_events u WHERE {range} \
                 GROUP BY {DAY}, u.model) s"
            ),
        }
    }

    pub fn copy_sql(&self) -> String {
        match self.format {
            // Text format, re-encoded as CSV by the renderer.
            Format::Csv => format!("COPY ({}) TO STDOUT", self.select()),
            // One object per line, verbatim (see `sql::copy_sql`).
            Format::Json => format!(
                "COPY (SELECT json_build_object('date', s.date, 'tenantName', s.tenant_name, \
                 'modelUsed', s.model_used, 'inputTokens', s.input_tokens, \
                 'outputTokens', s.output_tokens, 'costCents', s.cost_cents)::text FROM ({}) s) \
                 TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
                self.select()
            ),
        }
    }

    /// The renderer, once the snapshot's row count is known.
    pub fn renderer(&self, total: u64, now: DateTime<Utc>) -> Result<RowRenderer, RenderError> {
        Ok(match self.format {
            Format::Csv => RowRenderer::Csv(Box::new(CsvRows::new(
                CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
                vec![
                    CsvCell::Plain,
                    CsvCell::Text,
                    CsvCell::Text,
                    CsvCell::Plain,
                    CsvCell::Plain,
                    CsvCell::Plain,
                ],
                CopyInput::Text,
                false,
            ))),
            Format::Json => {
                let metadata = Metadata {
                    exported_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    date_range: DateRange {
                        start: self.first.to_string(),
                        end: self.last.to_string(),
                    },
                    total_records: total,
                    scope: self.scope.as_str(),
                };
                RowRenderer::Json(JsonArray::enveloped("metadata", &metadata)?)
            }
        })
    }

    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    /// `billing-export-{YYYY-MM-DD}.{csv|json}`, dated the day it is made.
    pub fn filename(&self, now: DateTime<Utc>) -> String {
        let ext = match self.format {
            Format::Csv => "csv",
            Format::Json => "json",
        };
        format!("billing-export-{}.{ext}", now.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(start: &str, end: &str) -> pb::BillingExportRequest {
        pb::BillingExportRequest {
            start_date: start.into(),
            end_date: end.into(),
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T22:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn defaults_are_csv_all_and_the_last_thirty_days() {
        let b = resolve(&req("", ""), Uuid::nil(), "u", 10, now()).unwrap();
        assert_eq!((b.format, b.scope), (Format::Csv, Scope::All));
        assert_eq!(b.first.to_string(), "2026-11-06");
        assert_eq!(b.last.to_string(), "2026-12-05");
        assert_eq!(b.filename(now()), "billing-export-2026-12-05.csv");
        assert!(b.copy_sql().contains("< '2026-12-06 00:00:00+00'"));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let field = |r: &pb::BillingExportRequest| match resolve(r, Uuid::nil(), "u", 10, now()) {
            Err(ExportError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&req("2026-13-01", "")), "start_date");
        assert_eq!(field(&req("", "yesterday")), "end_date");
        assert_eq!(field(&req("2026-12-02", "2026-12-01")), "start_date");
        assert_eq!(field(&req("2000-01-01", "2026-12-01")), "start_date");
        let mut r = req("", "");
        r.format = pb::ExportFormat::Pdf as i32;
        assert_eq!(field(&r), "format");
        let mut r = req("", "");
        r.scope = 42;
        assert_eq!(field(&r), "scope");
    }
}
