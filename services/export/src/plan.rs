//! Turns an export request into a plan: type, fields, date range and limit, each checked and
//! defaulted, and the SQL that reads it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use haven_proto::export::v1 as pb;
use uuid::Uuid;

use crate::catalog::{self, ExportType, Field, Kind};

/// The longest range one export may span: a decade (anything longer is a mistake).
const MAX_RANGE_DAYS: i64 = 3660;

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

    pub fn to_proto(self) -> pb::ExportFormat {
        match self {
            Format::Csv { .. } => pb::ExportFormat::Csv,
            Format::Json => pb::ExportFormat::Json,
            Format::Ndjson => pb::ExportFormat::Ndjson,
            Format::Rows => pb::ExportFormat::Unspecified,
        }
    }
}

/// A field and what is wrong with it, for `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
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

    /// Parses `orders=2000000,leads=100000`.
    pub fn parse(spec: &str) -> Result<Limits, String> {
        let mut overrides = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, n) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected type=limit"))?;
            if catalog::find(key.trim()).is_none() {
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

fn timestamp(field: &'static str, ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, Invalid> {
    let at = haven_proto::time::from_timestamp(ts)
        .ok_or_else(|| invalid(field, "is not a valid timestamp"))?;
    let lo = DateTime::from_timestamp(0, 0).unwrap_or_default();
    let hi = DateTime::from_timestamp(7_258_118_400, 0).unwrap_or_default(); // 2200-01-01
    if at < lo || at > hi {
        return Err(invalid(field, format!("{at} is outside 1970..2200")));
    }
    Ok(at)
}

/// Why a request cannot be planned: bad input, or a format this version does not serve yet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A documented value that is not implemented yet (`Unimplemented`, as the proto says).
    #[error("{0}")]
    Unimplemented(&'static str),
}

/// Checks `request` and fills in the defaults. `rows` is true for `StreamRows`.
pub fn resolve(
    request: &pb::ExportRequest,
    tenant_id: Uuid,
    user_id: &str,
    limits: &Limits,
    now: DateTime<Utc>,
    rows: bool,
) -> Result<Plan, Rejected> {
    if request.export_type.is_empty() {
        return Err(invalid("export_type", "is required").into());
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
                return Err(invalid("format", "is required: csv, json or ndjson").into());
            }
            Ok(pb::ExportFormat::Pdf) => {
                return Err(Rejected::Unimplemented(
                    "format: pdf is not served yet; use csv, json or ndjson",
                ));
            }
            Err(_) => {
                return Err(invalid("format", format!("unknown value {}", request.format)).into());
            }
        }
    };
    if request.bom && !matches!(format, Format::Csv { .. }) {
        return Err(invalid("bom", "applies to csv only").into());
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
                return Err(invalid("fields", format!("`{key}` is listed twice")).into());
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
        return Err(invalid("start_time", format!("{start} is after end_time {end}")).into());
    }
    if end - start > Duration::days(MAX_RANGE_DAYS) {
        return Err(invalid(
            "start_time",
            format!("the range is longer than {MAX_RANGE_DAYS} days"),
        )
        .into());
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

/// `'...'` for a timestamp we formatted ourselves (COPY takes no bind parameters).
fn literal(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// How the CSV writer treats a column's cells, decided once per export so that PostgreSQL
/// runs no per-row CASE: text is neutralised against spreadsheet formulas (OWASP), booleans
/// arrive as `t`/`f` and are written `true`/`false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvCell {
    /// Written as it comes.
    Plain,
    /// Free text: a leading `= + - @`, tab or CR gets a `'` unless the cell is a plain number.
    Text,
    /// `t`/`f` from the text format.
    Bool,
}

impl CsvCell {
    pub fn of(field: &Field) -> CsvCell {
        match field.kind {
            // A UUID renders as hex digits and dashes after a hex digit: nothing to neutralise.
            Kind::Text if field.sql.ends_with(".id::text") => CsvCell::Plain,
            Kind::Text => CsvCell::Text,
            Kind::Bool => CsvCell::Bool,
            Kind::Int | Kind::Decimal | Kind::Timestamp | Kind::Date => CsvCell::Plain,
        }
    }
}

impl Plan {
    fn filter(&self) -> String {
        let time = self.ty.time_column;
        if self
            .ty
            .fields
            .iter()
            .any(|f| f.kind == Kind::Date && f.sql == time)
        {
            // Calendar dates: the range covers whole days.
            format!(
                "t.tenant_id = '{}' AND {time} >= ({})::date AND {time} <= ({})::date",
                self.tenant_id,
                literal(self.start),
                literal(self.end)
            )
        } else {
            format!(
                "t.tenant_id = '{}' AND {time} >= {} AND {time} <= {}",
                self.tenant_id,
                literal(self.start),
                literal(self.end)
            )
        }
    }

    /// One more row than the limit is asked for: its arrival means the limit cut the result.
    fn tail(&self) -> String {
        format!(
            "ORDER BY {} DESC LIMIT {}",
            self.ty.time_column,
            self.limit.saturating_add(1)
        )
    }

    /// The COPY statement that renders this export's rows in PostgreSQL itself.
    pub fn copy_sql(&self) -> String {
        match self.format {
            Format::Csv { .. } => {
                let cols: Vec<&str> = self.fields.iter().map(|f| f.sql).collect();
                // Text format: PostgreSQL's cheapest output; the engine re-encodes each row as
                // RFC 4180 CSV through the csv crate.
                format!(
                    "COPY (SELECT {} FROM {} WHERE {} {}) TO STDOUT",
                    cols.join(", "),
                    self.ty.from,
                    self.filter(),
                    self.tail()
                )
            }
            Format::Json | Format::Ndjson | Format::Rows => {
                let pairs: Vec<String> = self
                    .fields
                    .iter()
                    .map(|f| format!("'{}', {}", f.key, f.sql))
                    .collect();
                // JSON text never holds a raw newline, \x01 or \x02: with those as quote and
                // delimiter, COPY writes each object verbatim, one per line.
                format!(
                    "COPY (SELECT json_build_object({})::text FROM {} WHERE {} {}) TO STDOUT \
                     WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
                    pairs.join(", "),
                    self.ty.from,
                    self.filter(),
                    self.tail()
                )
            }
        }
    }

    /// The SELECT of typed rows: decimals and dates as text, the rest native.
    pub fn rows_sql(&self) -> String {
        let cols: Vec<String> = self
            .fields
            .iter()
            .map(|f| match f.kind {
                Kind::Decimal | Kind::Date => format!("({})::text", f.sql),
                Kind::Text | Kind::Int | Kind::Bool | Kind::Timestamp => f.sql.to_owned(),
            })
            .collect();
        format!(
            "SELECT {} FROM {} WHERE {} {}",
            cols.join(", "),
            self.ty.from,
            self.filter(),
            self.tail()
        )
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

    fn resolve_(r: &pb::ExportRequest) -> Result<Plan, Invalid> {
        match resolve(r, Uuid::nil(), "u", &Limits::default(), Utc::now(), false) {
            Ok(plan) => Ok(plan),
            Err(Rejected::Invalid(e)) => Err(e),
            Err(Rejected::Unimplemented(m)) => panic!("unexpected Unimplemented: {m}"),
        }
    }

    #[test]
    fn pdf_is_unimplemented_as_the_proto_documents() {
        let mut r = req("orders", &[]);
        r.format = pb::ExportFormat::Pdf as i32;
        let e = resolve(&r, Uuid::nil(), "u", &Limits::default(), Utc::now(), false);
        assert!(matches!(e, Err(Rejected::Unimplemented(m)) if m.starts_with("format: ")));
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
