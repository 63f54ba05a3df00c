//! export-bench: `orders` CSV at 1M rows through StreamExport (gRPC) and the gateway (HTTP),
//! beside `psql \copy` of the same columns on the same database, in one run (psql runs before
//! and after each of our plain downloads, which is set against the two); plus time to
//! first byte and the export service's peak RSS at 1M and 5M rows. Then the billing usage
//! export (CSV and JSON, 1M events) beside `psql \copy` of the same query, with peak RSS at 1M
//! and 5M, and the brand analytics PDF for 200 agents × 100,000 calls: time and peak RSS.
//! Every run is printed, then the medians and the worst run.
//!
//! Run it with `./bench/export/run` (it builds the release binaries first).
#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use haven_appdata::{DataKind, SeedOptions};
use haven_auth::{Claims, Minter, Role};
use haven_bench::{bin_dir, free_addr, median, peak_rss_mib, percentile, summary};
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
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
    /// Usage events in the billing comparison (about: whole days are exported).
    #[arg(long, default_value_t = 1_000_000)]
    billing_rows: u64,
    /// Usage events seeded in all, exported once for the memory comparison.
    #[arg(long, default_value_t = 5_000_000)]
    billing_big_rows: u64,
    /// Agents of the brand in the PDF report.
    #[arg(long, default_value_t = 200)]
    agents: u64,
    /// Calls of the brand in the PDF report.
    #[arg(long, default_value_t = 100_000)]
    calls: u64,
}

const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";
const COLUMNS: &str = "id, shopify_order_id, customer_email, total, subtotal, discount_total, item_count, status, created_at";

struct Measure {
    rows: u64,
    bytes: u64,
    secs: f64,
    ttfb_ms: f64,
}

