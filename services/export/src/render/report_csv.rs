//! A report as CSV: the title and facts, then each section after a blank line: its heading,
//! its header row and its rows, or `No Data`. Every cell is neutralised against formulas.

use bytes::BytesMut;

use super::csv::{write_text, writer};
use super::{NO_DATA, RenderError, Report};

pub fn render(report: &Report) -> Result<BytesMut, RenderError> {
    let (mut w, sink) = writer();
    let mut out = BytesMut::new();
    let e = |e: ::csv::Error| RenderError::new("CSV", e);
    let record = |w: &mut ::csv::Writer<_>, cells: &[&str]| -> Result<(), RenderError> {
        for cell in cells {
            write_text(w, cell.as_bytes()).map_err(e)?;
        }
        w.write_record(std::iter::empty::<&[u8]>()).map_err(e)
    };
    record(&mut w, &[&report.title])?;
    for (label, value) in &report.facts {
        record(&mut w, &[label, value])?;
    }
    record(&mut w, &["Generated", &report.generated])?;
    for section in &report.sections {
        // A blank line between sections (the csv crate writes an empty record as `""`).
        w.flush().map_err(|e| RenderError::new("CSV", e))?;
        sink.take_into(&mut out);
        out.extend_from_slice(b"\n");
        record(&mut w, &[&section.heading])?;
        if section.rows.is_empty() {
            record(&mut w, &[NO_DATA])?;
            continue;
        }
        if let Some(columns) = &section.columns {
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            record(&mut w, &columns)?;
        }
        for row in &section.rows {
            let row: Vec<&str> = row.iter().map(String::as_str).collect();
            record(&mut w, &row)?;
        }
    }
    w.flush().map_err(|e| RenderError::new("CSV", e))?;
    sink.take_into(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::render::Section;

    #[test]
    fn sections_follow_each_other_and_empty_ones_say_so() {
        let report = Report {
            title: "Brand Analytics Report".into(),
            facts: vec![("Brand Name".into(), "=HYPERLINK(\"x\")".into())],
            sections: vec![
                Section {
                    heading: "Summary Metrics".into(),
                    columns: None,
                    rows: vec![vec!["Total Calls".into(), "-3".into()]],
                },
                Section {
                    heading: "Calls by Outcome".into(),
                    columns: Some(vec!["Outcome".into(), "Count".into()]),
                    rows: vec![],
                },
                Section {
                    heading: "Agent Performance".into(),
                    columns: Some(vec!["Agent Name".into(), "Total Calls".into()]),
                    rows: vec![vec!["Ann, \"A\"\nB".into(), "2".into()]],
                },
            ],
            generated: "2026-12-05 10:00:00 UTC".into(),
        };
        let csv = String::from_utf8(render(&report).unwrap().to_vec()).unwrap();
        assert_eq!(
            csv,
            "Brand Analytics Report\n\
             Brand Name,\"'=HYPERLINK(\"\"x\"\")\"\n\
             Generated,2026-12-05 10:00:00 UTC\n\
             \n\
             Summary Metrics\n\
             Total Calls,-3\n\
             \n\
             Calls by Outcome\n\
             No Data\n\
             \n\
             Agent Performance\n\
             Agent Name,Total Calls\n\
             \"Ann, \"\"A\"\"\nB\",2\n"
        );
    }
}
