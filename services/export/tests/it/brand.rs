//! The brand analytics report against real PostgreSQL: seed 003's sections in order and
//! wording, every number checked against SQL of this test's own, the brand's tenant only,
//! the empty cases, file names, phone numbers never out, and the PDF read back by poppler.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

use haven_proto::export::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

const PHONE: &str = "+1-555-0199-7788";

fn report(brand: Uuid, format: pb::ExportFormat, days: u32) -> pb::BrandReportRequest {
    pb::BrandReportRequest {
        brand_id: brand.to_string(),
        format: format as i32,
        days,
    }
}

async fn fetch(c: &mut Client, req: pb::BrandReportRequest) -> Result<File, tonic::Status> {
    let stream = c.stream_brand_report(req).await?.into_inner();
    read_file(stream).await
}

async fn exec(pool: &PgPool, sql: &str, binds: &[&(dyn ToString + Sync)]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for b in binds {
        q = q.bind(b.to_string());
    }
    q.execute(pool).await.unwrap();
}

async fn brand(pool: &PgPool, tenant: Uuid, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    exec(
        pool,
        "INSERT INTO app.brands (id, tenant_id, company_name) VALUES ($1::uuid, $2::uuid, $3)",
        &[&id, &tenant, &name],
    )
    .await;
    id
}

async fn persona(pool: &PgPool, tenant: Uuid, brand: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    exec(
        pool,
        "INSERT INTO app.personas (id, tenant_id, brand_id, name) VALUES ($1::uuid, $2::uuid, $3::uuid, 'Concierge')",
        &[&id, &tenant, &brand],
    )
    .await;
    id
}

async fn agent(pool: &PgPool, tenant: Uuid, persona: Uuid, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    exec(
        pool,
        "INSERT INTO app.agents (id, tenant_id, persona_id, name) VALUES ($1::uuid, $2::uuid, $3::uuid, $4)",
        &[&id, &tenant, &persona, &name],
    )
    .await;
    id
}