/// mimalloc, as a client decoding millions of small messages would pick: with glibc's malloc
/// the client's allocations took over half of its time decoding StreamRows (perf), which
/// measured the allocator rather than the rows.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let haven_bench::Servers {
        pg,
        nats,
        db_url,
        pool,
    } = haven_bench::Servers::start().await?;
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
    let export_addr = free_addr()?;
    let gateway_addr = free_addr()?;
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

    let token = mint(tenant, Role::User)?;
    let (start, end) = (
        chrono::Utc::now() - chrono::Duration::days(31),
        chrono::Utc::now() + chrono::Duration::minutes(10),
    );
    let mut client = connect(&export_addr, tenant, Role::User).await?;
    let ts = haven_proto::time::timestamp;
    let grpc_request = |limit: u64| pb::ExportRequest {
        export_type: "orders".into(),
        format: pb::ExportFormat::Csv as i32,
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        limit,
        ..Default::default()
    };

    let psql_sql = format!(
        "\\copy (SELECT {COLUMNS} FROM app.customer_orders WHERE tenant_id = '{tenant}' AND created_at >= '{}' AND created_at < '{}' ORDER BY created_at DESC LIMIT {}) TO STDOUT WITH CSV HEADER",
        start.to_rfc3339(),
        end.to_rfc3339(),
        args.rows
    );
    let http = reqwest::Client::new();
    let url_of = |rows: u64| {
        format!(
            "http://{gateway_addr}/api/export?type=orders&format=csv&limit={rows}&startDate={}&endDate={}",
            urlencode(&start.to_rfc3339()),
            urlencode(&end.to_rfc3339())
        )
    };
    let url = url_of(args.rows);
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
    // Ours warmed up too: the service's first export also opens its pool's connections and
    // grows its buffers, once.
    run_grpc(&mut client, grpc_request(args.rows)).await?;
    run_http(&http, &url, &token).await?;

    let psql_bytes = psql_output_bytes(&db_url, &psql_sql)?;
    let mut zstd_client = client
        .clone()
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    let (mut psql, mut grpc, mut gw) = (Vec::new(), Vec::new(), Vec::new());
    let mut typed = Vec::new();
    let (mut grpc_zstd, mut gw_zstd, mut gw_gzip) = (Vec::new(), Vec::new(), Vec::new());
    // psql runs before and after each of our plain downloads, and each is compared with the
    // mean of the two around it: this machine's speed drifts within seconds (psql alone read
    // 371k to 613k rows/s within a minute), so one psql run a few exports earlier measured
    // the drift as much as either side.
    let mut around: Vec<[f64; 4]> = Vec::new();
    for run in 0..args.runs {
        println!("run {} of {} ...", run + 1, args.runs);
        let before = run_psql(&db_url, &psql_sql)?;
        grpc.push(run_grpc(&mut client, grpc_request(args.rows)).await?);
        let between = run_psql(&db_url, &psql_sql)?;
        gw.push(run_http(&http, &url, &token).await?);
        let then = run_psql(&db_url, &psql_sql)?;
        typed.push(run_rows(&mut client, grpc_request(args.rows)).await?);
        let after = run_psql(&db_url, &psql_sql)?;
        around.push([before, between, then, after]);
        psql.push((before + between + then + after) / 4.0);
        grpc_zstd.push(run_grpc(&mut zstd_client, grpc_request(args.rows)).await?);
        gw_zstd.push(run_http_encoded(&http, &url, &token, Encoding::Zstd).await?);
        gw_gzip.push(run_http_encoded(&http, &url, &token, Encoding::Gzip).await?);
    }
    // A download above gives one time to first byte, and one sample ranges from 3 to 16 ms
    // on a shared 2-core machine: the gateway's is also taken over many smaller downloads of
    // the same query, each read to its end and checked.
    // StreamExport's alternate with them, to tell the gateway's part from the service's.
    let probe_rows = TTFB_PROBE_ROWS.min(args.rows);
    let (mut probes, mut grpc_probes) = (Vec::new(), Vec::new());
    for _ in 0..TTFB_PROBES {
        let via_gateway = run_http(&http, &url_of(probe_rows), &token).await?;
        let direct = run_grpc(&mut client, grpc_request(probe_rows)).await?;
        for m in [&via_gateway, &direct] {
            if m.rows != probe_rows {
                bail!(
                    "a TTFB download returned {} rows, expected {probe_rows}",
                    m.rows
                );
            }
        }
        probes.push(via_gateway.ttfb_ms);
        grpc_probes.push(direct.ttfb_ms);
    }
    let spread = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            percentile(&v, 0.99),
            v[v.len() - 1]
        )
    };
    for (name, samples) in [("gateway", probes), ("StreamExport", grpc_probes)] {
        let line = spread(samples);
        println!("{name} TTFB over {TTFB_PROBES} downloads of {probe_rows} rows: {line}");
        summary(
            "export",
            &format!("{name} TTFB, {TTFB_PROBES} downloads of {probe_rows} rows"),
            &line,
            "-",
            "-",
        );
    }
    for m in grpc
        .iter()
        .chain(gw.iter())
        .chain(typed.iter())
        .chain(grpc_zstd.iter())
        .chain(gw_zstd.iter().map(|e| &e.measure))
        .chain(gw_gzip.iter().map(|e| &e.measure))
    {
        if m.rows != args.rows {
            bail!("an export returned {} rows, expected {}", m.rows, args.rows);
        }
    }
    let psql_runs: Vec<f64> = psql.iter().map(|s| args.rows as f64 / s).collect();
    // The reference of our `k`th plain download in each run: psql's runs on either side.
    let reference = |k: usize| -> Vec<f64> {
        around
            .iter()
            .map(|p| (args.rows as f64 / p[k] + args.rows as f64 / p[k + 1]) / 2.0)
            .collect()
    };
    let (grpc_ref, gw_ref, typed_ref) = (reference(0), reference(1), reference(2));
    // Each run's ratio to its own reference: the median and the worst of them.
    let ratios = |m: &[Measure], refs: &[f64]| -> Vec<f64> {
        m.iter()
            .zip(refs)
            .map(|(m, r)| m.rows as f64 / m.secs / r)
            .collect()
    };
    let ratio = |m: &[Measure], refs: &[f64]| median(ratios(m, refs));
    let worst =
        |m: &[Measure], refs: &[f64]| ratios(m, refs).into_iter().fold(f64::INFINITY, f64::min);
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
    let psql_rate = median(
        around
            .iter()
            .flatten()
            .map(|s| args.rows as f64 / s)
            .collect(),
    );
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
        ratio(&grpc, &grpc_ref)
    );
    println!(
        "{:<34} {:>12.0} {:>10.1} {:>10.1} {:>11.2}x",
        "gateway download (HTTP client)",
        rate(&gw),
        mbps(&gw),
        ttfb(&gw),
        ratio(&gw, &gw_ref)
    );
    println!(
        "{:<34} {:>12.0} {:>10} {:>10.1} {:>11.2}x",
        "StreamRows (every value decoded)",
        rate(&typed),
        "-",
        ttfb(&typed),
        ratio(&typed, &typed_ref)
    );
    println!(
        "export service peak RSS: {rss_1m:.1} MiB after {} rows; {rss_5m:.1} MiB after {} more ({} rows at {:.0} rows/s)",
        args.rows,
        big.rows,
        big.rows,
        big.rows as f64 / big.secs
    );
    println!(
        "every run (rows/s; psql before, between and after ours; each of ours against the mean of the psql runs on either side):"
    );
    for (i, p) in around.iter().enumerate() {
        let g = grpc[i].rows as f64 / grpc[i].secs;
        let h = gw[i].rows as f64 / gw[i].secs;
        let t = typed[i].rows as f64 / typed[i].secs;
        let psql_rates = p
            .map(|s| format!("{:.0}", args.rows as f64 / s))
            .join(" / ");
        println!(
            "  run {}: psql {psql_rates}; StreamExport {g:.0} ({:.2}x, TTFB {:.1} ms); gateway {h:.0} ({:.2}x, TTFB {:.1} ms); StreamRows {t:.0} ({:.2}x)",
            i + 1,
            g / grpc_ref[i],
            grpc[i].ttfb_ms,
            h / gw_ref[i],
            gw[i].ttfb_ms,
            t / typed_ref[i]
        );
    }
    println!(
        "  worst run: StreamExport {:.2}x, gateway {:.2}x, StreamRows {:.2}x",
        worst(&grpc, &grpc_ref),
        worst(&gw, &gw_ref),
        worst(&typed, &typed_ref)
    );
    let psql_cell = format!("{psql_rate:.0} rows/s");
    for (name, m, refs) in [
        ("StreamExport, orders CSV", &grpc, &grpc_ref),
        ("gateway download, orders CSV", &gw, &gw_ref),
        (
            "StreamRows, orders, every value decoded",
            &typed,
            &typed_ref,
        ),
    ] {
        summary(
            "export",
            name,
            &format!("{:.0} rows/s, TTFB {:.1} ms", rate(m), ttfb(m)),
            &format!("psql \\copy {psql_cell}"),
            &format!("{:.2}x (worst {:.2}x)", ratio(m, refs), worst(m, refs)),
        );
    }
    summary(
        "export",
        "export service peak RSS",
        &format!(
            "{rss_1m:.1} MiB at {} rows, {rss_5m:.1} MiB after {}",
            args.rows, big.rows
        ),
        "-",
        "-",
    );
    compressed_report(
        args.rows, &psql_runs, psql_bytes, &psql, &grpc_zstd, &gw_zstd, &gw_gzip,
    );
    println!("seed (havenctl seed's generator, COPY): {seed_rate:.0} rows/s");

    billing_case(&args, &pool, &db_url, &export_addr, export.id(), tenant).await?;
    brand_case(&args, &pool, &db_url, nats.url().as_str()).await?;

    let _ = gateway.kill();
    let _ = export.kill();
    let _ = gateway.wait();
    let _ = export.wait();
    drop(nats);
    drop(pg);
    Ok(())
}

