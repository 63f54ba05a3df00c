//! Exports against real PostgreSQL: every type × format, field selection, date ranges,
//! limits and truncation, empty results, hostile text, tenant isolation, cancellation.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::Duration;

use haven_appdata::{DataKind, HOSTILE_TEXT, SeedOptions};
use haven_proto::export::v1 as pb;
use uuid::Uuid;

use crate::harness::*;

async fn rows(
    client: &mut Client,
    req: pb::ExportRequest,
) -> (pb::RowsHeader, Vec<pb::Row>, pb::RowsTrailer) {
    read_rows(client.stream_rows(req).await.unwrap().into_inner()).await
}

async fn read_rows(
    mut stream: tonic::Streaming<pb::StreamRowsResponse>,
) -> (pb::RowsHeader, Vec<pb::Row>, pb::RowsTrailer) {
    use pb::stream_rows_response::Part;
    let (mut header, mut out, mut trailer) = (None, Vec::new(), None);
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.part.unwrap() {
            Part::Header(h) => header = Some(h),
            Part::Batch(b) => out.extend(b.rows),
            Part::Trailer(t) => trailer = Some(t),
        }
    }
    (header.unwrap(), out, trailer.unwrap())
}

fn parse_csv(body: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[tokio::test]
async fn catalogue_is_the_seeds() {
    let s = start("").await;
    let mut c = s.client(Uuid::new_v4()).await;
    let types = c
        .list_export_types(pb::ListExportTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .export_types;
    let keys: Vec<&str> = types.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "leads",
            "customers",
            "orders",
            "pins",
            "quotes",
            "assets",
            "analytics"
        ]
    );
    let orders = &types[2];
    assert_eq!(
        (
            orders.label.as_str(),
            orders.default_date_range_days,
            orders.max_records
        ),
        ("Orders", 90, 100_000)
    );
    let defaults: Vec<&str> = orders
        .fields
        .iter()
        .filter(|f| f.default)
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(
        defaults,
        [
            "id",
            "shopify_order_id",
            "customer_email",
            "total",
            "subtotal",
            "discount_total",
            "item_count",
            "status",
            "created_at"
        ]
    );
    assert_eq!(types[6].max_records, 1000);
    s.stop.fire();
}