/// `n` calls of `agent`, `days_ago` days back, with the outcome, duration and cost derived
/// from their index; every one carries the phone number.
async fn calls(pool: &PgPool, tenant: Uuid, agent: Uuid, n: i64, days_ago: i64) {
    sqlx::query(
        "INSERT INTO app.call_logs (id, tenant_id, agent_id, outcome, duration_s, cost, phone_number, started_at)
         SELECT gen_random_uuid(), $1, $2,
                (ARRAY['completed', 'completed', 'failed', 'no_answer', 'voicemail'])[(1 + g % 5)::int],
                (g * 37) % 600, ((g * 13) % 500) / 100.0, $3,
                date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                    - $4 * interval '1 day' + (g % 80000) * interval '1 second'
         FROM generate_series(1, $5) g",
    )
    .bind(tenant)
    .bind(agent)
    .bind(PHONE)
    .bind(days_ago as f64)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// The CSV's lines, parsed: a section is its heading's line up to the next blank line.
fn sections(body: &[u8]) -> Vec<Vec<Vec<String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    // The csv crate skips blank lines; split on the known headings instead.
    let headings = [
        "Summary Metrics",
        "Calls by Outcome",
        "Agent Performance",
        "Daily Call Log",
    ];
    let mut out: Vec<Vec<Vec<String>>> = vec![Vec::new()];
    for r in records {
        if r.len() == 1 && headings.contains(&r[0].as_str()) {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(r);
    }
    out
}

fn rows(section: &[Vec<String>]) -> Vec<Vec<String>> {
    section[2..].to_vec()
}

#[tokio::test]
async fn the_csv_holds_seed_003s_sections_and_every_number_adds_up() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let pool = &s.db.pool;
    let b = brand(pool, tenant, "Acme \"Corp\" / ../x").await;
    let (p1, p2) = (
        persona(pool, tenant, b).await,
        persona(pool, tenant, b).await,
    );
    let names = [
        "=cmd|' /C calc'!A0",
        "Ann, \"A\"\nB",
        "Zoë 🎨",
        "Idle Agent",
    ];
    let a0 = agent(pool, tenant, p1, names[0]).await;
    let a1 = agent(pool, tenant, p2, names[1]).await;
    let a2 = agent(pool, tenant, p2, names[2]).await;
    agent(pool, tenant, p1, names[3]).await;
    calls(pool, tenant, a0, 40, 0).await;
    calls(pool, tenant, a1, 25, 3).await;
    calls(pool, tenant, a2, 11, 6).await;
    // Outside a 7-day report, inside a 30-day one.
    calls(pool, tenant, a2, 9, 20).await;
    // Another brand's calls never count.
    let other = brand(pool, tenant, "Other").await;
    let op = persona(pool, tenant, other).await;
    let oa = agent(pool, tenant, op, "Other agent").await;
    calls(pool, tenant, oa, 50, 1).await;

    let mut c = s.client(tenant).await;
    let mut events = events(&s).await;
    let (start, body, summary) = fetch(&mut c, report(b, pb::ExportFormat::Csv, 7))
        .await
        .unwrap();
    // Recorded and announced as every export is.
    let (subject, event) = next_event(&mut events).await;
    assert!(
        subject.ends_with("haven.exports.events.completed"),
        "{subject}"
    );
    let entry = event.entry.unwrap();
    assert_eq!(
        (
            entry.id.as_str(),
            entry.export_type.as_str(),
            entry.record_count
        ),
        (start.export_id.as_str(), "brand_analytics", 76)
    );
    assert_eq!(entry.format, pb::ExportFormat::Csv as i32);
    let stored = c
        .get_export_history_entry(pb::GetExportHistoryEntryRequest {
            id: start.export_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.record_count, 76);
    assert_eq!(stored.bytes, body.len() as u64);
    let today = chrono::Utc::now();
    assert_eq!(
        start.filename,
        format!("analytics_Acme_Corp__x_{}.csv", today.format("%Y%m%d"))
    );
    assert_eq!(start.content_type, "text/csv; charset=utf-8");
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(!text.contains(PHONE) && !text.contains("555"), "{text}");
    let first = (today - chrono::Duration::days(6)).format("%Y-%m-%d");
    let last = today.format("%Y-%m-%d");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Brand Analytics Report");
    assert_eq!(lines[1], "Brand Name,\"Acme \"\"Corp\"\" / ../x\"");
    assert_eq!(lines[2], format!("Date Range,{first} to {last}"));
    assert!(lines[3].starts_with("Generated,"));
    assert_eq!(lines[4], "");

    let parts = sections(&body);
    let headings: Vec<&str> = parts[1..].iter().map(|p| p[0][0].as_str()).collect();
    assert_eq!(
        headings,
        [
            "Summary Metrics",
            "Calls by Outcome",
            "Agent Performance",
            "Daily Call Log"
        ]
    );

    // The expected figures, from this test's own SQL over the same window.
    let (from, to) = (first.to_string(), last.to_string());
    let window = "(c.started_at AT TIME ZONE 'UTC')::date BETWEEN $2::date AND $3::date";
    // PostgreSQL's numeric rounding (half away from zero) for the expected text.
    let (total, rate, avg, cost): (i64, String, String, String) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*),
                round(100.0 * count(*) FILTER (WHERE outcome = 'completed') / count(*), 1)::text,
                round(sum(duration_s)::numeric / count(*), 1)::text,
                round(sum(cost), 2)::text
         FROM app.call_logs c WHERE c.agent_id = ANY($1) AND {window}"
        )))
        .bind(vec![a0, a1, a2])
        .bind(&from)
        .bind(&to)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(total, 76);
    assert_eq!(summary.record_count, 76);
    assert_eq!(
        parts[1][1..],
        [
            vec!["Total Calls".to_owned(), total.to_string()],
            vec!["Success Rate".to_owned(), format!("{rate}%")],
            vec!["Average Duration (seconds)".to_owned(), avg],
            vec!["Total Cost".to_owned(), format!("${cost}")],
        ]
    );

    assert_eq!(parts[2][1], ["Outcome", "Count"]);
    let outcomes: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT outcome, count(*) FROM app.call_logs c WHERE c.agent_id = ANY($1) AND {window}
         GROUP BY outcome ORDER BY count(*) DESC, outcome"
    )))
    .bind(vec![a0, a1, a2])
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await
    .unwrap();
    let label = |o: &str| match o {
        "completed" => "Completed",
        "failed" => "Failed",
        "no_answer" => "No Answer",
        "voicemail" => "Voicemail",
        other => panic!("{other}"),
    };
    assert_eq!(
        rows(&parts[2]),
        outcomes
            .iter()
            .map(|(o, n)| vec![label(o).to_owned(), n.to_string()])
            .collect::<Vec<_>>()
    );

    assert_eq!(
        parts[3][1],
        [
            "Agent Name",
            "Total Calls",
            "Completed Calls",
            "Success Rate"
        ]
    );
    let mut agents = Vec::new();
    for (id, name) in [(a0, names[0]), (a1, names[1]), (a2, names[2])] {
        let (n, done, rate): (i64, i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'completed'),
                    round(100.0 * count(*) FILTER (WHERE outcome = 'completed') / count(*), 1)::text
             FROM app.call_logs c WHERE c.agent_id = $1 AND {window}"
        )))
        .bind(id)
        .bind(&from)
        .bind(&to)
        .fetch_one(pool)
        .await
        .unwrap();
        agents.push(vec![
            // A formula is neutralised with a leading quote.
            if name.starts_with('=') {
                format!("'{name}")
            } else {
                name.to_owned()
            },
            n.to_string(),
            done.to_string(),
            format!("{rate}%"),
        ]);
    }
    agents.push(vec![
        "Idle Agent".into(),
        "0".into(),
        "0".into(),
        "0.0%".into(),
    ]);
    assert_eq!(rows(&parts[3]), agents);

    assert_eq!(parts[4][1], ["Date", "Call Count"]);
    let daily: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT to_char(c.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), count(*) FROM app.call_logs c
         WHERE c.agent_id = ANY($1) AND {window} GROUP BY 1 ORDER BY 1"
    )))
    .bind(vec![a0, a1, a2])
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        rows(&parts[4]),
        daily
            .iter()
            .map(|(d, n)| vec![d.clone(), n.to_string()])
            .collect::<Vec<_>>()
    );

    // Thirty days (the default) take in the older calls too.
    let (_, _, summary) = fetch(&mut c, report(b, pb::ExportFormat::Csv, 0))
        .await
        .unwrap();
    assert_eq!(summary.record_count, 85);
    s.stop.fire();
}

