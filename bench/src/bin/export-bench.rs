//! export-bench: `orders` CSV at 1M rows through StreamExport (gRPC) and the gateway (HTTP),
//! beside `psql \copy` of the same columns on the same database, in one run; plus time to
//! first byte and the export service's peak RSS at 1M and 5M rows.
//!
//! Run it with `./bench/export/run` (it builds the release binaries first).
#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use haven_appdata::{DataKind, SeedOptions};
use haven_auth::{Claims, Minter, Role};
use haven_bench::median;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use haven_testkit::{NatsServer, PostgresServer};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Rows in the main comparison.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows of the second export for the memory comparison.
    #[arg(long, default_value_t = 5_000_000)]
    big_rows: u64,
    /// Repeat each measurement and report the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";
const COLUMNS: &str = "id, shopify_order_id, customer_email, total, subtotal, discount_total, item_count, status, created_at";

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Peak resident set of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Measure {
    rows: u64,
    bytes: u64,
    secs: f64,
    ttfb_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("starting PostgreSQL (durable settings) and nats-server -js ...");
    let pg = PostgresServer::start_durable()?;
    let nats = NatsServer::start()?;
    let admin = PgPool::connect(&pg.url()).await?;
    sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
    let db_url = haven_testkit::with_database(&pg.url(), "bench");
    let pool = PgPool::connect(&db_url).await?;
    haven_appdata::migrate(&pool).await?;

    let tenant = Uuid::new_v4();
    let total = args.big_rows.max(args.rows);
    println!("seeding {total} orders (COPY) ...");
    let mut options = SeedOptions::new(tenant, "Bench", total);
    options.kinds = vec![DataKind::Orders];
    options.days = 30;
    let report = haven_appdata::seed(&pool, &options).await?;
    let seed_rate = report.total() as f64 / report.elapsed.as_secs_f64();
    println!(
        "  {} rows in {:.1}s ({seed_rate:.0} rows/s)",
        report.total(),
        report.elapsed.as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE app.customer_orders")
        .execute(&pool)
        .await?;

    // The services as real processes, so their memory is their own.
    let export_addr = free_addr();
    let gateway_addr = free_addr();
    let common = |cmd: &mut Command| {
        cmd.env("HAVEN_DATABASE_URL", &db_url)
            .env("HAVEN_NATS_URL", nats.url())
            .env("HAVEN_JWT_SECRET", SECRET)
            .env("HAVEN_LOG", "warn")
            .stdout(Stdio::null());
    };
    let mut export = Command::new(bin_dir().join("haven-export"));
    common(&mut export);
    export
        .env("HAVEN_EXPORT_ADDR", &export_addr)
        .env("HAVEN_EXPORT_METRICS_ADDR", "127.0.0.1:0")
        .env("HAVEN_EXPORT_MAX_RECORDS", format!("orders={total}"));
    let mut export: Child = export
        .spawn()
        .context("start haven-export (build it with --release)")?;
    let mut gateway = Command::new(bin_dir().join("haven-gateway"));
    common(&mut gateway);
    gateway
        .env("HAVEN_GATEWAY_ADDR", &gateway_addr)
        .env("HAVEN_EXPORT_URL", format!("http://{export_addr}"));
    let mut gateway: Child = gateway.spawn().context("start haven-gateway")?;

    let token = Minter::hs256(SECRET.as_bytes())?.mint(&Claims::new(
        tenant,
        "bench",
        vec![Role::User],
        Duration::from_secs(3600),
    ))?;
    let (start, end) = (
        chrono::Utc::now() - chrono::Duration::days(31),
        chrono::Utc::now() + chrono::Duration::minutes(10),
    );
    let channel = loop {
        if let Ok(c) = tonic::transport::Channel::from_shared(format!("http://{export_addr}"))?
            .connect()
            .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client =
        ExportServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", auth.clone());
            Ok(r)
        })
        .max_decoding_message_size(64 << 20);
    let ts = haven_proto::time::timestamp;
    let grpc_request = |limit: u64| pb::ExportRequest {
        export_type: "orders".into(),
        format: pb::ExportFormat::Csv as i32,
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        limit,
        ..Default::default()
    };
    // Wait until the export service has migrated and answers.
    for _ in 0..300 {
        if client
            .list_export_types(pb::ListExportTypesRequest {})
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let psql_sql = format!(
        "\\copy (SELECT {COLUMNS} FROM app.customer_orders WHERE tenant_id = '{tenant}' AND created_at >= '{}' AND created_at < '{}' ORDER BY created_at DESC LIMIT {}) TO STDOUT WITH CSV HEADER",
        start.to_rfc3339(),
        end.to_rfc3339(),
        args.rows
    );
    let http = reqwest::Client::new();
    let url = format!(
        "http://{gateway_addr}/api/export?type=orders&format=csv&limit={}&startDate={}&endDate={}",
        args.rows,
        urlencode(&start.to_rfc3339()),
        urlencode(&end.to_rfc3339())
    );
    // Warm-up: the gateway must be ready, and caches equally warm for everyone.
    for _ in 0..300 {
        if http
            .get(format!("http://{gateway_addr}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run_psql(&db_url, &psql_sql)?;

    let (mut psql, mut grpc, mut gw) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        println!("run {} of {} ...", run + 1, args.runs);
        psql.push(run_psql(&db_url, &psql_sql)?);
        grpc.push(run_grpc(&mut client, grpc_request(args.rows)).await?);
        gw.push(run_http(&http, &url, &token).await?);
    }
    for m in grpc.iter().chain(gw.iter()) {
        if m.rows != args.rows {
            bail!("an export returned {} rows, expected {}", m.rows, args.rows);
        }
    }
    let rss_1m = peak_rss_mib(export.id());
    println!(
        "export of {} rows (gRPC) for peak memory ...",
        args.big_rows
    );
    let big = run_grpc(&mut client, grpc_request(args.big_rows)).await?;
    let rss_5m = peak_rss_mib(export.id());

    let rate = |m: &[Measure]| median(m.iter().map(|m| m.rows as f64 / m.secs).collect());
    let mbps = |m: &[Measure]| median(m.iter().map(|m| m.bytes as f64 / m.secs / 1e6).collect());
    let ttfb = |m: &[Measure]| median(m.iter().map(|m| m.ttfb_ms).collect());
    let psql_rate = median(psql.iter().map(|s| args.rows as f64 / s).collect());
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    println!();
    println!(
        "Export benchmark — orders CSV, {} rows, PostgreSQL {version} (fsync on), {} CPUs, medians of {} runs",
        args.rows,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.runs
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>12}",
        "", "rows/s", "MB/s", "TTFB ms", "vs psql"
    );
    println!(
        "{:<34} {:>12.0} {:>10} {:>10} {:>11.2}x",
        "psql \\copy (reference)", psql_rate, "-", "-", 1.0
    );
    println!(
        "{:<34} {:>12.0} {:>10.1} {:>10.1} {:>11.2}x",
        "StreamExport (gRPC client)",
        rate(&grpc),
        mbps(&grpc),
        ttfb(&grpc),
        rate(&grpc) / psql_rate
    );
    println!(
        "{:<34} {:>12.0} {:>10.1} {:>10.1} {:>11.2}x",
        "gateway download (HTTP client)",
        rate(&gw),
        mbps(&gw),
        ttfb(&gw),
        rate(&gw) / psql_rate
    );
    println!(
        "export service peak RSS: {rss_1m:.1} MiB after {} rows; {rss_5m:.1} MiB after {} more ({} rows at {:.0} rows/s)",
        args.rows,
        big.rows,
        big.rows,
        big.rows as f64 / big.secs
    );
    println!("seed (havenctl seed's generator, COPY): {seed_rate:.0} rows/s");
    let _ = gateway.kill();
    let _ = export.kill();
    let _ = gateway.wait();
    let _ = export.wait();
    drop(nats);
    drop(pg);
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run_psql(db_url: &str, sql: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("psql")
        .arg(db_url)
        .arg("-X")
        .arg("-q")
        .arg("-c")
        .arg(sql)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("psql failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn run_grpc<T>(
    client: &mut ExportServiceClient<T>,
    request: pb::ExportRequest,
) -> anyhow::Result<Measure>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    use pb::stream_export_response::Part;
    let started = Instant::now();
    let mut stream = client.stream_export(request).await?.into_inner();
    let (mut bytes, mut rows, mut ttfb) = (0u64, 0u64, None);
    while let Some(msg) = stream.message().await? {
        match msg.part {
            Some(Part::Chunk(c)) => {
                ttfb.get_or_insert_with(|| started.elapsed());
                bytes += c.len() as u64;
            }
            Some(Part::Summary(s)) => rows = s.record_count,
            _ => {}
        }
    }
    Ok(Measure {
        rows,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        ttfb_ms: ttfb.unwrap_or_default().as_secs_f64() * 1000.0,
    })
}

async fn run_http(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Measure> {
    let started = Instant::now();
    let res = http.get(url).bearer_auth(token).send().await?;
    if !res.status().is_success() {
        bail!("gateway answered {}", res.status());
    }
    let mut body = res.bytes_stream();
    let (mut bytes, mut newlines, mut ttfb) = (0u64, 0u64, None);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        ttfb.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    // The seeded orders hold no newlines in these columns: lines minus the header are rows.
    Ok(Measure {
        rows: newlines.saturating_sub(1),
        bytes,
        secs: started.elapsed().as_secs_f64(),
        ttfb_ms: ttfb.unwrap_or_default().as_secs_f64() * 1000.0,
    })
}
