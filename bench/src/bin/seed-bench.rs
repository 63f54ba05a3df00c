//! seed-bench: `havenctl seed`'s generator (the `haven_appdata::seed` it calls) beside
//! `pgbench -i`, PostgreSQL's own data generator, on the same server in one run:
//! - `orders` alone and every kind at `--rows` rows each, into empty tables;
//! - `orders` into a table already holding `--populated` rows (its indexes stay);
//! - on the test kit's PostgreSQL (no fsync) and on one with PostgreSQL's durable defaults.
//!
//! Each measurement is the median of `--runs`, every run in a fresh database (the populated
//! case grows one table). Run it with `./bench/seed/run`.
#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use haven_appdata::{DataKind, SeedOptions};
use haven_bench::median;
use haven_testkit::PostgresServer;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Rows per kind; pgbench gets the scale that gives as many accounts.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows already in `customer_orders` for the populated case (0 skips it).
    #[arg(long, default_value_t = 5_000_000)]
    populated: u64,
    /// Repeat each measurement and report the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only the test kit's PostgreSQL, not the durable one as well.
    #[arg(long)]
    fast_only: bool,
}

/// One measured load.
struct Load {
    rows: u64,
    secs: f64,
    /// Bytes the load added on disk: tables and their indexes.
    bytes: u64,
}

struct Row {
    label: String,
    loads: Vec<Load>,
}

impl Row {
    fn rate(&self) -> f64 {
        median(self.loads.iter().map(|l| l.rows as f64 / l.secs).collect())
    }

    fn mb_per_sec(&self) -> f64 {
        median(
            self.loads
                .iter()
                .map(|l| l.bytes as f64 / 1e6 / l.secs)
                .collect(),
        )
    }

    fn rows(&self) -> u64 {
        self.loads.first().map_or(0, |l| l.rows)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rows < 100_000 {
        bail!("--rows must be at least 100000 (pgbench's scale 1)");
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "seed benchmark: {} rows per kind, median of {} runs, {cores} cores",
        args.rows, args.runs
    );
    let mut servers = vec![("test kit PostgreSQL (fsync off)", false)];
    if !args.fast_only {
        servers.push(("durable PostgreSQL (defaults: fsync on)", true));
    }
    for (name, durable) in servers {
        let pg = if durable {
            PostgresServer::start_durable()?
        } else {
            PostgresServer::start()?
        };
        let rows = measure(&pg, &args).await?;
        print(name, &rows);
    }
    Ok(())
}

async fn measure(pg: &PostgresServer, args: &Args) -> anyhow::Result<Vec<Row>> {
    let admin = PgPool::connect(&pg.url()).await?;
    let mut databases = 0u32;
    let mut fresh = async || -> anyhow::Result<(String, PgPool)> {
        databases += 1;
        let name = format!("seed_bench_{databases}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        let url = haven_testkit::with_database(&pg.url(), &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await?;
        Ok((url, pool))
    };

    // Every load starts from a clean slate: no checkpoint or kernel writeback of the
    // previous load's gigabytes running into its time.
    let settle = async || -> anyhow::Result<()> {
        sqlx::query("CHECKPOINT").execute(&admin).await?;
        Command::new("sync").status()?;
        Ok(())
    };
    let scale = args.rows / 100_000;
    let mut reference = Row {
        label: format!("pgbench -i -I dtgp -s {scale} (reference)"),
        loads: Vec::new(),
    };
    let mut orders = Row {
        label: "havenctl seed --type orders".into(),
        loads: Vec::new(),
    };
    let mut every = Row {
        label: "havenctl seed (every kind)".into(),
        loads: Vec::new(),
    };
    for run in 0..args.runs {
        let (url, pool) = fresh().await?;
        settle().await?;
        reference.loads.push(pgbench(&url, &pool, scale).await?);
        pool.close().await;

        let (_, pool) = fresh().await?;
        haven_appdata::migrate(&pool).await?;
        settle().await?;
        orders
            .loads
            .push(seed(&pool, args.rows, vec![DataKind::Orders], run).await?);
        pool.close().await;

        let (_, pool) = fresh().await?;
        haven_appdata::migrate(&pool).await?;
        settle().await?;
        every
            .loads
            .push(seed(&pool, args.rows, DataKind::ALL.to_vec(), run).await?);
        pool.close().await;
    }
    let mut rows = vec![reference, orders, every];

    if args.populated > 0 {
        let (_, pool) = fresh().await?;
        haven_appdata::migrate(&pool).await?;
        println!("  filling customer_orders with {} rows ...", args.populated);
        seed(&pool, args.populated, vec![DataKind::Orders], 99).await?;
        sqlx::query("VACUUM ANALYZE app.customer_orders")
            .execute(&pool)
            .await?;
        let mut populated = Row {
            label: format!("havenctl seed --type orders, into {}", args.populated),
            loads: Vec::new(),
        };
        for run in 0..args.runs {
            settle().await?;
            populated
                .loads
                .push(seed(&pool, args.rows, vec![DataKind::Orders], 100 + run).await?);
        }
        rows.push(populated);
    }
    Ok(rows)
}

/// Bytes of every table and index in the database's `app` and `public` schemas.
async fn on_disk(pool: &PgPool) -> anyhow::Result<u64> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('app', 'public') AND c.relkind IN ('r', 'i')",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

async fn seed(pool: &PgPool, rows: u64, kinds: Vec<DataKind>, run: usize) -> anyhow::Result<Load> {
    let before = on_disk(pool).await?;
    let mut options = SeedOptions::new(Uuid::new_v4(), "Bench", rows);
    options.kinds = kinds;
    options.seed = Some(run as u64);
    let report = haven_appdata::seed(pool, &options).await?;
    Ok(Load {
        rows: report.total(),
        secs: report.elapsed.as_secs_f64(),
        bytes: on_disk(pool).await?.saturating_sub(before),
    })
}

/// `pgbench -i` without its VACUUM step (`-I dtgp`: drop, create, generate client-side with
/// COPY, primary keys), which is what a seed does; rows are the accounts it writes.
async fn pgbench(url: &str, pool: &PgPool, scale: u64) -> anyhow::Result<Load> {
    let program = PostgresServer::program("pgbench")?;
    let started = Instant::now();
    let out = Command::new(&program)
        .args(["-i", "-I", "dtgp", "-q", "-s", &scale.to_string(), url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Load {
        rows: scale * 100_000,
        secs,
        bytes: on_disk(pool).await?,
    })
}

fn print(server: &str, rows: &[Row]) {
    println!();
    println!("{server}");
    println!(
        "  {:<46} {:>10} {:>10} {:>8} {:>13}",
        "", "rows", "rows/s", "MB/s", "vs pgbench -i"
    );
    let reference = rows.first().map_or(f64::NAN, Row::rate);
    for row in rows {
        haven_bench::summary(
            "seed",
            &format!("{} ({server})", row.label),
            &format!("{:.0} rows/s", row.rate()),
            "pgbench -i",
            &format!("{:.2}x", row.rate() / reference),
        );
        println!(
            "  {:<46} {:>10} {:>10.0} {:>8.1} {:>12.2}x",
            row.label,
            row.rows(),
            row.rate(),
            row.mb_per_sec(),
            row.rate() / reference
        );
    }
}