#[tokio::test]
async fn only_the_brands_tenant_sees_it_and_days_are_bounded() {
    let s = start("").await;
    let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let b = brand(&s.db.pool, owner, "Acme").await;
    let mut theirs = s.client(stranger).await;
    let foreign = fetch(&mut theirs, report(b, pb::ExportFormat::Csv, 30))
        .await
        .unwrap_err();
    let unknown = fetch(
        &mut theirs,
        report(Uuid::new_v4(), pb::ExportFormat::Pdf, 30),
    )
    .await
    .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::NotFound);
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(
        foreign.message().replace(&b.to_string(), "ID"),
        "no brand `ID`"
    );
    let mut mine = s.client(owner).await;
    for (req, field) in [
        (report(b, pb::ExportFormat::Csv, 366), "days"),
        (report(b, pb::ExportFormat::Json, 30), "format"),
        (report(b, pb::ExportFormat::Unspecified, 30), "format"),
        (
            pb::BrandReportRequest {
                brand_id: "not-a-uuid".into(),
                format: pb::ExportFormat::Csv as i32,
                days: 30,
            },
            "brand_id",
        ),
    ] {
        let err = fetch(&mut mine, req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    for days in [1, 365] {
        fetch(&mut mine, report(b, pb::ExportFormat::Csv, days))
            .await
            .unwrap();
    }
    s.stop.fire();
}

#[tokio::test]
async fn empty_brands_give_a_report_that_says_no_data() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let pool = &s.db.pool;
    let no_personas = brand(pool, tenant, "No Personas").await;
    let no_agents = brand(pool, tenant, "No Agents").await;
    persona(pool, tenant, no_agents).await;
    let no_calls = brand(pool, tenant, "No Calls").await;
    let p = persona(pool, tenant, no_calls).await;
    let a = agent(pool, tenant, p, "Quiet").await;
    // Calls, but long before the range.
    calls(pool, tenant, a, 5, 100).await;
    let mut c = s.client(tenant).await;
    for (b, agents_listed) in [(no_personas, false), (no_agents, false), (no_calls, true)] {
        let (_, body, summary) = fetch(&mut c, report(b, pb::ExportFormat::Csv, 30))
            .await
            .unwrap();
        assert_eq!(summary.record_count, 0);
        let parts = sections(&body);
        assert_eq!(parts[1][1], ["Total Calls", "0"]);
        assert_eq!(parts[1][2], ["Success Rate", "0.0%"]);
        assert_eq!(parts[1][3], ["Average Duration (seconds)", "0.0"]);
        assert_eq!(parts[1][4], ["Total Cost", "$0.00"]);
        assert_eq!(parts[2][1], ["No Data"]);
        assert_eq!(parts[4][1], ["No Data"]);
        if agents_listed {
            assert_eq!(parts[3][2], ["Quiet", "0", "0", "0.0%"]);
        } else {
            assert_eq!(parts[3][1], ["No Data"]);
        }
    }
    s.stop.fire();
}

