//! statistics-bench: the daily product statistics run over 10,000 variants and over 40,000,
//! against the fake Shopify (its bucket set out of the way, so the run's own speed is what is
//! measured) and a file store on local disk: variants/s and the export service's peak RSS,
//! each run printed, then the medians and the worst. The reference is seed 004's own figure
//! for its serverless run: 750 variants in about 90 s.
//!
//! Run it with `./bench/statistics/run` (it builds the release binaries first).
#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use haven_appdata::{CatalogShape, DataKind, SeedOptions};
use haven_auth::{Claims, Minter, Role};
use haven_bench::{bin_dir, free_addr, median, peak_rss_mib};
use haven_fake_providers::{FakeCatalog, FakeConfig, FakeProviders};
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Variants of the small shop.
    #[arg(long, default_value_t = 10_000)]
    variants: u64,
    /// Variants of the big shop, for the memory comparison.
    #[arg(long, default_value_t = 40_000)]
    big_variants: u64,
    /// Repeat each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// HAVEN_STATISTICS_CONCURRENCY of the export service.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// The test kit's secret: `connect_shopify` signs its user token with it.
const SECRET: &str = haven_testkit::JWT_SECRET;
const LINK_SECRET: &str = "bench-object-link-secret-0123456789abcdef";
const VARIANTS_PER_PRODUCT: u64 = 4;
/// Seed 004's "large shop": 750 variants in about 90 seconds.
const SEED_RATE: f64 = 750.0 / 90.0;

struct Shop {
    tenant: Uuid,
    shape: CatalogShape,
}

struct Measure {
    variants: u64,
    secs: f64,
    rss: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let haven_bench::Servers {
        pg: _pg,
        nats,
        db_url,
        pool,
    } = haven_bench::Servers::start().await?;
    haven_appdata::migrate(&pool).await?;

    // The fake Shopify with the bucket out of the way: the run's speed, not Shopify's.
    let fake = FakeProviders::start(FakeConfig::default()).await?;
    fake.set_shopify_graphql_limits(1e12, 1e12);
    let fc = FakeConfig::default();
    let mut providers = haven_integrations::ProviderArgs::defaults();
    providers.shopify_client_id = fc.shopify_client_id.clone();
    providers.shopify_client_secret =
        SecretString::from(fc.shopify_client_secret.expose_secret().to_owned());
    providers.shopify_url_template = fake.shopify_url_template();
    let config = haven_integrations::Config::for_test(haven_server::CommonArgs::new(
        &db_url,
        &nats.url(),
        "",
        SECRET,
    ))
    .with_providers(providers);
    let stop = haven_testkit::Switch::new();
    let integrations =
        haven_testkit::spawn(&stop, |l, s| haven_integrations::serve(config, l, s)).await;
    haven_testkit::wait_serving(integrations.addr).await;

    // Two shops: the small and the big one, each with one image per product and a day of
    // events (two days seeded, yesterday is exported).
    let mut shops = Vec::new();
    for (name, variants) in [("small", args.variants), ("big", args.big_variants)] {
        let tenant = Uuid::new_v4();
        let mut shape = CatalogShape::demo(tenant);
        shape.shop_domain = format!("bench-{name}.myshopify.com");
        shape.products = variants.div_ceil(VARIANTS_PER_PRODUCT);
        shape.variants_per_product = VARIANTS_PER_PRODUCT;
        fake.set_shopify_catalog(&shape.shop_domain, FakeCatalog::shaped(&shape, 1));
        haven_testkit::connect_shopify(integrations.addr, tenant, &shape.shop_domain).await;
        let mut options = SeedOptions::new(tenant, name, variants * 10);
        options.kinds = vec![DataKind::AbTests];
        options.catalog = shape.clone();
        options.days = 2;
        options.hostile_ratio = 0.0;
        let report = haven_appdata::seed(&pool, &options).await?;
        println!(
            "shop {}: {} products × {VARIANTS_PER_PRODUCT} variants, {} events seeded",
            shape.shop_domain,
            shape.products,
            report.total()
        );
        shops.push(Shop { tenant, shape });
    }
    sqlx::query("VACUUM ANALYZE app.ab_test_events")
        .execute(&pool)
        .await?;

