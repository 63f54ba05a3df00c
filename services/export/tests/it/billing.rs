//! The billing usage export against real PostgreSQL: exact CSV header, seed 002's JSON
//! envelope, every scope checked against sums this test computes with its own SQL, the count
//! matching the rows while rows are being inserted, admins only, and the limit refusing
//! rather than cutting.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use haven_appdata::{DataKind, SeedOptions};
use haven_auth::Role;
use haven_proto::export::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

const HEADER: &str = "date,tenant_name,model_used,input_tokens,output_tokens,cost_cents";

fn billing(format: pb::ExportFormat, scope: pb::BillingScope) -> pb::BillingExportRequest {
    pb::BillingExportRequest {
        format: format as i32,
        start_date: "2026-03-01".into(),
        end_date: "2026-03-03".into(),
        scope: scope as i32,
    }
}

async fn fetch(c: &mut Client, req: pb::BillingExportRequest) -> Result<File, tonic::Status> {
    let stream = c.stream_billing_export(req).await?.into_inner();
    read_file(stream).await
}

/// One row as the test expects it: date, tenant, model, input, output, cost.
type Row = (String, String, String, i64, i64, i64);

/// Two tenants (one with a name a spreadsheet would run), events on three days inside the
/// range and on the days just outside it.
async fn usage(pool: &PgPool, volume: bool) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, name) in [(a, "=HYPERLINK(\"evil\"), Inc"), (b, "Bloom & Co.")] {
        sqlx::query("INSERT INTO app.tenants (id, name, slug) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(id.to_string())
            .execute(pool)
            .await
            .unwrap();
    }
    let events = [
        (
            a,
            "claude-sonnet-4-20250514",
            1500,
            800,
            5,
            "2026-03-01T00:00:00Z",
        ),
        (
            a,
            "claude-sonnet-4-20250514",
            2000,
            1200,
            8,
            "2026-03-01T23:59:59.999Z",
        ),
        (a, "gpt-4o-2024-08-06", 100, 50, 1, "2026-03-02T12:00:00Z"),
        (
            b,
            "claude-sonnet-4-20250514",
            700,
            300,
            3,
            "2026-03-02T08:00:00Z",
        ),
        (b, "=cmd|' /C calc'!A0", 10, 20, 30, "2026-03-03T23:00:00Z"),
        (
            a,
            "claude-sonnet-4-20250514",
            9,
            9,
            9,
            "2026-02-28T23:59:59Z",
        ),
        (
            b,
            "claude-sonnet-4-20250514",
            9,
            9,
            9,
            "2026-03-04T00:00:00Z",
        ),
    ];
    for (tenant, model, input, output, cost, at) in events {
        sqlx::query(
            "INSERT INTO app.usage_events (id, tenant_id, model, input_tokens, output_tokens, cost_cents, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(model)
        .bind(input)
        .bind(output)
        .bind(cost)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    // Volume on top, with the generator's hostile text in model names.
    for tenant in [a, b].into_iter().filter(|_| volume) {
        let mut o = SeedOptions::new(tenant, "ignored", 1500);
        o.kinds = vec![DataKind::Usage];
        o.hostile_ratio = 0.05;
        o.days = 2000;
        haven_appdata::seed(pool, &o).await.unwrap();
    }
    (a, b)
}

/// What the export must hold, summed here with SQL of this test's own (a window over the
/// events' day, grouped in Rust), independent of the service's statements.
async fn expected(pool: &PgPool, scope: pb::BillingScope) -> Vec<Row> {
    let events: Vec<(String, Uuid, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), e.tenant_id, t.name, e.model,
                e.input_tokens, e.output_tokens, e.cost_cents
         FROM app.usage_events e, app.tenants t
         WHERE t.id = e.tenant_id
           AND e.created_at AT TIME ZONE 'UTC' >= '2026-03-01'::timestamp
           AND e.created_at AT TIME ZONE 'UTC' < '2026-03-04'::timestamp",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: Vec<Row> = match scope {
        pb::BillingScope::All | pb::BillingScope::Unspecified => events
            .into_iter()
            .map(|(d, _, t, m, i, o, c)| (d, t, m, i, o, c))
            .collect(),
        pb::BillingScope::ByTenant | pb::BillingScope::ByModel => {
            let mut sums: std::collections::BTreeMap<(String, String, String), (i64, i64, i64)> =
                Default::default();
            for (d, id, t, m, i, o, c) in events {
                let key = if scope == pb::BillingScope::ByTenant {
                    (d, id.to_string(), t)
                } else {
                    (d, String::new(), m)
                };
                let s = sums.entry(key).or_default();
                *s = (s.0 + i, s.1 + o, s.2 + c);
            }
            sums.into_iter()
                .map(|((d, _, name), (i, o, c))| {
                    if scope == pb::BillingScope::ByTenant {
                        (d, name, String::new(), i, o, c)
                    } else {
                        (d, String::new(), name, i, o, c)
                    }
                })
                .collect()
        }
    };
    out.sort();
    out
}

/// A spreadsheet's view of a text cell: the `'` that neutralises a formula taken off.
fn unquote(cell: &str) -> String {
    cell.strip_prefix('\'').unwrap_or(cell).to_owned()
}

fn parse_csv(body: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(body).unwrap();
    assert_eq!(text.lines().next(), Some(HEADER));
    let mut reader = csv::Reader::from_reader(body);
    let mut rows: Vec<Row> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            for text_cell in [&r[1], &r[2]] {
                assert!(
                    !text_cell.starts_with(['=', '+', '@']) && !text_cell.starts_with("-"),
                    "not neutralised: {text_cell}"
                );
            }
            (
                r[0].to_owned(),
                unquote(&r[1]),
                unquote(&r[2]),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
                r[5].parse().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn parse_json(body: &[u8], scope: &str) -> (serde_json::Value, Vec<Row>) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    // Seed 002's envelope, its keys in its order.
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.starts_with("{\"metadata\":{\"exportedAt\":\""),
        "{}",
        &text[..80.min(text.len())]
    );
    let order = [
        "\"dateRange\":{\"start\":",
        "\"totalRecords\":",
        "\"scope\":",
        "},\"data\":[",
    ];
    let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{order:?} at {at:?}");
    assert_eq!(v.as_object().unwrap().len(), 2);
    let meta = &v["metadata"];
    assert!(meta["exportedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["scope"], scope);
    let data = v["data"].as_array().unwrap();
    assert_eq!(meta["totalRecords"].as_u64().unwrap(), data.len() as u64);
    let mut rows: Vec<Row> = data
        .iter()
        .map(|d| {
            let mut keys: Vec<&String> = d.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "costCents",
                    "date",
                    "inputTokens",
                    "modelUsed",
                    "outputTokens",
                    "tenantName"
                ]
            );
            (
                d["date"].as_str().unwrap().to_owned(),
                d["tenantName"].as_str().unwrap().to_owned(),
                d["modelUsed"].as_str().unwrap().to_owned(),
                d["inputTokens"].as_i64().unwrap(),
                d["outputTokens"].as_i64().unwrap(),
                d["costCents"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    (v, rows)
}

#[tokio::test]
async fn every_scope_in_csv_and_json_matches_the_events() {
    let s = start("").await;
    let (a, _) = usage(&s.db.pool, true).await;
    let mut admin = s.client_as(a, Role::Admin).await;
    let mut events = events(&s).await;
    for (scope, key) in [
        (pb::BillingScope::All, "all"),
        (pb::BillingScope::ByTenant, "by_tenant"),
        (pb::BillingScope::ByModel, "by_model"),
    ] {
        let want = expected(&s.db.pool, scope).await;
        assert!(want.len() >= 4, "{key}: the fixture spans the range");

        let (start, body, summary) = fetch(&mut admin, billing(pb::ExportFormat::Csv, scope))
            .await
            .unwrap();
        assert_eq!(start.content_type, "text/csv; charset=utf-8");
        let today = chrono::Utc::now().format("%Y-%m-%d");
        assert_eq!(start.filename, format!("billing-export-{today}.csv"));
        assert_eq!(parse_csv(&body), want, "{key} csv");
        assert_eq!(summary.record_count, want.len() as u64);
        assert!(!summary.truncated);

        let (start, body, _) = fetch(&mut admin, billing(pb::ExportFormat::Json, scope))
            .await
            .unwrap();
        assert_eq!(start.filename, format!("billing-export-{today}.json"));
        let (v, rows) = parse_json(&body, key);
        assert_eq!(rows, want, "{key} json");
        assert_eq!(
            v["metadata"]["dateRange"],
            serde_json::json!({"start": "2026-03-01", "end": "2026-03-03"})
        );
    }
    // The seed's own rows, spelled out: a day of one tenant, summed.
    let (_, body, _) = fetch(
        &mut admin,
        billing(pb::ExportFormat::Csv, pb::BillingScope::ByTenant),
    )
    .await
    .unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("2026-03-01,\"'=HYPERLINK(\"\"evil\"\"), Inc\",,")),
        "{text}"
    );

    // History records every one, under the admin's tenant, with its type.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let history = admin
        .list_export_history(pb::ListExportHistoryRequest {
            export_type: "billing_usage".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(history.len(), 7);
    assert!(history.iter().all(
        |e| e.export_type == "billing_usage" && e.status == pb::ExportStatus::Completed as i32
    ));
    // And an event for each, as for every export.
    for _ in 0..7 {
        let (subject, event) = next_event(&mut events).await;
        assert!(
            subject.ends_with("haven.exports.events.completed"),
            "{subject}"
        );
        let entry = event.entry.unwrap();
        assert_eq!(entry.export_type, "billing_usage");
        assert!(history.iter().any(|h| h.id == entry.id));
    }
    s.stop.fire();
}

#[tokio::test]
async fn the_count_matches_the_data_while_rows_are_inserted() {
    let s = start("").await;
    let (a, b) = usage(&s.db.pool, true).await;
    let pool = s.db.pool.clone();
    let writer = tokio::spawn(async move {
        // Batches of events inside the range, as fast as PostgreSQL takes them.
        loop {
            let inserted = sqlx::query(
                "INSERT INTO app.usage_events (id, tenant_id, model, input_tokens, output_tokens, cost_cents, created_at)
                 SELECT gen_random_uuid(), CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END, 'model-' || (g % 7), g, g, g % 13,
                        '2026-03-01'::timestamptz + (g % 250000) * interval '1 second'
                 FROM generate_series(1, 200) g",
            )
            .bind(a)
            .bind(b)
            .execute(&pool)
            .await;
            if inserted.is_err() {
                return;
            }
        }
    });
    let mut admin = s.client_as(a, Role::Admin).await;
    let mut totals = Vec::new();
    for round in 0..4 {
        for (scope, key) in [
            (pb::BillingScope::All, "all"),
            (pb::BillingScope::ByTenant, "by_tenant"),
            (pb::BillingScope::ByModel, "by_model"),
        ] {
            let (_, body, summary) = fetch(&mut admin, billing(pb::ExportFormat::Json, scope))
                .await
                .unwrap();
            let (v, rows) = parse_json(&body, key);
            assert_eq!(
                summary.record_count,
                rows.len() as u64,
                "round {round} {key}"
            );
            if scope == pb::BillingScope::All {
                totals.push(v["metadata"]["totalRecords"].as_u64().unwrap());
            }
        }
    }
    writer.abort();
    assert!(
        totals.windows(2).all(|w| w[0] < w[1]),
        "rows were being inserted throughout: {totals:?}"
    );
    s.stop.fire();
}

#[tokio::test]
async fn only_admins_export_billing_and_bad_input_names_the_field() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    for role in [Role::User, Role::Service] {
        let mut c = s.client_as(tenant, role).await;
        let err = fetch(
            &mut c,
            billing(pb::ExportFormat::Csv, pb::BillingScope::All),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{role:?}");
    }
    let mut admin = s.client_as(tenant, Role::Admin).await;
    for (req, field) in [
        (
            pb::BillingExportRequest {
                format: pb::ExportFormat::Pdf as i32,
                ..Default::default()
            },
            "format",
        ),
        (
            pb::BillingExportRequest {
                start_date: "03/01/2026".into(),
                ..Default::default()
            },
            "start_date",
        ),
        (
            pb::BillingExportRequest {
                start_date: "2026-03-05".into(),
                end_date: "2026-03-01".into(),
                ..Default::default()
            },
            "start_date",
        ),
        (
            pb::BillingExportRequest {
                scope: 9,
                ..Default::default()
            },
            "scope",
        ),
    ] {
        let err = fetch(&mut admin, req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    // No events at all: a valid, empty file in both formats.
    let (_, body, _) = fetch(
        &mut admin,
        billing(pb::ExportFormat::Csv, pb::BillingScope::All),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), format!("{HEADER}\n"));
    let (_, body, _) = fetch(
        &mut admin,
        billing(pb::ExportFormat::Json, pb::BillingScope::ByModel),
    )
    .await
    .unwrap();
    let (v, rows) = parse_json(&body, "by_model");
    assert!(rows.is_empty());
    assert_eq!(v["metadata"]["totalRecords"], 0);
    s.stop.fire();
}

#[tokio::test]
async fn a_range_over_the_limit_is_refused_not_cut() {
    let s = start("billing_usage=3").await;
    let (a, _) = usage(&s.db.pool, false).await;
    let mut admin = s.client_as(a, Role::Admin).await;
    let err = fetch(
        &mut admin,
        billing(pb::ExportFormat::Json, pb::BillingScope::All),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("shorter date range"),
        "{}",
        err.message()
    );
    // Five events in the range; summed per model they make four rows, per model on the
    // first day one, which fits.
    let err = fetch(
        &mut admin,
        billing(pb::ExportFormat::Csv, pb::BillingScope::ByModel),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let mut req = billing(pb::ExportFormat::Csv, pb::BillingScope::ByModel);
    req.end_date = "2026-03-01".into();
    let (_, body, _) = fetch(&mut admin, req).await.unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{HEADER}\n2026-03-01,,claude-sonnet-4-20250514,3500,2000,13\n")
    );
    s.stop.fire();
}