#[derive(Clone)]
struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);
impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}
type Client = ExportServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

/// A bearer token of `role` for `tenant`, as the services accept it.
fn mint(tenant: Uuid, role: Role) -> anyhow::Result<String> {
    Ok(Minter::hs256(SECRET.as_bytes())?.mint(&Claims::new(
        tenant,
        "bench",
        vec![role],
        Duration::from_secs(3600),
    ))?)
}

/// A client of the export service at `addr` as `role` of `tenant`, once it has migrated
/// and answers.
async fn connect(addr: &str, tenant: Uuid, role: Role) -> anyhow::Result<Client> {
    let token = mint(tenant, role)?;
    let channel = loop {
        // A 1 MiB stream window, as the gateway's (tonic's default is 64 KiB; grpc-go and
        // gRPC's C core grow theirs from the bandwidth-delay product, to 4 MiB and more).
        if let Ok(c) = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .connect()
            .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut client =
        ExportServiceClient::with_interceptor(channel, Auth(format!("Bearer {token}").parse()?))
            .max_decoding_message_size(64 << 20);
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
    Ok(client)
}

/// The billing usage export, `all` scope, CSV and JSON, beside `psql \copy` of the same
/// query; then one export of every seeded event for the memory comparison.
async fn billing_case(
    args: &Args,
    pool: &PgPool,
    db_url: &str,
    export_addr: &str,
    export_pid: u32,
    tenant: Uuid,
) -> anyhow::Result<()> {
    const DAYS: u32 = 50;
    println!();
    println!("seeding {} usage events (COPY) ...", args.billing_big_rows);
    let mut options = SeedOptions::new(tenant, "Bench", args.billing_big_rows);
    options.kinds = vec![DataKind::Usage];
    options.days = DAYS;
    haven_appdata::seed(pool, &options).await?;
    sqlx::query("VACUUM ANALYZE app.usage_events")
        .execute(pool)
        .await?;
    // Whole UTC days ending today, about `billing_rows` of the events spread over DAYS days.
    let days = ((u64::from(DAYS) * args.billing_rows) / args.billing_big_rows.max(1)).max(1);
    let today = chrono::Utc::now().date_naive();
    let first = today - chrono::Duration::days(i64::try_from(days)? - 1);
    let everything = today - chrono::Duration::days(i64::from(DAYS) + 1);
    let select = |from: chrono::NaiveDate| {
        format!(
            "SELECT (u.created_at AT TIME ZONE 'UTC')::date AS date, t.name AS tenant_name, u.model AS model_used, \
             u.input_tokens, u.output_tokens, u.cost_cents FROM app.usage_events u JOIN app.tenants t ON t.id = u.tenant_id \
             WHERE u.created_at >= '{from} 00:00:00+00' AND u.created_at < '{} 00:00:00+00' ORDER BY u.created_at, u.id",
            today + chrono::Duration::days(1)
        )
    };
    let psql_csv = format!("\\copy ({}) TO STDOUT WITH CSV HEADER", select(first));
    let psql_json = format!(
        "\\copy (SELECT json_build_object('date', s.date, 'tenantName', s.tenant_name, 'modelUsed', s.model_used, \
         'inputTokens', s.input_tokens, 'outputTokens', s.output_tokens, 'costCents', s.cost_cents)::text FROM ({}) s) \
         TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
        select(first)
    );
    let mut admin = connect(export_addr, tenant, Role::Admin).await?;
    let request = |format: pb::ExportFormat, from: chrono::NaiveDate| pb::BillingExportRequest {
        format: format as i32,
        start_date: from.to_string(),
        end_date: today.to_string(),
        scope: pb::BillingScope::All as i32,
    };
    let mut table = Vec::new();
    for (label, format, psql_sql) in [
        ("CSV", pb::ExportFormat::Csv, &psql_csv),
        ("JSON", pb::ExportFormat::Json, &psql_json),
    ] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            let secs = run_psql(db_url, psql_sql)?;
            let started = Instant::now();
            let stream = admin
                .stream_billing_export(request(format, first))
                .await?
                .into_inner();
            let m = measure_from(started, stream).await?;
            let p = m.rows as f64 / secs;
            let o = m.rows as f64 / m.secs;
            println!(
                "  billing {label} run {}: {} rows; psql {p:.0} rows/s; StreamBillingExport {o:.0} rows/s ({:.2}x, {:.1} MB/s)",
                run + 1,
                m.rows,
                o / p,
                m.bytes as f64 / m.secs / 1e6
            );
            ours.push(o);
            theirs.push(p);
        }
        table.push((label, ours, theirs));
    }
    let rss_small = peak_rss_mib(export_pid);
    let started = Instant::now();
    let stream = admin
        .stream_billing_export(request(pb::ExportFormat::Csv, everything))
        .await?
        .into_inner();
    let big = measure_from(started, stream).await?;
    let rss_big = peak_rss_mib(export_pid);
    println!();
    println!(
        "Billing usage export — scope all, about {} events ({days} days), medians of {} runs, worst run in brackets",
        args.billing_rows, args.runs
    );
    println!(
        "{:<34} {:>14} {:>14} {:>16}",
        "", "psql rows/s", "ours rows/s", "vs psql (worst)"
    );
    for (label, ours, theirs) in &table {
        let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(o, p)| o / p).collect();
        println!(
            "{:<34} {:>14.0} {:>14.0} {:>9.2}x ({:.2}x)",
            format!("billing {label}"),
            median(theirs.clone()),
            median(ours.clone()),
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min)
        );
    }
    println!(
        "export service peak RSS: {rss_small:.1} MiB after the billing runs; {rss_big:.1} MiB after one of {} events ({:.0} rows/s)",
        big.rows,
        big.rows as f64 / big.secs
    );
    Ok(())
}

