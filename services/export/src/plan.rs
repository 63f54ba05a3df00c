//! Turns an export request into a plan: type, fields, date range and limit, each checked and
//! defaulted. The SQL that reads it is `sql.rs`'s.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use haven_proto::export::v1 as pb;
use uuid::Uuid;

use crate::catalog::{self, ExportType, Field};
use crate::error::ExportError;
use crate::history::{Record, StoredFormat};

/// The longest range one export may span: a decade (anything longer is a mistake).
const MAX_RANGE_DAYS: i64 = 3660;

/// The longest range one export covers (about ten years).
pub fn max_range() -> Duration {
    Duration::days(MAX_RANGE_DAYS)
}

/// What a request asks to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv {
        bom: bool,
    },
    Json,
    Ndjson,
    /// Typed rows for `StreamRows`.
    Rows,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv { .. } => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Rows => "rows",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Rows => "bin",
            other => other.as_str(),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv { .. } => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Rows => "application/grpc",
        }
    }
}

/// The first instant of a UTC day: reports take whole days.
pub fn midnight(day: chrono::NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn invalid(field: &'static str, message: impl Into<String>) -> ExportError {
    ExportError::invalid(field, message)
}

/// Row limits per type: the catalogue's `maxRecords` (`catalog.rs`), unless the deployment
/// says otherwise.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub overrides: HashMap<String, u64>,
}

impl Limits {
    pub fn max_records(&self, ty: &ExportType) -> u64 {
        self.overrides
            .get(ty.key)
            .copied()
            .unwrap_or(ty.max_records)
    }

    /// Rows one billing export may hold; a range with more is refused, not cut.
    pub fn billing(&self) -> u64 {
        self.overrides
            .get(crate::billing::TYPE_KEY)
            .copied()
            .unwrap_or(crate::billing::DEFAULT_MAX_RECORDS)
    }

    /// Parses `orders=2000000,leads=100000,billing_usage=20000000`.
    pub fn parse(spec: &str) -> Result<Limits, String> {
        let mut overrides = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, n) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected type=limit"))?;
            if catalog::find(key.trim()).is_none() && key.trim() != crate::billing::TYPE_KEY {
                return Err(format!("`{part}`: unknown export type"));
            }
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: limit is not a whole number"))?;
            if n == 0 {
                return Err(format!("`{part}`: limit must be at least 1"));
            }
            overrides.insert(key.trim().to_owned(), n);
        }
        Ok(Limits { overrides })
    }
}

/// A checked, defaulted export.
#[derive(Clone, Debug)]
pub struct Plan {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: String,
    pub ty: &'static ExportType,
    pub fields: Vec<&'static Field>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub limit: u64,
    pub format: Format,
}

fn timestamp(
    field: &'static str,
    ts: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, ExportError> {
    let at = haven_proto::time::from_timestamp(ts)
        .ok_or_else(|| invalid(field, "is not a valid timestamp"))?;
    let lo = DateTime::from_timestamp(0, 0).unwrap_or_default();
    let hi = DateTime::from_timestamp(7_258_118_400, 0).unwrap_or_default(); // 2200-01-01
    if at < lo || at > hi {
        return Err(invalid(field, format!("{at} is outside 1970..2200")));
    }
    Ok(at)
}

/// Checks `request` and fills in the defaults. `rows` is true for `StreamRows`.
pub fn resolve(
    request: &pb::ExportRequest,
    tenant_id: Uuid,
    user_id: &str,
    limits: &Limits,
    now: DateTime<Utc>,
    rows: bool,
) -> Result<Plan, ExportError> {
    if request.export_type.is_empty() {
        return Err(invalid("export_type", "is required"));
    }
    let ty = catalog::find(&request.export_type).ok_or_else(|| {
        let known: Vec<&str> = catalog::TYPES.iter().map(|t| t.key).collect();
        invalid(
            "export_type",
            format!(
                "unknown type `{}`; expected one of {}",
                request.export_type,
                known.join(", ")
            ),
        )
    })?;
    let format = if rows {
        Format::Rows
    } else {
        match pb::ExportFormat::try_from(request.format) {
            Ok(pb::ExportFormat::Csv) => Format::Csv { bom: request.bom },
            Ok(pb::ExportFormat::Json) => Format::Json,
            Ok(pb::ExportFormat::Ndjson) => Format::Ndjson,
            Ok(pb::ExportFormat::Unspecified) => {
                return Err(invalid("format", "is required: csv, json or ndjson"));
            }
            Ok(pb::ExportFormat::Pdf) => {
                return Err(invalid(
                    "format",
                    "pdf is served for reports only (StreamBrandReport); use csv, json or ndjson",
                ));
            }
            Err(_) => {
                return Err(invalid(
                    "format",
                    format!("unknown value {}", request.format),
                ));
            }
        }
    };
    if request.bom && !matches!(format, Format::Csv { .. }) {
        return Err(invalid("bom", "applies to csv only"));
    }
    let fields: Vec<&'static Field> = if request.fields.is_empty() {
        ty.fields.iter().filter(|f| f.default).collect()
    } else {
        let mut out: Vec<&'static Field> = Vec::with_capacity(request.fields.len());
        for key in &request.fields {
            let field = ty.field(key).ok_or_else(|| {
                let known: Vec<&str> = ty.fields.iter().map(|f| f.key).collect();
                invalid(
                    "fields",
                    format!(
                        "unknown field `{key}` for {}; expected any of {}",
                        ty.key,
                        known.join(", ")
                    ),
                )
            })?;
            if out.iter().any(|f| f.key == field.key) {
                return Err(invalid("fields", format!("`{key}` is listed twice")));
            }
            out.push(field);
        }
        out
    };
    let end = match &request.end_time {
        Some(ts) => timestamp("end_time", ts)?,
        None => now,
    };
    let start = match &request.start_time {
        Some(ts) => timestamp("start_time", ts)?,
        None => end - Duration::days(i64::from(ty.default_date_range_days)),
    };
    if start > end {
        return Err(invalid(
            "start_time",
            format!("{start} is after end_time {end}"),
        ));
    }
    if end - start > Duration::days(MAX_RANGE_DAYS) {
        return Err(invalid(
            "start_time",
            format!("the range is longer than {MAX_RANGE_DAYS} days"),
        ));
    }
    let max = limits.max_records(ty);
    let limit = if request.limit == 0 {
        max
    } else {
        request.limit.min(max)
    };
    Ok(Plan {
        id: Uuid::now_v7(),
        tenant_id,
        user_id: user_id.to_owned(),
        ty,
        fields,
        start,
        end,
        limit,
        format,
    })
}

