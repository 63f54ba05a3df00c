//! Downloads through the gateway against a real export service: headers, streaming body,
//! record count trailer, JSON errors before the first byte, and an aborted body when the
//! export fails mid-stream.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use futures::StreamExt;
use haven_appdata::{DataKind, SeedOptions};
use haven_auth::Role;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, listener, namespace, nats_url};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SECRET: &str = haven_testkit::JWT_SECRET;

fn token(tenant: Uuid) -> String {
    haven_testkit::token(tenant, Role::User)
}

pub(crate) struct Stack {
    db: TestDb,
    pub(crate) base: String,
    gateway: std::net::SocketAddr,
    pub(crate) stop: Switch,
}

pub(crate) async fn stack() -> Stack {
    let db = TestDb::new().await;
    let stop = Switch::new();
    let mut config =
        haven_export::Config::for_test(CommonArgs::new(&db.url, &nats_url(), &namespace(), SECRET));
    config.max_records = "orders=1000000".into();
    let export = haven_testkit::spawn(&stop, |l, shutdown| {
        haven_export::serve(config, l, shutdown)
    })
    .await;
    let export_addr = export.addr;
    let gl = listener().await;
    let gateway = gl.local_addr().unwrap();
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), namespace()),
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:9".into(),
        format!("http://{export_addr}"),
    );
    tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));
    haven_testkit::wait_serving(export_addr).await;
    Stack {
        db,
        base: format!("http://{gateway}"),
        gateway,
        stop,
    }
}

impl Stack {
    /// `method path` as `tenant`'s user: the status and the JSON body.
    async fn call(&self, method: reqwest::Method, path: &str, tenant: Uuid) -> (u16, Value) {
        let res = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token(tenant))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    async fn get(&self, path: &str, tenant: Uuid) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, tenant).await
    }
}

async fn seed_orders(db: &TestDb, tenant: Uuid, n: u64) {
    let mut o = SeedOptions::new(tenant, "T", n);
    o.kinds = vec![DataKind::Orders];
    o.days = 30;
    haven_appdata::seed(&db.pool, &o).await.unwrap();
}

#[tokio::test]
async fn csv_download_streams_with_headers_and_record_count() {
    let s = stack().await;
    let tenant = Uuid::new_v4();
    seed_orders(&s.db, tenant, 5_000).await;
    let http = reqwest::Client::new();
    let res = http
        .get(format!(
            "{}/api/export?type=orders&format=csv&fields=id,total,status&bom=true",
            s.base
        ))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        h["content-disposition"],
        format!("attachment; filename=\"orders-export-{today}.csv\"").as_str()
    );
    assert_eq!(h["cache-control"], "no-store");
    let body = res.bytes().await.unwrap();
    assert!(body.starts_with("\u{feff}".as_bytes()));
    let mut reader = csv::Reader::from_reader(&body[3..]);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["ID", "Total", "Status"]
    );
    assert_eq!(reader.records().count(), 5_000);

    // A client that accepts trailers gets the record count at the end of the body.
    let mut tcp = tokio::net::TcpStream::connect(s.gateway).await.unwrap();
    let request = format!(
        "GET /api/export?type=orders&format=ndjson&limit=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        token(tenant)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("x-record-count: 10"), "{text}");
    assert!(text.contains("x-export-truncated: true"), "{text}");

    // JSON and the catalogue.
    let res = http
        .get(format!(
            "{}/api/export?type=orders&format=json&limit=3",
            s.base
        ))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    let json: Vec<Value> = res.json().await.unwrap();
    assert_eq!(json.len(), 3);
    let configs: Value = http
        .get(format!("{}/api/export/configs", s.base))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(configs[2]["type"], "orders");
    assert_eq!(configs[2]["maxRecords"], 1_000_000);
    assert_eq!(
        configs[2]["fields"][0],
        serde_json::json!({ "key": "id", "label": "ID", "default": true })
    );
    s.stop.fire();
}

