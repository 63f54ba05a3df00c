//! The brand analytics report (README, "Brand analytics report"): a brand's calls over the
//! last `days` days as a sectioned CSV or a PDF. Everything is summed by PostgreSQL in one
//! REPEATABLE READ snapshot; the report holds only the sums, one row per outcome, agent and
//! day. Calls are read through the `app.brand_calls` view, which has no phone number column.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use haven_proto::export::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ExportError;
use crate::history::{Record, StoredFormat};
use crate::plan::midnight;
use crate::render::{Report, Section};

/// The history key of this export.
pub const TYPE_KEY: &str = "brand_analytics";
const DEFAULT_DAYS: u32 = 30;
const MAX_DAYS: u32 = 365;
/// The report's sections, in the order they appear.
pub const SECTIONS: [&str; 4] = [
    "Summary Metrics",
    "Calls by Outcome",
    "Agent Performance",
    "Daily Call Log",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Pdf,
}

/// A checked report request for a brand of the caller's tenant.
#[derive(Clone, Debug)]
pub struct BrandReport {
    pub record: Record,
    pub format: Format,
    pub brand_id: Uuid,
    pub company_name: String,
    /// First and last UTC day, both included (the last is today).
    pub first: NaiveDate,
    pub last: NaiveDate,
}

/// Checks the request's shape; the brand itself is looked up by [`find_brand`].
pub fn parse(request: &pb::BrandReportRequest) -> Result<(Uuid, Format, u32), ExportError> {
    let brand_id = Uuid::parse_str(&request.brand_id).map_err(|_| {
        ExportError::invalid(
            "brand_id",
            format!("`{}` is not a brand id (UUID)", request.brand_id),
        )
    })?;
    let format = match pb::ExportFormat::try_from(request.format) {
        Ok(pb::ExportFormat::Csv) => Format::Csv,
        Ok(pb::ExportFormat::Pdf) => Format::Pdf,
        Ok(pb::ExportFormat::Unspecified) => {
            return Err(ExportError::invalid("format", "is required: csv or pdf"));
        }
        Ok(pb::ExportFormat::Json | pb::ExportFormat::Ndjson) | Err(_) => {
            return Err(ExportError::invalid(
                "format",
                "the brand report is csv or pdf",
            ));
        }
    };
    let days = match request.days {
        0 => DEFAULT_DAYS,
        d if d > MAX_DAYS => {
            return Err(ExportError::invalid(
                "days",
                format!("{d} is more than {MAX_DAYS}; use 1 to {MAX_DAYS}"),
            ));
        }
        d => d,
    };
    Ok((brand_id, format, days))
}

/// The brand's name, if it is the tenant's. Another tenant's brand is not found, exactly as
/// an unknown one.
pub async fn find_brand(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    brand_id: Uuid,
) -> Result<String, ExportError> {
    sqlx::query_scalar!(
        "SELECT company_name FROM app.brands WHERE id = $1 AND tenant_id = $2",
        brand_id,
        tenant_id,
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ExportError::NotFound(format!("no brand `{brand_id}`")))
}

impl BrandReport {
    pub fn new(
        tenant_id: Uuid,
        user_id: &str,
        brand_id: Uuid,
        company_name: String,
        format: Format,
        days: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let last = now.date_naive();
        let first = last - Duration::days(i64::from(days) - 1);
        let record = Record {
            id: Uuid::now_v7(),
            tenant_id,
            user_id: user_id.to_owned(),
            export_type: TYPE_KEY,
            format: match format {
                Format::Csv => StoredFormat::Csv,
                Format::Pdf => StoredFormat::Pdf,
            },
            fields: SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
            start: midnight(first),
            end: midnight(last) + Duration::days(1) - Duration::microseconds(1),
            limit: 0,
        };
        BrandReport {
            record,
            format,
            brand_id,
            company_name,
            first,
            last,
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Pdf => "application/pdf",
        }
    }

    /// `analytics_{brand}_{YYYYMMDD}.{csv|pdf}`.
    pub fn filename(&self, now: DateTime<Utc>) -> String {
        let ext = match self.format {
            Format::Csv => "csv",
            Format::Pdf => "pdf",
        };
        format!(
            "analytics_{}_{}.{ext}",
            filename_part(&self.company_name),
            now.format("%Y%m%d")
        )
    }