/// The brand analytics PDF for `agents` agents and `calls` calls, on an export service of
/// its own, so its peak RSS is the report's.
async fn brand_case(
    args: &Args,
    pool: &PgPool,
    db_url: &str,
    nats_url: &str,
) -> anyhow::Result<()> {
    println!();
    println!(
        "seeding a brand with {} agents and {} calls ...",
        args.agents, args.calls
    );
    let tenant = Uuid::new_v4();
    let mut options = SeedOptions::new(tenant, "Brand bench", args.calls);
    options.kinds = vec![DataKind::Calls];
    options.brands = 1;
    options.agents_per_brand = args.agents;
    // Every call inside the report's 30 whole days (the seed spreads them back from now).
    options.days = 29;
    options.hostile_ratio = 0.0;
    haven_appdata::seed(pool, &options).await?;
    sqlx::query("VACUUM ANALYZE app.call_logs")
        .execute(pool)
        .await?;
    let brand: Uuid = sqlx::query_scalar("SELECT id FROM app.brands WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    let addr = free_addr()?;
    let mut export = Command::new(bin_dir().join("haven-export"))
        .env("HAVEN_DATABASE_URL", db_url)
        .env("HAVEN_NATS_URL", nats_url)
        .env("HAVEN_JWT_SECRET", SECRET)
        .env("HAVEN_LOG", "warn")
        .env("HAVEN_EXPORT_ADDR", &addr)
        .env("HAVEN_EXPORT_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .spawn()
        .context("start a second haven-export")?;
    let mut client = connect(&addr, tenant, Role::User).await?;
    let rss_idle = peak_rss_mib(export.id());
    let mut secs = Vec::new();
    let mut size = 0;
    for run in 0..args.runs {
        let started = Instant::now();
        let stream = client
            .stream_brand_report(pb::BrandReportRequest {
                brand_id: brand.to_string(),
                format: pb::ExportFormat::Pdf as i32,
                days: 30,
            })
            .await?
            .into_inner();
        let m = measure_from(started, stream).await?;
        println!(
            "  brand PDF run {}: {} calls summed, {} bytes in {:.0} ms",
            run + 1,
            m.rows,
            m.bytes,
            m.secs * 1000.0
        );
        if m.rows != args.calls {
            bail!(
                "the report summed {} calls, expected {}",
                m.rows,
                args.calls
            );
        }
        secs.push(m.secs);
        size = m.bytes;
    }
    let rss = peak_rss_mib(export.id());
    let _ = export.kill();
    let _ = export.wait();
    println!();
    println!(
        "Brand analytics PDF — {} agents, {} calls, 30 days: median {:.0} ms, worst {:.0} ms, {size} bytes; \
         that export service's peak RSS {rss:.1} MiB ({rss_idle:.1} MiB before the first report)",
        args.agents,
        args.calls,
        median(secs.clone()) * 1000.0,
        secs.iter().copied().fold(0.0, f64::max) * 1000.0
    );
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
    let started = Instant::now();
    let stream = client.stream_export(request).await?.into_inner();
    measure_from(started, stream).await
}

/// StreamRows read to its end, every value looked at as a client would (numbers summed,
/// text measured, times converted); rows counted here and checked against the trailer.
async fn run_rows<T>(
    client: &mut ExportServiceClient<T>,
    request: pb::ExportRequest,
) -> anyhow::Result<Measure>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    use pb::stream_rows_response::Part;
    use pb::value::Kind;
    let started = Instant::now();
    let mut stream = client.stream_rows(request).await?.into_inner();
    let (mut rows, mut ttfb, mut columns, mut trailer) = (0u64, None, 0, None);
    let (mut text, mut numbers, mut nulls) = (0u64, 0i64, 0u64);
    while let Some(msg) = stream.message().await? {
        match msg.part {
            Some(Part::Header(h)) => columns = h.columns.len(),
            Some(Part::Batch(b)) => {
                ttfb.get_or_insert_with(|| started.elapsed());
                for row in b.rows {
                    if row.values.len() != columns {
                        bail!(
                            "a row of {} values under {columns} columns",
                            row.values.len()
                        );
                    }
                    rows += 1;
                    for value in row.values {
                        match value.kind {
                            Some(Kind::StringValue(s))
                            | Some(Kind::DecimalValue(s))
                            | Some(Kind::DateValue(s)) => text += s.len() as u64,
                            Some(Kind::Int64Value(n)) => numbers = numbers.wrapping_add(n),
                            Some(Kind::BoolValue(b)) => numbers += i64::from(b),
                            Some(Kind::TimestampValue(t)) => {
                                numbers = numbers.wrapping_add(
                                    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                                        .map_or(0, |t| t.timestamp_micros()),
                                )
                            }
                            Some(Kind::NullValue(_)) | None => nulls += 1,
                        }
                    }
                }
            }
            Some(Part::Trailer(t)) => trailer = Some(t.record_count),
            None => {}
        }
    }
    if trailer != Some(rows) {
        bail!("StreamRows sent {rows} rows, its trailer says {trailer:?}");
    }
    std::hint::black_box((text, numbers, nulls));
    Ok(Measure {
        rows,
        bytes: 0,
        secs: started.elapsed().as_secs_f64(),
        ttfb_ms: ttfb.unwrap_or_default().as_secs_f64() * 1000.0,
    })
}

/// Reads a file stream to its end: rows from its summary, bytes, and the time and time to
/// first byte since `started` (taken before the call).
async fn measure_from(
    started: Instant,
    mut stream: tonic::Streaming<pb::StreamExportResponse>,
) -> anyhow::Result<Measure> {
    use pb::stream_export_response::Part;
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

/// Downloads in the TTFB phase, and the rows of each (at most `--rows`): enough that the
/// first chunk leaves before the export ends (a file smaller than one chunk is sent whole at
/// its end, so 1,000 rows read p50 10.1 ms, the whole export's time).
const TTFB_PROBES: usize = 50;
const TTFB_PROBE_ROWS: u64 = 100_000;

/// Bytes a 100 Mbit/s link carries per second.
const LINK_BYTES_PER_SEC: f64 = 12.5e6;

#[derive(Clone, Copy)]
enum Encoding {
    Zstd,
    Gzip,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// A compressed download: the decoded file's measure (rows, bytes after decoding) and the
/// bytes that crossed the wire.
struct Encoded {
    measure: Measure,
    wire: u64,
}

/// Counts the decoded file's bytes and lines as the decoder writes them.
#[derive(Default)]
struct Counter {
    bytes: u64,
    newlines: u64,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.newlines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gateway download with `Accept-Encoding`, decoded as it arrives (so the time includes
/// the client's decoding, and the rows are counted in the decoded file).
async fn run_http_encoded(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    encoding: Encoding,
) -> anyhow::Result<Encoded> {
    use std::io::Write;
    let started = Instant::now();
    let res = http
        .get(url)
        .bearer_auth(token)
        .header("accept-encoding", encoding.name())
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("gateway answered {}", res.status());
    }
    let got = res
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_owned();
    if got != encoding.name() {
        bail!("asked for {}, the gateway sent {got}", encoding.name());
    }
    let mut body = res.bytes_stream();
    let (mut wire, mut ttfb) = (0u64, None);
    let counter = match encoding {
        Encoding::Zstd => {
            let mut d = zstd::stream::write::Decoder::new(Counter::default())?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                ttfb.get_or_insert_with(|| started.elapsed());
                wire += chunk.len() as u64;
                d.write_all(&chunk)?;
            }
            d.flush()?;
            d.into_inner()
        }
        Encoding::Gzip => {
            let mut d = flate2::write::GzDecoder::new(Counter::default());
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                ttfb.get_or_insert_with(|| started.elapsed());
                wire += chunk.len() as u64;
                d.write_all(&chunk)?;
            }
            d.finish()?
        }
    };
    Ok(Encoded {
        measure: Measure {
            rows: counter.newlines.saturating_sub(1),
            bytes: counter.bytes,
            secs: started.elapsed().as_secs_f64(),
            ttfb_ms: ttfb.unwrap_or_default().as_secs_f64() * 1000.0,
        },
        wire,
    })
}

/// How many bytes `psql \copy` writes for `sql`, counted once (the file psql users move).
fn psql_output_bytes(db_url: &str, sql: &str) -> anyhow::Result<u64> {
    let mut child = Command::new("psql")
        .arg(db_url)
        .arg("-X")
        .arg("-q")
        .arg("-c")
        .arg(sql)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("psql stdout")?;
    let bytes = std::io::copy(&mut out, &mut std::io::sink())?;
    if !child.wait()?.success() {
        bail!("psql failed");
    }
    Ok(bytes)
}

/// The compressed downloads beside psql's plain output: rows/s, bytes on the wire, and the
/// time over a 100 Mbit/s link (the larger of the measured time and bytes ÷ 12.5 MB/s).
fn compressed_report(
    rows: u64,
    psql_runs: &[f64],
    psql_bytes: u64,
    psql_secs: &[f64],
    grpc_zstd: &[Measure],
    gw_zstd: &[Encoded],
    gw_gzip: &[Encoded],
) {
    let psql_rate = median(psql_runs.to_vec());
    let link = |secs: f64, bytes: u64| secs.max(bytes as f64 / LINK_BYTES_PER_SEC);
    let psql_link = median(psql_secs.iter().map(|s| link(*s, psql_bytes)).collect());
    println!();
    println!(
        "Compressed — the same {rows} rows; psql writes {:.1} MB, {psql_link:.2} s over 100 Mbit/s",
        psql_bytes as f64 / 1e6
    );
    println!(
        "{:<34} {:>12} {:>10} {:>12} {:>14} {:>12}",
        "", "rows/s", "vs psql", "wire MB", "100 Mbit/s s", "less time"
    );
    println!(
        "{:<34} {:>12.0} {:>9.2}x {:>12} {:>14} {:>12}",
        "StreamExport, zstd frames",
        median(grpc_zstd.iter().map(|m| m.rows as f64 / m.secs).collect()),
        median(grpc_zstd.iter().map(|m| m.rows as f64 / m.secs).collect()) / psql_rate,
        "-",
        "-",
        "-"
    );
    for (name, runs) in [("gateway, zstd", gw_zstd), ("gateway, gzip", gw_gzip)] {
        let rate = median(
            runs.iter()
                .map(|e| e.measure.rows as f64 / e.measure.secs)
                .collect(),
        );
        let wire = median(runs.iter().map(|e| e.wire as f64).collect());
        let secs = median(runs.iter().map(|e| link(e.measure.secs, e.wire)).collect());
        let worst = runs
            .iter()
            .zip(psql_secs)
            .map(|(e, p)| link(*p, psql_bytes) / link(e.measure.secs, e.wire))
            .fold(f64::INFINITY, f64::min);
        summary(
            "export",
            &format!("{name} over 100 Mbit/s"),
            &format!("{secs:.2} s, {:.1} MB on the wire", wire / 1e6),
            &format!("psql {psql_link:.2} s, {:.1} MB", psql_bytes as f64 / 1e6),
            &format!("{:.1}x less time (worst {worst:.1}x)", psql_link / secs),
        );
        println!(
            "{name:<34} {rate:>12.0} {:>9.2}x {:>12.1} {secs:>14.2} {:>11.1}x",
            rate / psql_rate,
            wire / 1e6,
            psql_link / secs
        );
    }
    println!("every run (rows/s vs psql in the same run; time over 100 Mbit/s, psql's ÷ ours):");
    for (i, p) in psql_runs.iter().enumerate() {
        let plink = link(psql_secs[i], psql_bytes);
        let z = &gw_zstd[i];
        let g = &gw_gzip[i];
        let gz = &grpc_zstd[i];
        println!(
            "  run {}: StreamExport zstd {:.2}x; gateway zstd {:.2}x, {:.1} MB, {:.1}x less time; gateway gzip {:.2}x, {:.1} MB, {:.1}x less time",
            i + 1,
            gz.rows as f64 / gz.secs / p,
            z.measure.rows as f64 / z.measure.secs / p,
            z.wire as f64 / 1e6,
            plink / link(z.measure.secs, z.wire),
            g.measure.rows as f64 / g.measure.secs / p,
            g.wire as f64 / 1e6,
            plink / link(g.measure.secs, g.wire),
        );
    }
}
