//! The SQL of a catalogue export, built from the plan. Built with `format!` because the
//! statement really is dynamic (the field list) and COPY takes no bind parameters; every
//! identifier comes from the catalogue, every literal is a UUID or a time we formatted.

use chrono::{DateTime, Utc};

use crate::catalog::{Field, Kind};
use crate::plan::{Format, Plan};
use crate::render::{CsvCell, LineForm};

/// `'...'` for a timestamp we formatted ourselves.
fn literal(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

fn filter(plan: &Plan) -> String {
    let time = plan.ty.time_column;
    if plan
        .ty
        .fields
        .iter()
        .any(|f| f.kind == Kind::Date && f.sql == time)
    {
        // Calendar dates: the range covers whole days.
        format!(
            "t.tenant_id = '{}' AND {time} >= ({})::date AND {time} <= ({})::date",
            plan.tenant_id,
            literal(plan.start),
            literal(plan.end)
        )
    } else {
        format!(
            "t.tenant_id = '{}' AND {time} >= {} AND {time} <= {}",
            plan.tenant_id,
            literal(plan.start),
            literal(plan.end)
        )
    }
}

/// One more row than the limit is asked for: its arrival means the limit cut the result.
fn tail(plan: &Plan) -> String {
    format!(
        "ORDER BY {} DESC LIMIT {}",
        plan.ty.time_column,
        plan.limit.saturating_add(1)
    )
}

/// The COPY statement that renders this export's rows in PostgreSQL itself.
pub fn copy_sql(plan: &Plan) -> String {
    match plan.format {
        Format::Csv { .. } => {
            // Binary format, each column cast to the type its CSV cell reads: PostgreSQL
            // only copies bytes, and the CSV renderer writes the text on a core of its own.
            format!(
                "COPY (SELECT {} FROM {} WHERE {} {}) TO STDOUT (FORMAT binary)",
                binary_columns(plan),
                plan.ty.from,
                filter(plan),
                tail(plan)
            )
        }
        Format::Json | Format::Ndjson | Format::Rows => {
            let pairs: Vec<String> = plan
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
                plan.ty.from,
                filter(plan),
                tail(plan)
            )
        }
    }
}

/// The binary COPY of typed rows (StreamRows), each column as [`binary_type`] says.
pub fn rows_sql(plan: &Plan) -> String {
    format!(
        "COPY (SELECT {} FROM {} WHERE {} {}) TO STDOUT (FORMAT binary)",
        binary_columns(plan),
        plan.ty.from,
        filter(plan),
        tail(plan)
    )
}

/// The field list of a binary COPY, each field cast to the type its values are read as.
fn binary_columns(plan: &Plan) -> String {
    let cols: Vec<String> = plan
        .fields
        .iter()
        .map(|f| match f.sql.strip_suffix("::text") {
            // Sent as its 16 bytes: PostgreSQL's uuid_out was a good part of its work.
            Some(uuid) if is_uuid(f) => format!("({uuid})::uuid"),
            _ => format!("({})::{}", f.sql, binary_type(f.kind)),
        })
        .collect();
    cols.join(", ")
}

/// How a JSON export's lines are written: compact, its timestamps in RFC 3339 UTC.
pub fn line_form(plan: &Plan) -> LineForm {
    LineForm::Compact {
        timestamps: plan
            .fields
            .iter()
            .map(|f| f.kind == Kind::Timestamp)
            .collect(),
    }
}

/// How the CSV renderer treats a field's cells: text is neutralised against formulas,
/// booleans arrive as `t`/`f`, timestamps are written in RFC 3339 UTC.
pub fn csv_cell(field: &Field) -> CsvCell {
    match field.kind {
        Kind::Text if is_uuid(field) => CsvCell::Uuid,
        Kind::Text => CsvCell::Text,
        Kind::Bool => CsvCell::Bool,
        Kind::Timestamp => CsvCell::Timestamp,
        Kind::Int => CsvCell::Int,
        Kind::Decimal => CsvCell::Decimal,
        Kind::Date => CsvCell::Date,
    }
}

/// A row's own id: a `uuid` shown as text.
pub fn is_uuid(field: &Field) -> bool {
    field.kind == Kind::Text && field.sql.ends_with(".id::text")
}

/// The type a field is sent as in a binary COPY: what the CSV renderer and StreamRows read.
fn binary_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Bool => "bool",
        Kind::Timestamp => "timestamptz",
        Kind::Int => "int8",
        Kind::Decimal => "numeric",
        Kind::Date => "date",
    }
}