    let mut small = Vec::new();
    let mut big = Vec::new();
    for run in 1..=args.runs {
        for (shop, out) in [(&shops[0], &mut small), (&shops[1], &mut big)] {
            let m = measure(
                &args,
                &db_url,
                &nats.url(),
                integrations.addr,
                &fake,
                shop,
                &pool,
            )
            .await?;
            println!(
                "run {run} {:<24} {:>6} variants in {:>6.1} s  {:>7.0} variants/s  ({:>5.0}× seed 004)  peak RSS {:>6.1} MiB",
                shop.shape.shop_domain,
                m.variants,
                m.secs,
                m.variants as f64 / m.secs,
                m.variants as f64 / m.secs / SEED_RATE,
                m.rss
            );
            out.push(m);
        }
    }
    println!();
    println!(
        "reference: seed 004's serverless run, 750 variants in ~90 s = {SEED_RATE:.1} variants/s"
    );
    for (label, ms) in [("10k-class", &small), ("40k-class", &big)] {
        let rates: Vec<f64> = ms.iter().map(|m| m.variants as f64 / m.secs).collect();
        let rss: Vec<f64> = ms.iter().map(|m| m.rss).collect();
        let worst_rate = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let worst_rss = rss.iter().copied().fold(0.0, f64::max);
        println!(
            "{label}: {} variants  median {:.0} variants/s (worst {worst_rate:.0}), {:.0}× seed 004 (worst {:.0}×)  peak RSS median {:.1} MiB (worst {worst_rss:.1})",
            ms.first().map(|m| m.variants).unwrap_or(0),
            median(rates.clone()),
            median(rates.clone()) / SEED_RATE,
            worst_rate / SEED_RATE,
            median(rss.clone()),
        );
        haven_bench::summary(
            "statistics",
            &format!("{label} daily run"),
            &format!(
                "{:.0} variants/s (worst {worst_rate:.0}), peak RSS {:.1} MiB",
                median(rates.clone()),
                median(rss.clone())
            ),
            &format!("seed 004 {SEED_RATE:.1} variants/s"),
            &format!(
                "{:.0}x (worst {:.0}x)",
                median(rates.clone()) / SEED_RATE,
                worst_rate / SEED_RATE
            ),
        );
    }
    stop.fire();
    Ok(())
}

/// One run of the day's statistics for one shop, by a fresh export service process on a
/// fresh file store (so every run backs up every image).
async fn measure(
    args: &Args,
    db_url: &str,
    nats_url: &str,
    integrations: std::net::SocketAddr,
    fake: &FakeProviders,
    shop: &Shop,
    pool: &PgPool,
) -> anyhow::Result<Measure> {
    sqlx::query("TRUNCATE exports.statistics_exports, exports.product_image_backups")
        .execute(pool)
        .await
        .ok();
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut child: Child = Command::new(bin_dir().join("haven-export"))
        .env("HAVEN_DATABASE_URL", db_url)
        .env("HAVEN_NATS_URL", nats_url)
        .env("HAVEN_JWT_SECRET", SECRET)
        .env("HAVEN_LOG", "warn")
        .env("HAVEN_EXPORT_ADDR", &addr)
        .env("HAVEN_EXPORT_METRICS_ADDR", "127.0.0.1:0")
        .env("HAVEN_INTEGRATIONS_URL", format!("http://{integrations}"))
        .env("HAVEN_SHOPIFY_URL_TEMPLATE", fake.shopify_url_template())
        .env(
            "HAVEN_OBJECT_STORE_URL",
            format!("file://{}", dir.path().display()),
        )
        .env("HAVEN_OBJECT_LINK_SECRET", LINK_SECRET)
        .env("HAVEN_STATISTICS_SCHEDULER", "false")
        .env("HAVEN_STATISTICS_CONCURRENCY", args.concurrency.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("start haven-export (build it with --release)")?;
    haven_testkit::wait_serving(addr.parse()?).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let token = Minter::hs256(SECRET.as_bytes())?.mint(&Claims::new(
        shop.tenant,
        "bench-admin",
        vec![Role::Admin],
        Duration::from_secs(3600),
    ))?;
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client =
        ExportServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", auth.clone());
            Ok(r)
        });
    let started = Instant::now();
    let run = client
        .trigger_statistics_export(pb::TriggerStatisticsExportRequest {
            shop_domain: shop.shape.shop_domain.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .run
        .context("no run")?;
    let done = loop {
        let r = client
            .get_statistics_run(pb::GetStatisticsRunRequest { id: run.id.clone() })
            .await?
            .into_inner();
        if r.status != pb::StatisticsRunStatus::Running as i32 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(child.id());
    let want = shop.shape.products * shop.shape.variants_per_product;
    anyhow::ensure!(
        done.status == pb::StatisticsRunStatus::Completed as i32
            && done.variants == want
            && done.failures == 0,
        "the run did not store every variant: {done:?}"
    );
    // Check the output before trusting the time: every variant's files are on disk, and one
    // CSV reads back with its header.
    let files = walk(dir.path());
    anyhow::ensure!(
        files as u64 >= want * 2,
        "{files} files for {want} variants"
    );
    let product = shop.shape.product_id(shop.shape.products - 1);
    let variant = shop
        .shape
        .variant_id(shop.shape.products - 1, VARIANTS_PER_PRODUCT - 1);
    let day = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y%m%d");
    let last = dir.path().join(format!(
        "statistic-exports/{}/{product}/{variant}/{day}.csv",
        shop.shape.shop_domain
    ));
    let csv = std::fs::read_to_string(&last).with_context(|| format!("{}", last.display()))?;
    anyhow::ensure!(
        csv.starts_with("date,shopId,productId,variantId,")
            && csv.contains(&format!(",{variant},")),
        "{csv}"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports.statistics_exports WHERE shop_domain = $1",
    )
    .bind(&shop.shape.shop_domain)
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(stored as u64 == want, "{stored} rows for {want} variants");
    let _ = child.kill();
    let _ = child.wait();
    Ok(Measure {
        variants: want,
        secs,
        rss,
    })
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