    /// Sums the brand's calls in the range; `conn` is in a REPEATABLE READ transaction, so
    /// every section sees the same calls. Returns the report and the number of calls.
    pub async fn gather(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<(Report, u64), ExportError> {
        let (tenant, brand) = (self.record.tenant_id, self.brand_id);
        let (from, until) = (
            midnight(self.first),
            midnight(self.last + Duration::days(1)),
        );
        let summary = sqlx::query!(
            r#"SELECT count(*) AS "calls!",
                    round(coalesce(100.0 * count(*) FILTER (WHERE c.outcome = 'completed')
                                   / nullif(count(*), 0), 0), 1)::text AS "success!",
                    round(coalesce(avg(c.duration_s), 0), 1)::text AS "duration!",
                    round(coalesce(sum(c.cost), 0), 2)::text AS "cost!"
             FROM app.brand_calls c
             WHERE c.brand_id = $1 AND c.tenant_id = $2 AND c.started_at >= $3 AND c.started_at < $4"#,
            brand,
            tenant,
            from,
            until,
        )
        .fetch_one(&mut *conn)
        .await?;
        let outcomes = sqlx::query!(
            r#"SELECT c.outcome AS "outcome!", count(*) AS "calls!"
             FROM app.brand_calls c
             WHERE c.brand_id = $1 AND c.tenant_id = $2 AND c.started_at >= $3 AND c.started_at < $4
             GROUP BY c.outcome ORDER BY 2 DESC, 1"#,
            brand,
            tenant,
            from,
            until,
        )
        .fetch_all(&mut *conn)
        .await?;
        // Every agent of the brand, also those without calls in the range.
        let agents = sqlx::query!(
            r#"SELECT a.name, count(c.id) AS "calls!",
                    count(c.id) FILTER (WHERE c.outcome = 'completed') AS "completed!",
                    round(coalesce(100.0 * count(c.id) FILTER (WHERE c.outcome = 'completed')
                                   / nullif(count(c.id), 0), 0), 1)::text AS "success!"
             FROM app.agents a
             JOIN app.personas p ON p.tenant_id = a.tenant_id AND p.id = a.persona_id
             LEFT JOIN app.brand_calls c ON c.tenant_id = a.tenant_id AND c.agent_id = a.id
                  AND c.started_at >= $3 AND c.started_at < $4
             WHERE p.brand_id = $1 AND p.tenant_id = $2
             GROUP BY a.id, a.name ORDER BY 2 DESC, a.name, a.id"#,
            brand,
            tenant,
            from,
            until,
        )
        .fetch_all(&mut *conn)
        .await?;
        let daily = sqlx::query!(
            r#"SELECT (c.started_at AT TIME ZONE 'UTC')::date::text AS "day!", count(*) AS "calls!"
             FROM app.brand_calls c
             WHERE c.brand_id = $1 AND c.tenant_id = $2 AND c.started_at >= $3 AND c.started_at < $4
             GROUP BY 1 ORDER BY 1"#,
            brand,
            tenant,
            from,
            until,
        )
        .fetch_all(&mut *conn)
        .await?;
        let columns = |names: &[&str]| Some(names.iter().map(|n| (*n).to_owned()).collect());
        let report = Report {
            title: "Brand Analytics Report".into(),
            facts: vec![
                ("Brand Name".into(), self.company_name.clone()),
                (
                    "Date Range".into(),
                    format!("{} to {}", self.first, self.last),
                ),
            ],
            sections: vec![
                Section {
                    heading: SECTIONS[0].into(),
                    columns: None,
                    rows: vec![
                        vec!["Total Calls".into(), summary.calls.to_string()],
                        vec!["Success Rate".into(), format!("{}%", summary.success)],
                        vec!["Average Duration (seconds)".into(), summary.duration],
                        vec!["Total Cost".into(), format!("${}", summary.cost)],
                    ],
                },
                Section {
                    heading: SECTIONS[1].into(),
                    columns: columns(&["Outcome", "Count"]),
                    rows: outcomes
                        .into_iter()
                        .map(|o| vec![outcome_label(&o.outcome), o.calls.to_string()])
                        .collect(),
                },
                Section {
                    heading: SECTIONS[2].into(),
                    columns: columns(&[
                        "Agent Name",
                        "Total Calls",
                        "Completed Calls",
                        "Success Rate",
                    ]),
                    rows: agents
                        .into_iter()
                        .map(|a| {
                            vec![
                                a.name,
                                a.calls.to_string(),
                                a.completed.to_string(),
                                format!("{}%", a.success),
                            ]
                        })
                        .collect(),
                },
                Section {
                    heading: SECTIONS[3].into(),
                    columns: columns(&["Date", "Call Count"]),
                    rows: daily
                        .into_iter()
                        .map(|d| vec![d.day, d.calls.to_string()])
                        .collect(),
                },
            ],
            generated: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        };
        Ok((report, u64::try_from(summary.calls).unwrap_or(0)))
    }
}

/// `no_answer` → `No Answer`: outcomes are stored as keys and shown as words.
fn outcome_label(outcome: &str) -> String {
    outcome
        .split(['_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The brand's name as it may appear in a file name: spaces become `_`, only ASCII letters,
/// digits and `_` survive, and nothing left means `brand`.
pub fn filename_part(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| if c == ' ' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if kept.is_empty() {
        "brand".into()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        for (name, part) in [
            ("Acme Corp", "Acme_Corp"),
            ("\"quoted\" / ../etc", "quoted__etc"),
            ("..", "brand"),
            ("🎨 Café 日本", "_Caf_"),
            ("日本語", "brand"),
            ("", "brand"),
            ("a\\b\r\nc;d", "abcd"),
        ] {
            assert_eq!(filename_part(name), part, "{name:?}");
        }
    }

    #[test]
    fn outcomes_read_as_words() {
        assert_eq!(outcome_label("completed"), "Completed");
        assert_eq!(outcome_label("no_answer"), "No Answer");
        assert_eq!(outcome_label("=cmd"), "=cmd");
    }

    #[test]
    fn days_are_checked_and_defaulted() {
        let req = |days| pb::BrandReportRequest {
            brand_id: Uuid::nil().to_string(),
            format: pb::ExportFormat::Csv as i32,
            days,
        };
        assert_eq!(parse(&req(0)).ok().map(|r| r.2), Some(30));
        assert_eq!(parse(&req(365)).ok().map(|r| r.2), Some(365));
        assert!(matches!(
            parse(&req(366)),
            Err(ExportError::Invalid { field: "days", .. })
        ));
        let mut bad = req(1);
        bad.brand_id = "../x".into();
        assert!(matches!(
            parse(&bad),
            Err(ExportError::Invalid {
                field: "brand_id",
                ..
            })
        ));
    }
}