#[tokio::test]
async fn file_names_keep_only_letters_digits_and_underscores() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let mut c = s.client(tenant).await;
    let date = chrono::Utc::now().format("%Y%m%d");
    for (name, part) in [
        ("Acme Corp", "Acme_Corp"),
        ("\"quoted\"", "quoted"),
        ("a/b\\c", "abc"),
        ("../../etc/passwd", "etcpasswd"),
        ("..", "brand"),
        ("🎨🎨", "brand"),
        ("日本語 ブランド", "_"),
        ("Café\r\nX", "CafX"),
    ] {
        let b = brand(&s.db.pool, tenant, name).await;
        let (start, _, _) = fetch(&mut c, report(b, pb::ExportFormat::Csv, 30))
            .await
            .unwrap();
        assert_eq!(
            start.filename,
            format!("analytics_{part}_{date}.csv"),
            "{name:?}"
        );
    }
    s.stop.fire();
}

/// Runs a poppler tool on `pdf`; poppler-utils is installed by `./deploy/test`.
fn poppler(tool: &str, args: &[&str], after: &[&str], pdf: &[u8]) -> String {
    let dir = tempfile_dir();
    let path = dir.join("report.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new(tool)
        .args(args)
        .arg(&path)
        .args(after)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} is missing ({e}); install poppler-utils (./deploy/test does)")
        });
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout).unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("haven-report-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_pdf_reads_back_with_every_agent_numbered_pages_and_embedded_fonts() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let pool = &s.db.pool;
    let b = brand(pool, tenant, "Acme Analytics").await;
    let p = persona(pool, tenant, b).await;
    let mut names = Vec::new();
    for i in 0..200 {
        let name = format!("Agent-{i:03}");
        let a = agent(pool, tenant, p, &name).await;
        calls(pool, tenant, a, 1 + i % 4, i % 20).await;
        names.push(name);
    }
    let mut c = s.client(tenant).await;
    let (start, pdf, summary) = fetch(&mut c, report(b, pb::ExportFormat::Pdf, 30))
        .await
        .unwrap();
    assert_eq!(start.content_type, "application/pdf");
    assert!(
        start.filename.starts_with("analytics_Acme_Analytics_") && start.filename.ends_with(".pdf")
    );
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(summary.bytes, pdf.len() as u64);

    let text = poppler("pdftotext", &["-layout"], &["-"], &pdf);
    assert!(!text.contains(PHONE) && !text.contains("555"));
    for needle in [
        "Brand Analytics Report",
        "Acme Analytics",
        "Summary Metrics",
        "Calls by Outcome",
        "Agent Performance",
        "Daily Call Log",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    let total: i64 = (0..200).map(|i| 1 + i % 4).sum();
    assert_eq!(summary.record_count, total as u64);
    assert!(text.contains(&format!("{total}")), "the total {total}");
    for name in &names {
        assert!(text.contains(name.as_str()), "{name} missing");
    }
    // Several pages, each numbered "Page N of M"; the agents' header repeats on every page
    // the agents' table continues onto.
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    let m = pages.len();
    assert!(m >= 3, "{m} pages");
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.contains(&format!("Page {} of {m}", i + 1)),
            "page {} is not numbered: {page}",
            i + 1
        );
    }
    let with_agents: Vec<&&str> = pages.iter().filter(|p| p.contains("Agent-")).collect();
    assert!(with_agents.len() >= 2);
    for page in with_agents {
        assert!(page.contains("Agent Name"), "header not repeated: {page}");
    }

    let fonts = poppler("pdffonts", &[], &[], &pdf);
    let rows: Vec<&str> = fonts.lines().skip(2).collect();
    assert!(!rows.is_empty(), "{fonts}");
    for row in rows {
        // name type encoding emb sub uni object ID
        let cols: Vec<&str> = row.split_whitespace().collect();
        let emb = cols[cols.len() - 5];
        assert_eq!(emb, "yes", "not embedded: {row}");
    }
    s.stop.fire();
}
