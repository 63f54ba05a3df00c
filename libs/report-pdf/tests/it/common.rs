use std::io::ErrorKind;
use std::process::Command;

use haven_report_pdf::{Report, Section};

/// Runs a poppler tool with `options` on `pdf` and returns what it printed.
pub fn poppler(tool: &str, options: &[&str], pdf: &[u8]) -> String {
    let file = tempfile::Builder::new().suffix(".pdf").tempfile().unwrap();
    std::fs::write(file.path(), pdf).unwrap();
    let mut command = Command::new(tool);
    command.args(options).arg(file.path());
    if tool == "pdftotext" {
        command.arg("-"); // to standard output, not a file beside the PDF
    }
    let out = match command.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{tool} is not installed: install poppler-utils (apt-get install -y poppler-utils; \
             ./deploy/test does)"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    };
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The PDF's text, laid out as on the page; pages end with a form feed.
pub fn text(pdf: &[u8]) -> String {
    poppler("pdftotext", &["-layout", "-enc", "UTF-8"], pdf)
}

pub fn agents(rows: Vec<Vec<String>>) -> Section {
    Section {
        heading: "Agent Performance".into(),
        columns: vec![
            "Agent Name".into(),
            "Total Calls".into(),
            "Success Rate".into(),
            "Total Cost".into(),
        ],
        rows,
        empty: "No Data".into(),
    }
}

/// A brand report like the export service's: summary, an empty section, then agents.
pub fn report(brand: &str, agent_rows: Vec<Vec<String>>) -> Report {
    Report {
        title: "Brand Analytics Report".into(),
        facts: vec![
            ("Brand Name".into(), brand.into()),
            ("Date Range".into(), "2026-11-05 to 2026-12-05".into()),
        ],
        sections: vec![
            Section {
                heading: "Summary Metrics".into(),
                columns: vec!["Metric".into(), "Value".into()],
                rows: vec![
                    vec!["Total Calls".into(), "1,234".into()],
                    vec!["Total Cost".into(), "$56.78".into()],
                ],
                empty: "No Data".into(),
            },
            Section {
                heading: "Calls by Outcome".into(),
                columns: vec!["Result".into(), "Count".into()],
                rows: vec![],
                empty: "No Data".into(),
            },
            agents(agent_rows),
        ],
        generated: "Generated 2026-12-05 22:59 UTC".into(),
    }
}

pub fn agent_rows(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| {
            vec![
                format!("Agent-{i:03}"),
                format!("{}", i * 7),
                format!("{}.5%", i % 100),
                format!("${i}.25"),
            ]
        })
        .collect()
}
