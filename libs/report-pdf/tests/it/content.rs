use haven_report_pdf::render;

use crate::common::{agent_rows, poppler, report, text};

#[test]
fn title_facts_headings_and_every_cell_read_back() {
    let pdf = render(&report("Acme Corp", agent_rows(3))).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let t = text(&pdf);
    for needle in [
        "Brand Analytics Report",
        "Brand Name",
        "Acme Corp",
        "Date Range",
        "2026-11-05 to 2026-12-05",
        "Summary Metrics",
        "Metric",
        "Value",
        "Total Calls",
        "1,234",
        "Total Cost",
        "$56.78",
        "Calls by Outcome",
        "Agent Performance",
        "Agent Name",
        "Success Rate",
        "Generated 2026-12-05 22:59 UTC",
        "Page 1 of 1",
    ] {
        assert!(t.contains(needle), "{needle:?} missing from:\n{t}");
    }
    for row in agent_rows(3) {
        for cell in row {
            assert!(t.contains(&cell), "{cell:?} missing from:\n{t}");
        }
    }
}

#[test]
fn an_empty_section_says_so_and_draws_no_table() {
    let t = text(&render(&report("Acme", agent_rows(2))).unwrap());
    let after = t.split("Calls by Outcome").nth(1).unwrap();
    let section = after.split("Agent Performance").next().unwrap();
    assert!(section.contains("No Data"), "{section}");
    assert!(
        !section.contains("Result") && !section.contains("Count"),
        "a header row for an empty section:\n{section}"
    );
    // A section with rows shows its table, not the empty text.
    let agents = t.split("Agent Performance").nth(1).unwrap();
    assert!(agents.contains("Agent Name") && !agents.contains("No Data"));
}

/// Brand and agent names come from users: Typst markup, code, math, escapes, spreadsheet
/// formulas, bidi controls, CJK and emoji must print as written, never be interpreted.
#[test]
fn hostile_text_is_printed_literally() {
    // Each short enough for one line, so the extracted text holds it unbroken.
    let hostile = [
        "*bold* _em_ #let x = 1 $x$",
        r#"[link] ] \ \u{41} "q" 'a' #{} #[x]"#,
        "=cmd|' /C calc'!A0 @ref <lbl>",
        "// no comment /* */ `raw` ~ -- ---",
        "#set text(red) <b>&amp; ...",
    ];
    let agent = "*bold* #let x = 1 $x$ \u{202E}rtl 汉字 😀";
    let mut rows = agent_rows(2);
    rows.push(vec![
        agent.into(),
        "9".into(),
        "1.0%".into(),
        "$1.00".into(),
    ]);
    for (i, name) in hostile.iter().enumerate() {
        rows.push(vec![
            (*name).into(),
            i.to_string(),
            "2.0%".into(),
            "$2.00".into(),
        ]);
    }
    let mut r = report(hostile[0], rows);
    r.facts.extend(
        hostile[1..]
            .iter()
            .map(|h| ("Note".to_owned(), (*h).to_owned())),
    );
    r.sections[2].heading = format!("Agents {}", hostile[2]);
    let t = text(&render(&r).unwrap());
    // In a fact and in a cell; the third is also the heading.
    for (i, part) in hostile.iter().enumerate() {
        let times = if i == 2 { 3 } else { 2 };
        assert_eq!(t.matches(part).count(), times, "{part:?} in:\n{t}");
    }
    // DejaVu Sans has no CJK or emoji glyphs, and the override reverses what follows it:
    // the ASCII before them reads back verbatim, and the next cell is untouched.
    let line = t
        .lines()
        .find(|l| l.contains("*bold* #let x = 1 $x$ "))
        .unwrap();
    let tail: Vec<&str> = line.split_whitespace().rev().take(3).collect();
    assert_eq!(tail, ["$1.00", "1.0%", "9"], "{line}");
}

#[test]
fn characters_outside_the_font_do_not_fail_the_render() {
    let rows = vec![vec![
        "汉字 😀 עברית العربية Ελληνικά Кириллица".into(),
        "1".into(),
        "2%".into(),
        "$3".into(),
    ]];
    let t = text(&render(&report("Ünïcødé ẞ", rows)).unwrap());
    // DejaVu Sans covers Latin, Greek, Cyrillic, Hebrew and Arabic.
    for part in ["Ünïcødé ẞ", "Ελληνικά", "Кириллица"] {
        assert!(t.contains(part), "{part:?} missing from:\n{t}");
    }
}

/// A name with no break in it wraps inside its cell instead of running over the columns
/// beside it and off the page, and reads back whole, with nothing added.
#[test]
fn a_long_name_without_spaces_wraps_inside_its_cell() {
    let name: String = (0..120)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let rows = vec![vec![
        name.clone(),
        "21".into(),
        "3.5%".into(),
        "$3.25".into(),
    ]];
    let pdf = render(&report("Acme", rows)).unwrap();
    let words = words(&poppler("pdftotext", &["-bbox", "-enc", "UTF-8"], &pdf));
    assert!(words.len() > 20, "{words:?}");
    // A4 is 595.28pt wide; the right margin is 1.6cm.
    let right = 595.28 - 1.6 / 2.54 * 72.0;
    for (word, x_max) in &words {
        assert!(
            *x_max <= right + 0.5,
            "{word:?} ends at {x_max}pt, past {right}pt"
        );
    }
    let pieces: Vec<&str> = words
        .iter()
        .map(|(w, _)| w.as_str())
        .filter(|w| name.contains(w))
        .collect();
    assert!(pieces.len() > 1, "not wrapped: {pieces:?}");
    assert_eq!(pieces.concat(), name);
}

/// Each word of `pdftotext -bbox` output with its right edge in points.
fn words(bbox: &str) -> Vec<(String, f64)> {
    bbox.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("<word ")?;
            let x_max = rest
                .split("xMax=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            let word = rest.split('>').nth(1)?.strip_suffix("</word")?;
            Some((word.to_owned(), x_max))
        })
        .collect()
}