impl Plan {
    /// What the history records of this export.
    pub fn record(&self) -> Record {
        Record {
            id: self.id,
            tenant_id: self.tenant_id,
            user_id: self.user_id.clone(),
            export_type: self.ty.key,
            format: match self.format {
                Format::Csv { .. } => StoredFormat::Csv,
                Format::Json => StoredFormat::Json,
                Format::Ndjson => StoredFormat::Ndjson,
                Format::Rows => StoredFormat::Rows,
            },
            fields: self.fields.iter().map(|f| f.key.to_owned()).collect(),
            start: self.start,
            end: self.end,
            limit: self.limit,
        }
    }

    /// `{type}-export-{YYYY-MM-DD}.{ext}`.
    pub fn filename(&self, now: DateTime<Utc>) -> String {
        format!(
            "{}-export-{}.{}",
            self.ty.key,
            now.format("%Y-%m-%d"),
            self.format.extension()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ty: &str, fields: &[&str]) -> pb::ExportRequest {
        pb::ExportRequest {
            export_type: ty.into(),
            format: pb::ExportFormat::Csv as i32,
            fields: fields.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[derive(Debug)]
    struct Bad {
        field: &'static str,
        message: String,
    }

    fn resolve_(r: &pb::ExportRequest) -> Result<Plan, Bad> {
        match resolve(r, Uuid::nil(), "u", &Limits::default(), Utc::now(), false) {
            Ok(plan) => Ok(plan),
            Err(ExportError::Invalid { field, message }) => Err(Bad { field, message }),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn pdf_is_for_reports_only() {
        let mut r = req("orders", &[]);
        r.format = pb::ExportFormat::Pdf as i32;
        assert_eq!(resolve_(&r).err().map(|e| e.field), Some("format"));
    }

    #[test]
    fn defaults_follow_the_catalogue() {
        let plan = resolve_(&req("orders", &[])).unwrap();
        let keys: Vec<&str> = plan.fields.iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "id",
                "shopify_order_id",
                "customer_email",
                "total",
                "subtotal",
                "discount_total",
                "item_count",
                "status",
                "created_at"
            ]
        );
        assert_eq!(plan.limit, 100_000);
        assert_eq!((plan.end - plan.start).num_days(), 90);
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert_eq!(resolve_(&req("", &[])).unwrap_err().field, "export_type");
        assert_eq!(
            resolve_(&req("invoices", &[])).unwrap_err().field,
            "export_type"
        );
        let e = resolve_(&req("orders", &["id", "password"])).unwrap_err();
        assert_eq!(e.field, "fields");
        assert!(e.message.contains("`password`"));
        assert_eq!(
            resolve_(&req("orders", &["id", "id"])).unwrap_err().field,
            "fields"
        );
        let mut r = req("orders", &[]);
        r.format = 0;
        assert_eq!(resolve_(&r).unwrap_err().field, "format");
        let mut r = req("orders", &[]);
        r.start_time = Some(prost_types::Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        });
        r.end_time = Some(prost_types::Timestamp {
            seconds: 1_000_000_000,
            nanos: 0,
        });
        assert_eq!(resolve_(&r).unwrap_err().field, "start_time");
        let mut r = req("orders", &[]);
        r.start_time = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        });
        r.end_time = Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        });
        assert_eq!(resolve_(&r).unwrap_err().field, "start_time");
        let mut r = req("orders", &[]);
        r.end_time = Some(prost_types::Timestamp {
            seconds: -5_000_000_000,
            nanos: 0,
        });
        assert_eq!(resolve_(&r).unwrap_err().field, "end_time");
    }

    #[test]
    fn limits_are_capped_and_configurable() {
        let mut r = req("analytics", &[]);
        r.limit = 1_000_000;
        assert_eq!(resolve_(&r).unwrap().limit, 1_000);
        let limits = Limits::parse("orders=2000000").unwrap();
        let mut r = req("orders", &[]);
        r.limit = 1_500_000;
        assert_eq!(
            resolve(&r, Uuid::nil(), "u", &limits, Utc::now(), false)
                .unwrap()
                .limit,
            1_500_000
        );
        assert!(Limits::parse("invoices=5").is_err());
        assert!(Limits::parse("orders=0").is_err());
    }
}