#[tokio::test]
async fn every_type_in_every_format() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    s.seed(tenant, 150, 0.2).await;
    let mut c = s.client(tenant).await;
    for ty in [
        "leads",
        "customers",
        "orders",
        "pins",
        "quotes",
        "assets",
        "analytics",
    ] {
        let (header, typed, trailer) =
            rows(&mut c, request(ty, pb::ExportFormat::Unspecified)).await;
        let n = typed.len();
        assert_eq!(trailer.record_count as usize, n);
        assert!(n > 0, "{ty} exported nothing");
        assert!(typed.iter().all(|r| r.values.len() == header.columns.len()));

        let (start, body, summary) = export(&mut c, request(ty, pb::ExportFormat::Csv))
            .await
            .unwrap();
        assert_eq!(start.content_type, "text/csv; charset=utf-8");
        assert!(
            start.filename.starts_with(&format!("{ty}-export-"))
                && start.filename.ends_with(".csv")
        );
        let (labels, records) = parse_csv(&body);
        assert_eq!(labels.len(), header.columns.len());
        assert_eq!(records.len(), n, "{ty} csv");
        assert_eq!(
            (summary.record_count as usize, summary.bytes as usize),
            (n, body.len())
        );

        let (_, body, summary) = export(&mut c, request(ty, pb::ExportFormat::Json))
            .await
            .unwrap();
        let json: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (json.len(), summary.record_count as usize),
            (n, n),
            "{ty} json"
        );
        assert_eq!(json[0].len(), header.columns.len());

        let (_, body, _) = export(&mut c, request(ty, pb::ExportFormat::Ndjson))
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), n, "{ty} ndjson");
    }
    // Derived fields: zeros and 'none' where nothing joins.
    let (h, typed, _) = rows(
        &mut c,
        pb::ExportRequest {
            export_type: "pins".into(),
            fields: vec!["impressions".into(), "engagement_rate".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(h.columns[1].value_type, pb::ValueType::Decimal as i32);
    assert!(
        typed
            .iter()
            .any(|r| matches!(r.values[0].kind, Some(pb::value::Kind::Int64Value(0))))
    );
    let (_, typed, _) = rows(
        &mut c,
        pb::ExportRequest {
            export_type: "customers".into(),
            fields: vec!["loyalty_tier".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(
        typed
            .iter()
            .any(|r| r.values[0].kind == Some(pb::value::Kind::StringValue("none".into())))
    );
    s.stop.fire();
}

/// Neutralised as a CSV cell of free text must be.
fn neutralised(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// A typed value as a CSV cell: decimals and dates as sent, timestamps in RFC 3339 UTC with
/// the fraction trimmed, free text (but ids) neutralised.
fn typed_cell(value: &pb::Value, column: &pb::Column) -> String {
    use pb::value::Kind;
    match value.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => String::new(),
        Some(Kind::StringValue(s)) if column.key == "id" => s.clone(),
        Some(Kind::StringValue(s)) => neutralised(s),
        Some(Kind::Int64Value(n)) => n.to_string(),
        Some(Kind::DecimalValue(d)) | Some(Kind::DateValue(d)) => d.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::TimestampValue(t)) => {
            let at = chrono::DateTime::from_timestamp(t.seconds, 0).unwrap();
            let fraction = format!("{:06}", t.nanos / 1000);
            let fraction = fraction.trim_end_matches('0');
            let dot = if fraction.is_empty() { "" } else { "." };
            format!("{}{dot}{fraction}Z", at.format("%Y-%m-%dT%H:%M:%S"))
        }
    }
}

/// A JSON export's value, as its raw text, as a CSV cell: PostgreSQL's own text of numbers
/// (`numeric_out`), dates and times as the JSON path writes them.
fn json_cell(raw: &serde_json::value::RawValue, column: &pb::Column) -> String {
    let raw = raw.get();
    if raw == "null" {
        return String::new();
    }
    if !raw.starts_with('"') {
        return raw.to_owned();
    }
    let s: String = serde_json::from_str(raw).unwrap();
    if column.value_type == pb::ValueType::String as i32 && column.key != "id" {
        neutralised(&s)
    } else {
        s
    }
}

/// CSV and StreamRows read PostgreSQL's binary COPY and write the text in the export
/// service; the JSON export's values are PostgreSQL's own text. Every cell of every type
/// must agree with it.
#[tokio::test]
async fn csv_and_typed_rows_match_postgresqls_own_text_in_every_type() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    s.seed(tenant, 300, 0.3).await;
    sqlx::query(
        "INSERT INTO app.customer_orders (id, tenant_id, total, subtotal, discount_total, item_count, status, created_at) VALUES
         ($1, $2, 0, 0.001, 1234567890.5, 0, 'a\tb\nc\\d\"e', '2024-02-29 23:59:59.5+00'),
         ($3, $2, -0.50, 10000, 99999.99, -7, '', '2026-01-01 00:00:00+00')",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(Uuid::new_v4())
    .execute(&s.db.pool)
    .await
    .unwrap();
    let mut c = s.client(tenant).await;
    let mut compared = 0;
    for ty in [
        "leads",
        "customers",
        "orders",
        "pins",
        "quotes",
        "assets",
        "analytics",
    ] {
        let mut req = request(ty, pb::ExportFormat::Unspecified);
        req.start_time = Some(haven_proto::time::timestamp(
            chrono::Utc::now() - chrono::Duration::days(3650),
        ));
        let (header, typed, _) = rows(&mut c, req.clone()).await;
        let cols = &header.columns;
        let mut from_rows: Vec<Vec<String>> = typed
            .iter()
            .map(|r| {
                r.values
                    .iter()
                    .zip(cols)
                    .map(|(v, c)| typed_cell(v, c))
                    .collect()
            })
            .collect();
        req.format = pb::ExportFormat::Json as i32;
        let (_, body, _) = export(&mut c, req.clone()).await.unwrap();
        let objects: Vec<HashMap<String, Box<serde_json::value::RawValue>>> =
            serde_json::from_slice(&body).unwrap();
        let mut from_json: Vec<Vec<String>> = objects
            .iter()
            .map(|o| cols.iter().map(|c| json_cell(&o[&c.key], c)).collect())
            .collect();
        req.format = pb::ExportFormat::Csv as i32;
        let (_, body, _) = export(&mut c, req).await.unwrap();
        let (_, mut from_csv) = parse_csv(&body);
        from_json.sort();
        from_csv.sort();
        from_rows.sort();
        assert_eq!(from_csv.len(), from_json.len(), "{ty}");
        for ((csv, rows), json) in from_csv.iter().zip(&from_rows).zip(&from_json) {
            assert_eq!(csv, json, "{ty}: CSV against PostgreSQL's text");
            assert_eq!(rows, json, "{ty}: StreamRows against PostgreSQL's text");
        }
        compared += from_csv.len();
    }
    assert!(compared > 1000, "only {compared} rows compared");
    s.stop.fire();
}

#[tokio::test]
async fn hostile_text_round_trips_and_formulas_are_neutralised() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let mut expected = HashMap::new();
    let mut values: Vec<String> = HOSTILE_TEXT.iter().map(|s| s.to_string()).collect();
    values.push("-42".into());
    values.push("12.5".into());
    for (i, v) in values.iter().enumerate() {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO app.leads (id, tenant_id, email, segment, created_at) VALUES ($1, $2, $3, $4, now() - $5 * interval '1 second')")
            .bind(id)
            .bind(tenant)
            .bind(format!("lead{i}@example.com"))
            .bind(v)
            .bind(i as i64)
            .execute(&s.db.pool)
            .await
            .unwrap();
        expected.insert(id.to_string(), v.clone());
    }
    sqlx::query("INSERT INTO app.customer_orders (id, tenant_id, total, subtotal, discount_total, item_count, status) VALUES ($1, $2, -12.50, 10, 22.50, 1, '=cmd|calc')")
        .bind(Uuid::new_v4())
        .bind(tenant)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let mut c = s.client(tenant).await;
    let mut req = request("leads", pb::ExportFormat::Csv);
    req.fields = vec!["id".into(), "segment".into()];
    req.bom = true;
    let (_, body, _) = export(&mut c, req.clone()).await.unwrap();
    assert!(body.starts_with("\u{feff}".as_bytes()));
    let (header, records) = parse_csv(&body[3..]);
    assert_eq!(header, ["ID", "Segment"]);
    for r in &records {
        let original = &expected[&r[0]];
        let risky = original.starts_with(['=', '+', '-', '@', '\t', '\r'])
            && original.parse::<f64>().is_err();
        let want = if risky {
            format!("'{original}")
        } else {
            original.clone()
        };
        assert_eq!(&r[1], &want, "csv cell for {original:?}");
    }
    assert_eq!(records.len(), expected.len());

    req.format = pb::ExportFormat::Json as i32;
    req.bom = false;
    let (_, body, _) = export(&mut c, req).await.unwrap();
    let json: Vec<HashMap<String, serde_json::Value>> = serde_json::from_slice(&body).unwrap();
    for obj in &json {
        assert_eq!(
            obj["segment"].as_str().unwrap(),
            expected[obj["id"].as_str().unwrap()],
            "json is exact"
        );
    }

    // A negative amount stays a number; a formula in text does not stay a formula.
    let mut req = request("orders", pb::ExportFormat::Csv);
    req.fields = vec!["total".into(), "status".into()];
    let (_, body, _) = export(&mut c, req).await.unwrap();
    let (_, records) = parse_csv(&body);
    assert_eq!(
        records,
        vec![vec!["-12.50".to_owned(), "'=cmd|calc".to_owned()]]
    );
    s.stop.fire();
}

#[tokio::test]
async fn fields_ranges_limits_truncation_and_empty_results() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    s.seed(tenant, 300, 0.0).await;
    let mut c = s.client(tenant).await;

    let mut req = request("orders", pb::ExportFormat::Csv);
    req.fields = vec!["customer_email".into(), "id".into()];
    let (start, body, _) = export(&mut c, req).await.unwrap();
    assert_eq!(start.fields, ["customer_email", "id"]);
    assert_eq!(parse_csv(&body).0, ["Customer Email", "ID"]);

    // Newest first, all within the asked range.
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::days(10);
    let mut req = request("orders", pb::ExportFormat::Unspecified);
    req.fields = vec!["created_at".into()];
    req.start_time = Some(prost_types::Timestamp {
        seconds: from.timestamp(),
        nanos: 0,
    });
    let (_, typed, trailer) = rows(&mut c, req).await;
    let times: Vec<i64> = typed
        .iter()
        .map(|r| match &r.values[0].kind {
            Some(pb::value::Kind::TimestampValue(t)) => t.seconds,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(!times.is_empty() && times.len() < 300 && !trailer.truncated);
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(times.iter().all(|t| *t >= from.timestamp()));

    // A limit that cuts says so; one that does not, does not.
    let mut req = request("orders", pb::ExportFormat::Ndjson);
    req.limit = 7;
    let (start, body, summary) = export(&mut c, req.clone()).await.unwrap();
    assert_eq!(
        (start.limit, summary.record_count, summary.truncated),
        (7, 7, true)
    );
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 7);
    req.limit = 10_000;
    let (_, _, summary) = export(&mut c, req).await.unwrap();
    assert_eq!((summary.record_count, summary.truncated), (300, false));
    // maxRecords caps what is asked.
    let mut req = request("analytics", pb::ExportFormat::Json);
    req.limit = 50_000;
    assert_eq!(export(&mut c, req).await.unwrap().0.limit, 1000);

    // Nothing to export: still a well-formed file.
    let mut empty = s.client(Uuid::new_v4()).await;
    let (_, body, summary) = export(&mut empty, request("leads", pb::ExportFormat::Json))
        .await
        .unwrap();
    assert_eq!((body.as_slice(), summary.record_count), (&b"[]\n"[..], 0));
    let (_, body, _) = export(&mut empty, request("leads", pb::ExportFormat::Csv))
        .await
        .unwrap();
    let (header, records) = parse_csv(&body);
    assert_eq!((header.len(), records.len()), (7, 0));

    // Bad requests name the field.
    for (req, field) in [
        (
            pb::ExportRequest {
                export_type: "orders".into(),
                format: 1,
                fields: vec!["password".into()],
                ..Default::default()
            },
            "fields",
        ),
        (
            pb::ExportRequest {
                export_type: "invoices".into(),
                format: 1,
                ..Default::default()
            },
            "export_type",
        ),
        (
            pb::ExportRequest {
                export_type: "orders".into(),
                format: 0,
                ..Default::default()
            },
            "format",
        ),
        (
            pb::ExportRequest {
                export_type: "orders".into(),
                format: 1,
                start_time: Some(prost_types::Timestamp {
                    seconds: now.timestamp(),
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: now.timestamp() - 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "start_time",
        ),
    ] {
        let err = export(&mut c, req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }

    // History: newest first, this tenant only.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let history = c
        .list_export_history(pb::ListExportHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(history.len() >= 5);
    assert!(history.iter().all(
        |e| e.tenant_id == tenant.to_string() && e.status == pb::ExportStatus::Completed as i32
    ));
    assert!(history.iter().any(|e| e.truncated && e.record_count == 7));
    s.stop.fire();
}

#[tokio::test]
async fn tenant_b_never_sees_tenant_a_rows() {
    let s = start("").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    s.seed(a, 100, 0.1).await;
    s.seed(b, 50, 0.1).await;
    let mut c = s.client(b).await;
    for ty in ["leads", "customers", "orders", "pins", "quotes", "assets"] {
        let mut req = request(ty, pb::ExportFormat::Json);
        req.fields = vec!["id".into()];
        let (_, body, _) = export(&mut c, req).await.unwrap();
        let json: Vec<HashMap<String, String>> = serde_json::from_slice(&body).unwrap();
        assert_eq!(json.len(), 50, "{ty}");
        let table = match ty {
            "orders" => "customer_orders",
            t => t,
        };
        let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM app.{table} WHERE id::text = ANY($1) AND tenant_id <> $2"
        )))
        .bind(json.iter().map(|o| o["id"].clone()).collect::<Vec<_>>())
        .bind(b)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        assert_eq!(foreign, 0, "{ty}");
    }
    s.stop.fire();
}

#[tokio::test]
async fn a_caller_going_away_stops_the_query() {
    let s = start("orders=1000000").await;
    let tenant = Uuid::new_v4();
    let mut o = SeedOptions::new(tenant, "Big", 200_000);
    o.kinds = vec![DataKind::Orders];
    o.days = 30;
    haven_appdata::seed(&s.db.pool, &o).await.unwrap();
    let mut c = s.client(tenant).await;
    let mut req = request("orders", pb::ExportFormat::Csv);
    req.limit = 1_000_000;
    let mut stream = c.stream_export(req).await.unwrap().into_inner();
    stream.message().await.unwrap();
    stream.message().await.unwrap();
    let copies = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY (SELECT%' AND state = 'active'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(copies().await, 1, "the export query runs while we read");
    drop(stream);
    drop(c);
    let dropped = std::time::Instant::now();
    while copies().await > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "the query outlived its caller by a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Recorded as cancelled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM exports.export_history WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(&s.db.pool)
                .await
                .unwrap();
        if status.as_deref() == Some("cancelled") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history says {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop.fire();
}

#[tokio::test]
async fn one_tenant_cannot_take_every_export_slot() {
    let s = start_with("orders=1000000", 1).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut o = SeedOptions::new(a, "Heavy", 100_000);
    o.kinds = vec![DataKind::Orders];
    o.days = 30;
    haven_appdata::seed(&s.db.pool, &o).await.unwrap();
    let mut ca = s.client(a).await;
    let mut req = request("orders", pb::ExportFormat::Csv);
    req.limit = 1_000_000;
    // A's first export is running (we read one message and let it wait on us).
    let mut running = ca.stream_export(req.clone()).await.unwrap().into_inner();
    running.message().await.unwrap();
    let err = ca.stream_export(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("retry when one finishes"),
        "{}",
        err.message()
    );
    // B is not affected.
    let mut cb = s.client(b).await;
    export(&mut cb, request("orders", pb::ExportFormat::Csv))
        .await
        .unwrap();
    // When A's export ends, A may export again.
    drop(running);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut small = req.clone();
        small.limit = 10;
        match export(&mut ca, small).await {
            Ok((_, _, summary)) => {
                assert_eq!(summary.record_count, 10);
                break;
            }
            Err(e)
                if e.code() == tonic::Code::ResourceExhausted
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    s.stop.fire();
}

#[tokio::test]
async fn pdf_is_for_reports_only_and_unknown_history_values_are_errors() {
    let s = start("").await;
    let tenant = Uuid::new_v4();
    let mut c = s.client(tenant).await;
    let err = export(&mut c, request("orders", pb::ExportFormat::Pdf))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("format"), "{}", err.message());

    // A status this version does not know (as a newer version might write) is an error
    // that names it, never a silently wrong status.
    export(&mut c, request("orders", pb::ExportFormat::Csv))
        .await
        .unwrap();
    for _ in 0..300 {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM exports.export_history WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&s.db.pool)
                .await
                .unwrap();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("ALTER TABLE exports.export_history DROP CONSTRAINT export_history_status_check")
        .execute(&s.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE exports.export_history SET status = 'paused' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let err = c
        .list_export_history(pb::ListExportHistoryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("paused"), "{}", err.message());
    s.stop.fire();
}

/// Four downloads that stop reading hold their slots and connections only until the stall
/// timeout: then they end failed (history and the caller's final status say so), their
/// queries stop, and meanwhile a fifth tenant exports as usual.
#[tokio::test]
async fn stalled_downloads_end_failed_and_free_their_connections() {
    let s = start_config("orders=1000000", |c| {
        c.stall_timeout = Duration::from_secs(3);
        c.max_concurrent = 6;
    })
    .await;
    let stalled: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for tenant in &stalled {
        let mut o = SeedOptions::new(*tenant, "Stalled", 150_000);
        o.kinds = vec![DataKind::Orders];
        o.days = 30;
        haven_appdata::seed(&s.db.pool, &o).await.unwrap();
    }
    let mut req = request("orders", pb::ExportFormat::Csv);
    req.limit = 1_000_000;
    // Each on its own connection, read once, then never again.
    let mut held = Vec::new();
    for tenant in &stalled {
        let mut c = s.client(*tenant).await;
        let mut stream = c.stream_export(req.clone()).await.unwrap().into_inner();
        stream.message().await.unwrap();
        held.push((c, stream));
    }
    let copies = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY (SELECT%' AND state <> 'idle'",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
    };
    // Their queries run (each starts just after the header is sent, so give them a moment;
    // a slow machine may already have ended the first by the time the last starts).
    haven_testkit::wait_for("an export query to run", Duration::from_secs(5), || async {
        (copies().await > 0).then_some(())
    })
    .await;
    // A fifth tenant exports meanwhile.
    let fifth = Uuid::new_v4();
    s.seed(fifth, 50, 0.0).await;
    let mut c = s.client(fifth).await;
    let (_, _, summary) = export(&mut c, request("orders", pb::ExportFormat::Csv))
        .await
        .unwrap();
    assert!(summary.record_count > 0);
    // The stall timeout ends the four: history failed, queries gone.
    haven_testkit::wait_for(
        "four failed exports and no query left",
        Duration::from_secs(20),
        || async {
            let failed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM exports.export_history
                 WHERE tenant_id = ANY($1) AND status = 'failed' AND error LIKE '%took no data%'",
            )
            .bind(&stalled)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
            (failed == 4 && copies().await == 0).then_some(())
        },
    )
    .await;
    // A stalled caller that reads again learns the stream failed, never a short file.
    let (_, mut stream) = held.pop().unwrap();
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended as if complete"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
    assert!(end.message().contains("took no data"), "{}", end.message());
    s.stop.fire();
}

/// A pin cannot point at another tenant's board (the composite key refuses it), and were one
/// to (the key dropped), the export still would not show that board's name.
#[tokio::test]
async fn joins_never_cross_tenants() {
    let s = start("").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let board = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO app.boards (id, tenant_id, name) VALUES ($1, $2, 'Secret board of A')",
    )
    .bind(board)
    .bind(a)
    .execute(&s.db.pool)
    .await
    .unwrap();
    let cross = |pin: Uuid| {
        sqlx::query(
            "INSERT INTO app.pins (id, tenant_id, board_id, title, status) VALUES ($1, $2, $3, 'B pin', 'published')",
        )
        .bind(pin)
        .bind(b)
        .bind(board)
    };
    let err = cross(Uuid::new_v4()).execute(&s.db.pool).await.unwrap_err();
    assert!(err.to_string().contains("pins_board_id_fkey"), "{err}");
    sqlx::query("ALTER TABLE app.pins DROP CONSTRAINT pins_board_id_fkey")
        .execute(&s.db.pool)
        .await
        .unwrap();
    cross(Uuid::new_v4()).execute(&s.db.pool).await.unwrap();
    let mut c = s.client(b).await;
    let (_, body, summary) = export(&mut c, request("pins", pb::ExportFormat::Csv))
        .await
        .unwrap();
    assert_eq!(summary.record_count, 1);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("Secret board"), "{text}");
    s.stop.fire();
}

/// A client of `tenant` that sends and accepts `encoding`.
async fn compressing(
    stack: &Stack,
    tenant: Uuid,
    encoding: tonic::codec::CompressionEncoding,
) -> Client {
    stack
        .client(tenant)
        .await
        .accept_compressed(encoding)
        .send_compressed(encoding)
}

fn assert_compressed<T>(
    response: &tonic::Response<T>,
    encoding: tonic::codec::CompressionEncoding,
) {
    assert_eq!(
        response.metadata().get("grpc-encoding").unwrap(),
        encoding.to_string().as_str()
    );
}

/// A gRPC client that accepts zstd gets StreamExport's frames compressed (`grpc-encoding`),
/// and the file it decodes is the one a plain client gets.
#[tokio::test]
async fn stream_export_compresses_for_clients_that_accept_it() {
    use tonic::codec::CompressionEncoding;
    let stack = start("").await;
    let tenant = Uuid::new_v4();
    stack.seed(tenant, 2_000, 0.0).await;
    let req = || {
        let mut r = request("orders", pb::ExportFormat::Csv);
        r.limit = 2_000;
        r
    };
    let (_, plain, _) = export(&mut stack.client(tenant).await, req())
        .await
        .unwrap();
    for encoding in [CompressionEncoding::Zstd, CompressionEncoding::Gzip] {
        let mut client = compressing(&stack, tenant, encoding).await;
        let response = client.stream_export(req()).await.unwrap();
        assert_compressed(&response, encoding);
        let (_, body, summary) = read_file(response.into_inner()).await.unwrap();
        assert_eq!(body, plain);
        assert_eq!(summary.record_count, 2_000);
    }
    stack.stop.fire();
}

/// StreamRows goes out through its own route (its batches pre-encoded): a client that accepts
/// zstd or gzip gets it compressed, sending a compressed request too, and decodes the rows a
/// plain client gets, batch after batch.
#[tokio::test]
async fn stream_rows_compresses_for_clients_that_accept_it() {
    use tonic::codec::CompressionEncoding;
    let stack = start("").await;
    let tenant = Uuid::new_v4();
    stack.seed(tenant, 3_000, 0.0).await;
    let req = || {
        let mut r = request("orders", pb::ExportFormat::Unspecified);
        r.limit = 3_000;
        r
    };
    let (header, plain, trailer) = rows(&mut stack.client(tenant).await, req()).await;
    assert_eq!(plain.len(), 3_000);
    assert_eq!(trailer.record_count, 3_000);
    assert!(plain.iter().all(|r| r.values.len() == header.columns.len()));
    for encoding in [CompressionEncoding::Zstd, CompressionEncoding::Gzip] {
        let mut client = compressing(&stack, tenant, encoding).await;
        let response = client.stream_rows(req()).await.unwrap();
        assert_compressed(&response, encoding);
        let (_, got, _) = read_rows(response.into_inner()).await;
        assert_eq!(got, plain, "{encoding}");
    }
    stack.stop.fire();
}

/// One timestamp form in every format: RFC 3339 in UTC (`…Z`), the same instant for the same
/// row in CSV, JSON and NDJSON; JSON compact, without PostgreSQL's spaces around colons.
#[tokio::test]
async fn timestamps_are_rfc3339_utc_in_every_format() {
    let stack = start("").await;
    let tenant = Uuid::new_v4();
    stack.seed(tenant, 50, 0.0).await;
    let mut client = stack.client(tenant).await;
    let req = |format| {
        let mut r = request("orders", format);
        r.fields = vec!["id".into(), "created_at".into()];
        r.limit = 50;
        r
    };
    let (_, csv, _) = export(&mut client, req(pb::ExportFormat::Csv))
        .await
        .unwrap();
    let mut from_csv = HashMap::new();
    for record in csv::Reader::from_reader(&csv[..]).records() {
        let record = record.unwrap();
        let at = record[1].to_owned();
        assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        chrono::DateTime::parse_from_rfc3339(&at).unwrap();
        from_csv.insert(record[0].to_owned(), at);
    }
    assert_eq!(from_csv.len(), 50);
    let (_, json, _) = export(&mut client, req(pb::ExportFormat::Json))
        .await
        .unwrap();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(
        !text.contains("\" : "),
        "compact JSON: {}",
        &text[..200.min(text.len())]
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    let (_, ndjson, _) = export(&mut client, req(pb::ExportFormat::Ndjson))
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 50);
    assert_eq!(lines, rows);
    for row in &rows {
        let id = row["id"].as_str().unwrap();
        assert_eq!(row["created_at"].as_str().unwrap(), from_csv[id], "{row}");
    }
    stack.stop.fire();
}
