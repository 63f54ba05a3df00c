use haven_report_pdf::render;

use crate::common::{agent_rows, report, text};

#[test]
fn long_tables_span_pages_with_page_numbers_and_repeated_headers() {
    let pdf = render(&report("Acme", agent_rows(200))).unwrap();
    let t = text(&pdf);
    let pages: Vec<&str> = t.split('\u{c}').filter(|p| !p.trim().is_empty()).collect();
    let m = pages.len();
    assert!(m >= 3, "200 rows on {m} pages");
    for (i, page) in pages.iter().enumerate() {
        let n = i + 1;
        assert!(
            page.contains(&format!("Page {n} of {m}")),
            "page {n} is not numbered {n} of {m}:\n{page}"
        );
        assert!(page.contains("Generated 2026-12-05 22:59 UTC"), "{page}");
        if page.contains("Agent-") {
            let header = page.lines().any(|line| {
                ["Agent Name", "Total Calls", "Success Rate", "Total Cost"]
                    .iter()
                    .all(|cell| line.contains(cell))
            });
            assert!(header, "page {n} has rows but no header row:\n{page}");
        }
    }
    for i in 0..200 {
        assert!(t.contains(&format!("Agent-{i:03}")), "Agent-{i:03} missing");
    }
}