/// What seed 000's export page calls: `POST /api/export` for the catalogue, then a download,
/// then the count by the download's `X-Export-Id`, at once (the page cannot read trailers).
#[tokio::test]
async fn the_seed_pages_calls_answer_as_they_expect() {
    let s = stack().await;
    let tenant = Uuid::new_v4();
    seed_orders(&s.db, tenant, 1_200).await;
    let http = reqwest::Client::new();
    let (_, catalogue) = s.call(reqwest::Method::POST, "/api/export", tenant).await;
    let orders = catalogue["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "orders")
        .unwrap();
    for key in [
        "type",
        "label",
        "description",
        "fields",
        "defaultDateRange",
        "maxRecords",
    ] {
        assert!(!orders[key].is_null(), "{key} missing: {orders}");
    }

    for (limit, rows, truncated) in [("", 1_200, false), ("&limit=1000", 1_000, true)] {
        let res = http
            .get(format!("{}/api/export?type=orders{limit}", s.base))
            .bearer_auth(token(tenant))
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-export-id"].to_str().unwrap().to_owned();
        res.bytes().await.unwrap();
        // No wait: the body ends only once the history row is in.
        let (_, entry) = s.get(&format!("/api/export/history/{id}"), tenant).await;
        assert_eq!(entry["id"], id.as_str());
        assert_eq!(entry["record_count"], rows, "{entry}");
        assert_eq!(entry["truncated"], truncated);
        assert_eq!(entry["status"], "completed");
        assert_eq!(entry["format"], "csv");
        assert!(entry["bytes"].as_u64().unwrap() > 0);
        assert!(entry["start_date"].as_str().unwrap().ends_with('Z'));

        // Another tenant's token cannot read it: the same 404 as an unknown id.
        for (who, path) in [
            (Uuid::new_v4(), id.clone()),
            (tenant, Uuid::new_v4().to_string()),
        ] {
            let (status, body) = s.get(&format!("/api/export/history/{path}"), who).await;
            assert_eq!(status, 404);
            assert!(body["error"].is_string(), "{body}");
            assert_eq!(body["code"], "not_found");
        }
    }

    let (_, page) = s.get("/api/export/history?limit=1", tenant).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["record_count"], 1_000, "newest first");
    let next = page["next_page_token"].as_str().unwrap();
    let rest: Value = http
        .get(format!(
            "{}/api/export/history?limit=5&page_token={next}",
            s.base
        ))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_page_token"], Value::Null);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("type=nope", "type"),
    ] {
        let (status, body) = s.get(&format!("/api/export/history?{query}"), tenant).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["field"], field, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with(field), "{body}");
    }
    let (status, body) = s.get("/api/export/history/not-a-uuid", tenant).await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "export_id", "{body}");
    s.stop.fire();
}

