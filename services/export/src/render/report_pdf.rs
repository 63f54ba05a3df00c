//! A report as a print-ready PDF, laid out by `haven-report-pdf` (Typst, fonts embedded).
//! The PDF is made whole in memory: its size follows the report's sections, not any table.

use bytes::BytesMut;

use super::{NO_DATA, RenderError, Report};

pub fn render(report: &Report) -> Result<BytesMut, RenderError> {
    let doc = haven_report_pdf::Report {
        title: report.title.clone(),
        facts: report.facts.clone(),
        sections: report
            .sections
            .iter()
            .map(|s| haven_report_pdf::Section {
                heading: s.heading.clone(),
                columns: s
                    .columns
                    .clone()
                    .unwrap_or_else(|| vec!["Metric".into(), "Value".into()]),
                rows: s.rows.clone(),
                empty: NO_DATA.into(),
            })
            .collect(),
        generated: format!("Generated {}", report.generated),
    };
    let pdf = haven_report_pdf::render(&doc).map_err(|e| RenderError::new("PDF", e))?;
    Ok(BytesMut::from(&pdf[..]))
}
