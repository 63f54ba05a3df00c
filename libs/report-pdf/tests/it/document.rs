use haven_report_pdf::{PdfError, render};

use crate::common::{agent_rows, poppler, report};

#[test]
fn every_font_is_embedded() {
    let pdf = render(&report("Acme 汉字", agent_rows(5))).unwrap();
    let fonts = poppler("pdffonts", &[], &pdf);
    // Two header lines, then: name type encoding emb sub uni object ID.
    let rows: Vec<&str> = fonts.lines().skip(2).collect();
    assert!(!rows.is_empty(), "no fonts:\n{fonts}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[cols.len() - 5], "yes", "not embedded: {row}");
        assert!(row.contains("DejaVuSans"), "another font: {row}");
    }
}

#[test]
fn the_document_title_is_the_reports() {
    let mut r = report("Acme", agent_rows(1));
    r.title = "Report #1 *for* $Acme$".into();
    let info = poppler("pdfinfo", &["-enc", "UTF-8"], &render(&r).unwrap());
    let title = info.lines().find_map(|l| l.strip_prefix("Title:"));
    assert_eq!(
        title.map(str::trim),
        Some("Report #1 *for* $Acme$"),
        "{info}"
    );
}

#[test]
fn the_same_report_gives_the_same_bytes() {
    let r = report("Acme", agent_rows(40));
    assert!(render(&r).unwrap() == render(&r).unwrap());
}

#[test]
fn a_row_that_does_not_fit_the_columns_is_refused() {
    let mut rows = agent_rows(3);
    rows[1].pop();
    match render(&report("Acme", rows)) {
        Err(PdfError::RowShape {
            section,
            row,
            cells,
            columns,
        }) => assert_eq!(
            (section.as_str(), row, cells, columns),
            ("Agent Performance", 1, 3, 4)
        ),
        other => panic!("{other:?}"),
    }
}