#[tokio::test]
async fn errors_before_the_first_byte_are_json() {
    let s = stack().await;
    let http = reqwest::Client::new();
    let t = token(Uuid::new_v4());
    for (query, status, field) in [
        ("type=invoices", 400, "type"),
        ("format=csv", 400, "type"),
        ("type=orders&format=xlsx", 400, "format"),
        ("type=orders&fields=id,password", 400, "fields"),
        (
            "type=orders&startDate=2026-02-01&endDate=2026-01-01",
            400,
            "startDate",
        ),
        ("type=orders&startDate=yesterday", 400, "startDate"),
        ("type=orders&limit=-4", 400, "limit"),
    ] {
        let res = http
            .get(format!("{}/api/export?{query}", s.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{query}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    let res = http
        .get(format!("{}/api/export?type=orders", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    s.stop.fire();
}

#[tokio::test]
async fn a_failure_mid_stream_is_a_failure_to_the_http_client() {
    let s = stack().await;
    let tenant = Uuid::new_v4();
    seed_orders(&s.db, tenant, 200_000).await;
    let res = reqwest::Client::new()
        .get(format!(
            "{}/api/export?type=orders&format=csv&limit=1000000",
            s.base
        ))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The database connection of the export dies mid-way.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY (SELECT%' AND state = 'active') t",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    let mut received = first.len();
    let outcome = loop {
        match body.next().await {
            Some(Ok(chunk)) => received += chunk.len(),
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
    };
    assert!(
        outcome.is_err(),
        "the body ended cleanly after {received} bytes: a truncated file would pass as complete"
    );
    s.stop.fire();
}

/// Seeds 002 and 003 through the gateway: the billing export for admins only with its file
/// name, the brand report's `days` named on every bad value, another tenant's brand 404 as an
/// unknown one, and both report formats downloadable with their names.
#[tokio::test]
async fn reports_answer_as_seeds_002_and_003_expect() {
    let s = stack().await;
    let (tenant, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let http = reqwest::Client::new();
    let get = |path: &str, tenant: Uuid, role: Role| {
        http.get(format!("{}{path}", s.base))
            .bearer_auth(haven_testkit::token(tenant, role))
            .send()
    };
    let today = chrono::Utc::now();

    // Billing: 403 for a user, a file for an admin, parameters named.
    let res = get("/api/admin/billing/export", tenant, Role::User)
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
    let res = get(
        "/api/admin/billing/export?format=json&scope=by_model&startDate=2026-01-01&endDate=2026-01-31",
        tenant,
        Role::Admin,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.headers()["content-disposition"],
        format!(
            "attachment; filename=\"billing-export-{}.json\"",
            today.format("%Y-%m-%d")
        )
        .as_str()
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["metadata"]["totalRecords"], 0);
    assert_eq!(body["metadata"]["scope"], "by_model");
    for (query, field) in [
        ("format=xml", "format"),
        ("scope=weekly", "scope"),
        ("startDate=01/02/2026", "startDate"),
        ("startDate=2026-02-02&endDate=2026-02-01", "startDate"),
        ("endDate=soon", "endDate"),
    ] {
        let res = get(
            &format!("/api/admin/billing/export?{query}"),
            tenant,
            Role::Admin,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["error"].is_string());
    }

    // Brand report: the owner's brand, another tenant's, an unknown one.
    let brand = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO app.brands (id, tenant_id, company_name) VALUES ($1, $2, 'Acme \"Corp\"/..')",
    )
    .bind(brand)
    .bind(tenant)
    .execute(&s.db.pool)
    .await
    .unwrap();
    for (format, content_type) in [
        ("csv", "text/csv; charset=utf-8"),
        ("pdf", "application/pdf"),
    ] {
        let res = get(
            &format!("/api/brands/{brand}/analytics/export/{format}?days=7"),
            tenant,
            Role::User,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{format}");
        assert_eq!(res.headers()["content-type"], content_type);
        assert_eq!(
            res.headers()["content-disposition"],
            format!(
                "attachment; filename=\"analytics_Acme_Corp_{}.{format}\"",
                today.format("%Y%m%d")
            )
            .as_str()
        );
        assert!(!res.bytes().await.unwrap().is_empty());
    }
    let foreign = get(
        &format!("/api/brands/{brand}/analytics/export/csv"),
        stranger,
        Role::User,
    )
    .await
    .unwrap();
    let unknown = get(
        &format!("/api/brands/{}/analytics/export/pdf", Uuid::new_v4()),
        stranger,
        Role::User,
    )
    .await
    .unwrap();
    assert_eq!(
        (foreign.status().as_u16(), unknown.status().as_u16()),
        (404, 404)
    );
    let (foreign, unknown): (Value, Value) =
        (foreign.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(foreign["code"], unknown["code"]);
    for days in ["0", "366", "-1", "abc", ""] {
        let res = get(
            &format!("/api/brands/{brand}/analytics/export/csv?days={days}"),
            tenant,
            Role::User,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 400, "days={days}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], "days", "{body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("days"),
            "{body}"
        );
    }
    s.stop.fire();
}

/// A client that accepts zstd or gzip gets the download compressed, streamed, and decoding it
/// gives the same file, byte for byte, as the plain download.
#[tokio::test]
async fn downloads_are_compressed_for_clients_that_accept_it() {
    use std::io::Read;
    let s = stack().await;
    let tenant = Uuid::new_v4();
    seed_orders(&s.db, tenant, 20_000).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/export?type=orders&format=csv", s.base);
    let fetch = |encoding: Option<&'static str>| {
        let (http, url) = (&http, &url);
        async move {
            let mut req = http.get(url).bearer_auth(token(tenant));
            if let Some(e) = encoding {
                req = req.header("accept-encoding", e);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let encoding = res
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned());
            assert!(res.headers().get("content-length").is_none(), "streamed");
            assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
            (encoding, res.bytes().await.unwrap().to_vec())
        }
    };
    let (none, plain) = fetch(None).await;
    assert_eq!(none, None);
    assert_eq!(
        csv::Reader::from_reader(&plain[..]).records().count(),
        20_000
    );

    let (encoding, wire) = fetch(Some("zstd")).await;
    assert_eq!(encoding.as_deref(), Some("zstd"));
    assert!(
        wire.len() * 3 < plain.len(),
        "{} vs {}",
        wire.len(),
        plain.len()
    );
    assert_eq!(zstd::decode_all(&wire[..]).unwrap(), plain);

    let (encoding, wire) = fetch(Some("gzip")).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(
        wire.len() * 2 < plain.len(),
        "{} vs {}",
        wire.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&wire[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);

    // An error before the first byte is still JSON a client can read once decoded.
    let res = http
        .get(format!("{}/api/export?type=nope", s.base))
        .bearer_auth(token(tenant))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let encoded = res.headers().get("content-encoding").cloned();
    let body = res.bytes().await.unwrap().to_vec();
    let body = match encoded.as_ref().map(|v| v.to_str().unwrap()) {
        Some("zstd") => zstd::decode_all(&body[..]).unwrap(),
        _ => body,
    };
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["field"], "type");
    s.stop.fire();
}
