//! retry-bench: the retry queue against graphile-worker, on the same PostgreSQL, in one run.
//!
//! Run it with `./bench/retry/run` (it installs graphile-worker first). Figures:
//! - backlog: N items already due → dispatched over NATS → no-op handler → result → resolved,
//!   beside graphile-worker's own method (N jobs added in SQL, two `--once -j 24 -m 25`
//!   workers, minus one empty start-up);
//! - steady state: enqueue over NATS and processing at once, one message per item and 500
//!   items per message (`haven.retry.enqueues`), beside graphile-worker's same shape of work
//!   (jobs added in SQL, 500 a statement, while its two workers run);
//! - due-to-dispatch latency: items scheduled to fall due over a few seconds, measured from
//!   their due time to the handler receiving them.
#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use haven_bench::{median, percentile};
use haven_bus::{Bus, NatsArgs};
use haven_proto::events::v1::{RetryDispatch, RetryEnqueue, RetryEnqueues, RetryLifecycle};
use haven_proto::retry::v1::EnqueueRequest;
use haven_proto::retry::v1::enqueue_request::FirstRun;
use haven_retry_client::HandlerError;
use haven_server::CommonArgs;
use sqlx::PgPool;
use uuid::Uuid;

/// Items per `haven.retry.enqueues` message in the batched steady runs: as many as
/// graphile-worker's jobs per `add_jobs` statement.
const STEADY_BATCH: u64 = 500;

#[derive(Parser)]
struct Args {
    /// Items in the backlog run (graphile-worker runs the same number of jobs).
    #[arg(long, default_value_t = 50_000)]
    items: u64,
    /// Items in the steady-state run.
    #[arg(long, default_value_t = 50_000)]
    steady_items: u64,
    /// Items in the latency run (at least 1,000 for meaningful percentiles).
    #[arg(long, default_value_t = 2_000)]
    latency_items: u64,
    /// How long the latency run spreads its due times.
    #[arg(long, default_value = "4s", value_parser = humantime_parse)]
    latency_spread: Duration,
    /// Directory with graphile-worker installed (npm) and its no-op task.
    #[arg(long, default_value = "bench/retry/graphile")]
    graphile_dir: PathBuf,
    /// Repeat each measurement and report the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the graphile-worker reference.
    #[arg(long)]
    skip_reference: bool,
    /// The replicas' `HAVEN_RETRY_CLAIM_AHEAD` (the service's default unless given).
    #[arg(long, value_parser = humantime_parse)]
    claim_ahead: Option<Duration>,
    /// Pending items for the first peak-RSS reading (the `haven-retry` binary, drained alone).
    #[arg(long, default_value_t = 100_000)]
    rss_items: u64,
    /// Pending items for the second peak-RSS reading; 0 skips the RSS phase.
    #[arg(long, default_value_t = 1_000_000)]
    rss_big_items: u64,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s}"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("bad duration {s}: use s or ms")),
    }
}

const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";

/// p50, p99, p99.9 and max of sorted, non-empty latencies (ms).
fn percentiles(sorted: &[f64]) -> String {
    format!(
        "p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.1}",
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        percentile(sorted, 0.999),
        sorted[sorted.len() - 1]
    )
}

/// One latency run's sorted samples: due → received, and due → published.
type LatencyRun = (Vec<f64>, Vec<f64>);

/// The latency runs summed up: each percentile's median across runs, and the run with the
/// highest p99 whole.
struct LatencyRuns {
    received: String,
    published: String,
    worst: String,
}

impl LatencyRuns {
    fn of(runs: &[LatencyRun]) -> Option<Self> {
        let medians = |pick: fn(&LatencyRun) -> &Vec<f64>| {
            let at = |p: f64| median(runs.iter().map(|r| percentile(pick(r), p)).collect());
            format!(
                "p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.1}",
                at(0.5),
                at(0.99),
                at(0.999),
                at(1.0)
            )
        };
        let worst = runs
            .iter()
            .max_by(|a, b| percentile(&a.0, 0.99).total_cmp(&percentile(&b.0, 0.99)))?;
        Some(LatencyRuns {
            received: medians(|r| &r.0),
            published: medians(|r| &r.1),
            worst: percentiles(&worst.0),
        })
    }
}

/// mimalloc, not glibc's malloc: under load the latter took a third of the service's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // sqlx's slow-statement warnings would only name the benchmark's own bulk INSERTs and DELETEs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx::query=error")
        .try_init();
    let haven_bench::Servers {
        pg,
        nats,
        db_url,
        pool,
    } = haven_bench::Servers::start().await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;

    // Our side: one retry-service replica and a no-op owner, in this process.
    let config = || {
        let mut config =
            haven_retry::Config::for_test(CommonArgs::new(&db_url, &nats.url(), "", SECRET));
        config.claim_batch = 512;
        if let Some(ahead) = args.claim_ahead {
            config.claim_ahead = ahead;
        }
        config.max_in_flight = 20_000;
        config.common.db.max_connections = 20;
        config
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The in-process replicas stop before the RSS phase, while the owner goes on; the
    // second replica stops after its runs.
    let (replicas_stop_tx, replicas_stop_rx) = tokio::sync::watch::channel(false);
    let replica = |config: haven_retry::Config, mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let stopped = async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        anyhow::Ok(tokio::spawn(haven_retry::serve(config, listener, stopped)))
    };
    let service = replica(config(), replicas_stop_rx.clone()).await?;
    let bus = Bus::connect(&NatsArgs::new(nats.url(), "").config("retry-bench")?).await?;
    let events = Resolutions::listen(&bus).await?;
    wait_for_schema(&pool).await?;

    // Per latency item: due → received, and its part due → published (the dispatcher's
    // `dispatched_at`, set when it builds the message after the claim commits).
    let latencies: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let owner = {
        let bus = bus.clone();
        let latencies = latencies.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            for op in ["bench.backlog", "bench.steady", "bench.latency"] {
                let bus = bus.clone();
                let latencies = latencies.clone();
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    haven_retry_client::consume(
                        &bus,
                        op,
                        512,
                        move |d: RetryDispatch| {
                            let latencies = latencies.clone();
                            async move {
                                if d.operation_type == "bench.latency"
                                    && let (Some(due), Some(sent)) = (d.due_at, d.dispatched_at)
                                {
                                    let now = chrono::Utc::now();
                                    let at = |t: prost_types::Timestamp| {
                                        chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                                            .unwrap()
                                    };
                                    let ms = |d: chrono::TimeDelta| {
                                        d.num_microseconds().unwrap_or(0) as f64 / 1000.0
                                    };
                                    let (due, sent) = (at(due), at(sent));
                                    latencies
                                        .lock()
                                        .unwrap()
                                        .push((ms(now - due), ms(sent - due)));
                                }
                                Ok::<(), HandlerError>(())
                            }
                        },
                        async move {
                            let _ = rx.wait_for(|v| *v).await;
                        },
                    )
                    .await
                    .unwrap();
                });
            }
            let _ = rx.wait_for(|v| *v).await;
        })
    };

    // graphile-worker's runs alternate with ours, each ratio taken within its pair: this
    // machine's speed drifts over minutes, and graphile-worker run after all of ours read
    // anywhere from 671 to 1,596 jobs/s.
    let graphile = if args.skip_reference {
        None
    } else {
        Some(Graphile::prepare(&args.graphile_dir, &db_url).await?)
    };
    println!(
        "haven-retry: backlog of {} due items, {} run(s){} ...",
        args.items,
        args.runs,
        if graphile.is_some() {
            ", each followed by graphile-worker's run of as many jobs"
        } else {
            ""
        }
    );
    // One run of each, not timed, first: our first timed run on new tables read 8,370
    // jobs/s against 10,849 and 11,313 after it (01:32 on 2026-12-08; the tables and
    // their indexes grow from nothing, where later runs reuse the space vacuumed).
    println!("  warming up: a run of each, not timed");
    run_backlog(&pool, &events, args.items).await?;
    if let Some(g) = &graphile {
        g.run(&pool, args.items).await?;
    }
    let mut backlog = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.runs {
        backlog.push(run_backlog(&pool, &events, args.items).await?);
        if let Some(g) = &graphile {
            theirs.push(g.run(&pool, args.items).await?);
        }
    }
    // Before the steady pairs: after graphile-worker's steady runs (the heaviest writes of
    // the benchmark) this machine's WAL flushes were slow for minutes, and two replicas,
    // which wait on them more than one, read 0.58-0.87x of one replica's run.
    println!(
        "haven-retry: a second replica on the same PostgreSQL; backlog of {} due items, {} run(s) ...",
        args.items, args.runs
    );
    let (second_stop_tx, second_stop_rx) = tokio::sync::watch::channel(false);
    let second = replica(config(), second_stop_rx).await?;
    let mut backlog_two = Vec::new();
    for _ in 0..args.runs {
        backlog_two.push(run_backlog(&pool, &events, args.items).await?);
    }
    // The steady and latency runs measure one replica again.
    second_stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .context("the second replica did not stop within 30 s")???;
    println!(
        "haven-retry: steady state, {} items enqueued over NATS while processing ...",
        args.steady_items
    );
    let mut steady = Vec::new();
    let mut steady_batched = Vec::new();
    let mut their_steady = Vec::new();
    // graphile-worker's run comes between our two, where it came after our one steady run
    // before the batched runs were added (run after both once, it read 0.74-0.86x of its
    // backlog, and 0.97x the next time). The batched run, after it, is the one that meets
    // the writes just made.
    for _ in 0..args.runs {
        steady.push(run_steady(&pool, &bus, &events, args.steady_items, 1).await?);
        if let Some(g) = &graphile {
            their_steady.push(g.run_steady(&pool, args.steady_items).await?);
        }
        steady_batched
            .push(run_steady(&pool, &bus, &events, args.steady_items, STEADY_BATCH).await?);
    }
    println!(
        "haven-retry: latency, {} items falling due over {:?} ...",
        args.latency_items, args.latency_spread
    );
    // One set of samples per run, each sorted: (due → received, due → published).
    let mut latency_runs: Vec<LatencyRun> = Vec::new();
    for _ in 0..args.runs {
        run_latency(
            &pool,
            &bus,
            &events,
            args.latency_items,
            args.latency_spread,
        )
        .await?;
        let (mut lat, mut to_publish): (Vec<f64>, Vec<f64>) =
            std::mem::take(&mut *latencies.lock().unwrap())
                .into_iter()
                .unzip();
        lat.sort_by(|a, b| a.total_cmp(b));
        to_publish.sort_by(|a, b| a.total_cmp(b));
        // Every item resolved, so every one was received (a redelivery adds a sample).
        ensure!(
            lat.len() as u64 >= args.latency_items,
            "latency run: {} samples for {} items",
            lat.len(),
            args.latency_items
        );
        if !lat.is_empty() {
            println!(
                "  {} samples: {} ms (due→published {} ms)",
                lat.len(),
                percentiles(&lat),
                percentiles(&to_publish)
            );
            latency_runs.push((lat, to_publish));
        }
    }
    let our_hot = hot_updates(&pool, "retry", "retry_items").await?;

    let reference = (!theirs.is_empty()).then(|| median(theirs.clone()));

    let their_hot = match reference {
        Some(_) => Some(hot_updates(&pool, "graphile_worker%", "%").await?),
        None => None,
    };
    replicas_stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), service).await;
    let rss = if args.rss_big_items > 0 {
        println!(
            "haven-retry (the release binary, alone): peak RSS draining {} then {} pending items ...",
            args.rss_items, args.rss_big_items
        );
        Some(
            run_rss(
                &pool,
                &events,
                &config(),
                &db_url,
                &nats.url(),
                args.rss_items,
                args.rss_big_items,
            )
            .await?,
        )
    } else {
        None
    };
    stop_tx.send_replace(true);
    let _ = owner.await;

    let ours = median(backlog.clone());
    // Each run's ratio within its pair (ours, then graphile-worker's).
    let pair_ratios: Vec<f64> = backlog.iter().zip(&theirs).map(|(o, t)| o / t).collect();
    println!();
    println!(
        "Retry queue benchmark — PostgreSQL {pg_version} (fsync on), {} CPUs, medians of {} runs",
        cpus(),
        args.runs
    );
    println!(
        "{:<46} {:>14} {:>16} {:>8}",
        "", "haven-retry", "graphile-worker", "ratio"
    );
    row(
        &format!("backlog of {} due jobs (jobs/s)", args.items),
        ours,
        reference.map(|r| (r, median(pair_ratios.clone()))),
    );
    let two = median(backlog_two.clone());
    row(
        "  the same, two replicas (jobs/s)",
        two,
        reference.map(|r| (r, two / r)),
    );
    // Each steady run's ratio within its pair, and against graphile-worker's backlog (which
    // times no adding of jobs).
    let steady_ratios: Vec<f64> = steady
        .iter()
        .zip(&their_steady)
        .map(|(o, t)| o / t)
        .collect();
    let their_steady_median = (!their_steady.is_empty()).then(|| median(their_steady.clone()));
    row(
        "steady state: enqueue + process (items/s)",
        median(steady.clone()),
        their_steady_median.map(|r| (r, median(steady_ratios.clone()))),
    );
    if let Some(r) = reference {
        println!(
            "{:<46} {:>14} {:>16.0} {:>7.2}x",
            "  against graphile-worker's backlog (jobs/s)",
            "",
            r,
            median(steady.clone()) / r
        );
    }
    let batched_ratios: Vec<f64> = steady_batched
        .iter()
        .zip(&their_steady)
        .map(|(o, t)| o / t)
        .collect();
    row(
        &format!("  the same, {STEADY_BATCH} items a message (items/s)"),
        median(steady_batched.clone()),
        their_steady_median.map(|r| (r, median(batched_ratios.clone()))),
    );
    let latency = LatencyRuns::of(&latency_runs);
    if let Some(l) = &latency {
        println!(
            "{:<46} {:>14}",
            format!(
                "due→dispatch latency, {} run(s) of {} (ms)",
                latency_runs.len(),
                args.latency_items
            ),
            l.received
        );
        println!("{:<46} {:>14}", "  the worst run (ms)", l.worst);
        println!(
            "{:<46} {:>14}",
            "  of which due→published by the dispatcher (ms)", l.published
        );
    }
    println!(
        "{:<46} {:>14} {:>16}",
        "HOT updates of the queue table",
        our_hot.to_string(),
        their_hot.map_or_else(|| "-".to_owned(), |h| h.to_string())
    );
    if let Some(r) = &rss {
        println!(
            "{:<46} {:>14}",
            "haven-retry peak RSS (MiB)",
            format!(
                "{:.1} at {} pending, {:.1} at {} ({:.0} / {:.0} jobs/s)",
                r.small_mib,
                args.rss_items,
                r.big_mib,
                args.rss_big_items,
                r.small_rate,
                r.big_rate
            )
        );
    }
    println!(
        "runs: backlog {:?} jobs/s; two replicas {:?} jobs/s; steady {:?} items/s, {STEADY_BATCH} a message {:?}; latency p99 {:?} ms",
        rounded(&backlog),
        rounded(&backlog_two),
        rounded(&steady),
        rounded(&steady_batched),
        latency_runs
            .iter()
            .map(|(lat, _)| (percentile(lat, 0.99) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let two_places = |v: &[f64]| {
        v.iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    };
    if !theirs.is_empty() {
        println!(
            "runs: graphile-worker {:?} jobs/s, each after ours; backlog ratio within each pair {:?}",
            rounded(&theirs),
            two_places(&pair_ratios)
        );
        println!(
            "runs: graphile-worker, jobs added while it works, {:?} jobs/s, each between our two; steady ratio within each triple {:?}, {STEADY_BATCH} a message {:?}",
            rounded(&their_steady),
            two_places(&steady_ratios),
            two_places(&batched_ratios)
        );
    }
    let worst_backlog = worst(&backlog);
    let (reference_cell, ratio_cell) = match reference {
        Some(r) => (
            format!("graphile-worker {r:.0} jobs/s"),
            format!(
                "{:.2}x (worst {:.2}x)",
                median(pair_ratios.clone()),
                worst(&pair_ratios)
            ),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    haven_bench::summary(
        "retry",
        &format!("backlog of {} due jobs", args.items),
        &format!("{ours:.0} jobs/s (worst {worst_backlog:.0})"),
        &reference_cell,
        &ratio_cell,
    );
    let worst_two = worst(&backlog_two);
    haven_bench::summary(
        "retry",
        &format!("backlog of {} due jobs, two replicas", args.items),
        &format!("{two:.0} jobs/s (worst {worst_two:.0})"),
        &reference.map_or_else(
            || "-".to_owned(),
            |r| format!("graphile-worker {r:.0} jobs/s"),
        ),
        &reference.map_or_else(
            || "-".to_owned(),
            |r| format!("{:.2}x (worst {:.2}x)", two / r, worst_two / r),
        ),
    );
    steady_summary(
        "steady state, enqueue over NATS + process",
        &steady,
        &steady_ratios,
        their_steady_median,
        reference.map(|backlog| format!("; {:.2}x its backlog", median(steady.clone()) / backlog)),
    );
    steady_summary(
        &format!("steady state, enqueue over NATS {STEADY_BATCH} a message + process"),
        &steady_batched,
        &batched_ratios,
        their_steady_median,
        None,
    );
    if let Some(l) = &latency {
        haven_bench::summary(
            "retry",
            "due→dispatch latency, medians of the runs",
            &format!("{} ms (worst run {} ms)", l.received, l.worst),
            "-",
            "-",
        );
    }
    if let Some(r) = &rss {
        haven_bench::summary(
            "retry",
            "service peak RSS, pending items drained",
            &format!(
                "{:.1} MiB at {}, {:.1} MiB at {}",
                r.small_mib, args.rss_items, r.big_mib, args.rss_big_items
            ),
            "-",
            "-",
        );
    }
    drop(nats);
    drop(pg);
    Ok(())
}

/// Peak RSS of the `haven-retry` binary after draining each backlog, and the rates it drained them at.
struct Rss {
    small_mib: f64,
    big_mib: f64,
    small_rate: f64,
    big_rate: f64,
}

/// Starts the release `haven-retry` as a process of its own (the in-process replicas have
/// stopped), so that its peak RSS is the service's alone, and drains `small` then `big`
/// pending items through it, with the in-process replicas' settings (`config`). VmHWM only
/// grows, so the second reading covers both.
async fn run_rss(
    pool: &PgPool,
    events: &Resolutions,
    config: &haven_retry::Config,
    db_url: &str,
    nats_url: &str,
    small: u64,
    big: u64,
) -> anyhow::Result<Rss> {
    let mut child = Command::new(haven_bench::bin_dir().join("haven-retry"))
        .env("HAVEN_DATABASE_URL", db_url)
        .env("HAVEN_NATS_URL", nats_url)
        .env("HAVEN_JWT_SECRET", SECRET)
        .env("HAVEN_LOG", "warn")
        .env("HAVEN_RETRY_ADDR", haven_bench::free_addr()?)
        .env("HAVEN_RETRY_METRICS_ADDR", "127.0.0.1:0")
        .env("HAVEN_RETRY_CLAIM_BATCH", config.claim_batch.to_string())
        .env(
            "HAVEN_RETRY_CLAIM_AHEAD",
            format!("{}ms", config.claim_ahead.as_millis()),
        )
        .env(
            "HAVEN_RETRY_MAX_IN_FLIGHT",
            config.max_in_flight.to_string(),
        )
        .env(
            "HAVEN_DATABASE_MAX_CONNECTIONS",
            config.common.db.max_connections.to_string(),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start haven-retry (build it with --release)")?;
    let result = async {
        let small_rate = run_backlog(pool, events, small).await?;
        let small_mib = haven_bench::peak_rss_mib(child.id());
        let big_rate = run_backlog(pool, events, big).await?;
        let big_mib = haven_bench::peak_rss_mib(child.id());
        if let Some(status) = child.try_wait()? {
            bail!("haven-retry exited during the RSS phase: {status}");
        }
        anyhow::Ok(Rss {
            small_mib,
            big_mib,
            small_rate,
            big_rate,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    clear(pool, events, "bench.backlog").await?;
    result
}

/// Updates of a table and how many were HOT (no index touched), from PostgreSQL's counters.
struct Hot {
    updates: i64,
    hot: i64,
}

impl std::fmt::Display for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = if self.updates > 0 {
            100.0 * self.hot as f64 / self.updates as f64
        } else {
            0.0
        };
        write!(f, "{pct:.1}% of {}", self.updates)
    }
}

/// The busiest table whose schema and name are `LIKE` the patterns.
async fn hot_updates(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<Hot> {
    // Statistics reach the shared counters within a second of a transaction's end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (updates, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
         WHERE schemaname LIKE $1 AND relname LIKE $2 ORDER BY n_tup_upd DESC LIMIT 1",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(pool)
    .await?
    .unwrap_or((0, 0));
    Ok(Hot { updates, hot })
}

/// One line of the table: ours, and the reference with the ratio when there is one.
fn row(label: &str, ours: f64, reference: Option<(f64, f64)>) {
    match reference {
        Some((r, ratio)) => println!("{label:<46} {ours:>14.0} {r:>16.0} {ratio:>7.2}x"),
        None => println!("{label:<46} {ours:>14.0} {:>16} {:>8}", "-", "-"),
    }
}

/// The lowest of the runs (rates or ratios).
fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// A steady-state SUMMARY line: our runs, graphile-worker's steady median, and the ratios
/// within each triple, with `more` after them.
fn steady_summary(
    measure: &str,
    runs: &[f64],
    ratios: &[f64],
    their_median: Option<f64>,
    more: Option<String>,
) {
    haven_bench::summary(
        "retry",
        measure,
        &format!(
            "{:.0} items/s (worst {:.0})",
            median(runs.to_vec()),
            worst(runs)
        ),
        &their_median.map_or_else(
            || "-".to_owned(),
            |r| format!("graphile-worker, jobs added while it works, {r:.0} jobs/s"),
        ),
        &their_median.map_or_else(
            || "-".to_owned(),
            |_| {
                format!(
                    "{:.2}x (worst {:.2}x){}",
                    median(ratios.to_vec()),
                    worst(ratios),
                    more.unwrap_or_default()
                )
            },
        ),
    );
}

fn rounded(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| *x as u64).collect()
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

async fn wait_for_schema(pool: &PgPool) -> anyhow::Result<()> {
    for _ in 0..300 {
        let ready: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('retry.retry_items')::text")
                .fetch_one(pool)
                .await?;
        if ready.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the retry service never migrated its schema")
}

async fn resolved(pool: &PgPool, op: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM retry.retry_items WHERE operation_type = $1 AND status = 'resolved'",
    )
    .bind(op)
    .fetch_one(pool)
    .await?)
}

/// The items each operation saw resolved, from the queue's own `resolved` events (published
/// after the outcome committed). Waiting on them costs the database nothing, where polling a
/// count every few milliseconds took a good part of a core from the queue being measured.
#[derive(Clone, Default)]
struct Resolutions {
    seen: Arc<Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Resolutions {
    async fn listen(bus: &Bus) -> anyhow::Result<Resolutions> {
        let this = Resolutions::default();
        let mut sub = bus
            .client()
            .subscribe(
                bus.namespace()
                    .subject(haven_retry_client::RESOLVED_SUBJECT),
            )
            .await?;
        let inner = this.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(msg) = sub.next().await {
                let Ok(event) = <RetryLifecycle as prost::Message>::decode(msg.payload) else {
                    continue;
                };
                if let Some(item) = event.item {
                    inner
                        .seen
                        .lock()
                        .unwrap()
                        .entry(item.operation_type)
                        .or_default()
                        .insert(item.id);
                    inner.changed.notify_waiters();
                }
            }
        });
        Ok(this)
    }

    fn reset(&self, op: &str) {
        self.seen.lock().unwrap().remove(op);
    }

    fn count(&self, op: &str) -> usize {
        self.seen.lock().unwrap().get(op).map_or(0, |s| s.len())
    }
}

/// Waits until `n` items of `op` are resolved, then checks that the database agrees.
/// Returns when the last was seen resolved: the check is not part of the work timed (as
/// graphile-worker's count of jobs left is not part of its).
async fn wait_resolved(
    pool: &PgPool,
    events: &Resolutions,
    op: &str,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let done = loop {
        let changed = events.changed.notified();
        if events.count(op) as u64 >= n {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "{op}: only {} of {n} resolved after {timeout:?}",
                resolved(pool, op).await?
            );
        }
        // A second without an event: the events may have been missed (a slow subscriber),
        // so ask the database.
        if tokio::time::timeout(Duration::from_secs(1), changed)
            .await
            .is_err()
            && resolved(pool, op).await? >= n as i64
        {
            break Instant::now();
        }
    };
    let stored = resolved(pool, op).await?;
    if stored != n as i64 {
        bail!("{op}: {stored} items resolved in the database, {n} expected");
    }
    Ok(done)
}

/// Removes an earlier run's items, and vacuums them away as autovacuum would between runs
/// spaced out in time, so that one run's dead rows do not slow the next.
async fn clear(pool: &PgPool, events: &Resolutions, op: &str) -> anyhow::Result<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM retry.retry_items WHERE operation_type = $1 RETURNING id)
         DELETE FROM retry.retry_attempts a USING gone WHERE a.item_id = gone.id",
    )
    .bind(op)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM (ANALYZE) retry.retry_items, retry.retry_attempts")
        .execute(pool)
        .await?;
    events.reset(op);
    Ok(())
}

/// N due items appear at once (one INSERT, as graphile-worker's test adds its jobs), and
/// the clock runs until the last is resolved.
async fn run_backlog(pool: &PgPool, events: &Resolutions, n: u64) -> anyhow::Result<f64> {
    clear(pool, events, "bench.backlog").await?;
    // Ids as the service gives them: UUIDv7, in the order items arrive. Random (v4) ids,
    // which it never creates, sent each claim's and result's index entries all over the
    // key range: at 1M items that range outgrew PostgreSQL's buffers and a claim of 512
    // took over a second.
    let mut ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    ids.sort_unstable();
    let started = Instant::now();
    sqlx::query(
        "WITH ins AS (
             INSERT INTO retry.retry_items (id, tenant_id, operation_type, payload)
             SELECT u.id, '00000000-0000-4000-8000-00000000be01', 'bench.backlog', json_build_object('id', u.i)::jsonb
             FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, i)
         ) SELECT pg_notify('haven_retry_due', '')",
    )
    .bind(&ids)
    .execute(pool)
    .await?;
    // At least 600 s, and 1,000 items/s for a big backlog.
    let timeout = Duration::from_secs(600.max(n / 1_000));
    let done = wait_resolved(pool, events, "bench.backlog", n, timeout).await?;
    let secs = done.duration_since(started).as_secs_f64();
    println!("  {n} items in {secs:.2}s");
    Ok(n as f64 / secs)
}

/// Enqueues `n` items over NATS while the replica processes them, timed until every one is
/// resolved. `per_message` 1 publishes each alone on `haven.retry.enqueue` and awaits the
/// acks 500 at a time; more puts that many in each `haven.retry.enqueues` message, each
/// message's ack awaited before the next, as graphile-worker's statements are.
async fn run_steady(
    pool: &PgPool,
    bus: &Bus,
    events: &Resolutions,
    n: u64,
    per_message: u64,
) -> anyhow::Result<f64> {
    clear(pool, events, "bench.steady").await?;
    let tenant = Uuid::new_v4().to_string();
    let run = Uuid::new_v4().simple().to_string();
    let item = |i: u64| RetryEnqueue {
        tenant_id: tenant.clone(),
        user_id: String::new(),
        request: Some(EnqueueRequest {
            operation_type: "bench.steady".into(),
            payload_json: format!(r#"{{"id":{i}}}"#),
            ..Default::default()
        }),
    };
    let started = Instant::now();
    if per_message > 1 {
        for first in (0..n).step_by(per_message as usize) {
            let message = RetryEnqueues {
                items: (first..(first + per_message).min(n)).map(item).collect(),
            };
            let payload = prost::Message::encode_to_vec(&message).into();
            bus.publish_bytes(
                haven_retry_client::ENQUEUES_SUBJECT,
                payload,
                &format!("{run}-{first}"),
            )
            .await
            .context("enqueues not acked")?;
        }
    } else {
        let mut acks = Vec::new();
        for i in 0..n {
            let payload = prost::Message::encode_to_vec(&item(i)).into();
            acks.push(
                bus.publish_start(
                    haven_retry_client::ENQUEUE_SUBJECT,
                    payload,
                    &format!("{run}-{i}"),
                )
                .await?,
            );
            if acks.len() >= 500 {
                for ack in acks.drain(..) {
                    ack.await.context("enqueue not acked")?;
                }
            }
        }
        for ack in acks {
            ack.await.context("enqueue not acked")?;
        }
    }
    let enqueued = started.elapsed().as_secs_f64();
    let done = wait_resolved(pool, events, "bench.steady", n, Duration::from_secs(600)).await?;
    let secs = done.duration_since(started).as_secs_f64();
    println!(
        "  {n} items enqueued {} in {enqueued:.2}s, all resolved after {secs:.2}s",
        if per_message > 1 {
            format!("{per_message} a message")
        } else {
            "one a message".to_owned()
        }
    );
    Ok(n as f64 / secs)
}

/// Items scheduled to fall due one after another over `spread`: the dispatcher must wake
/// for each due time by itself.
async fn run_latency(
    pool: &PgPool,
    bus: &Bus,
    events: &Resolutions,
    n: u64,
    spread: Duration,
) -> anyhow::Result<()> {
    clear(pool, events, "bench.latency").await?;
    let tenant = Uuid::new_v4().to_string();
    let first_due = chrono::Utc::now() + chrono::Duration::seconds(2);
    let step = spread.as_micros() as i64 / n.max(1) as i64;
    for i in 0..n {
        let due = first_due + chrono::Duration::microseconds(step * i as i64);
        let message = RetryEnqueue {
            tenant_id: tenant.clone(),
            user_id: String::new(),
            request: Some(EnqueueRequest {
                operation_type: "bench.latency".into(),
                payload_json: "{}".into(),
                first_run: Some(FirstRun::RunAt(haven_proto::time::timestamp(due))),
                ..Default::default()
            }),
        };
        bus.publish(
            haven_retry_client::ENQUEUE_SUBJECT,
            &message,
            &format!("lat-{tenant}-{i}"),
        )
        .await?;
    }
    wait_resolved(pool, events, "bench.latency", n, Duration::from_secs(120)).await?;
    Ok(())
}

/// graphile-worker's own performance test: add N jobs in SQL, run two `--once -j 24 -m 25`
/// workers until the queue is empty; jobs/s = N / (wall time − one empty start-up).
struct Graphile {
    bin: PathBuf,
    dir: PathBuf,
    db_url: String,
    /// One empty `--once` run's wall time (the median of three), taken off each run's.
    startup: f64,
}

impl Graphile {
    /// Installs its schema and measures its empty start-up.
    async fn prepare(dir: &PathBuf, db_url: &str) -> anyhow::Result<Self> {
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("{} not found", dir.display()))?;
        let bin = dir.join("node_modules/.bin/graphile-worker");
        if !bin.exists() {
            bail!(
                "{} not found: run `npm install` in {} (./bench/retry/run does)",
                bin.display(),
                dir.display()
            );
        }
        let mut graphile = Graphile {
            bin,
            dir,
            db_url: db_url.to_owned(),
            startup: 0.0,
        };
        let status = graphile.worker(&["--schema-only"]).status()?;
        if !status.success() {
            bail!("graphile-worker --schema-only failed");
        }
        let mut startups = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = graphile
                .worker(&["--once", "-j", "24", "-m", "25"])
                .output()?;
            if !out.status.success() {
                bail!(
                    "graphile-worker failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            startups.push(t.elapsed().as_secs_f64());
        }
        graphile.startup = median(startups);
        println!(
            "  graphile-worker's empty start-up {:.2}s",
            graphile.startup
        );
        Ok(graphile)
    }

    fn worker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .arg("-c")
            .arg(&self.db_url)
            .args(args)
            .env("NO_LOG_SUCCESS", "1");
        cmd
    }

    /// Its tables, after vacuuming away an earlier run's deleted jobs (as [`clear`] does ours).
    async fn vacuumed_tables(pool: &PgPool) -> anyhow::Result<Vec<String>> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
             WHERE schemaname LIKE 'graphile_worker%'",
        )
        .fetch_all(pool)
        .await?;
        if !tables.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM {}", tables.join(", "))))
                .execute(pool)
                .await?;
        }
        Ok(tables)
    }

    /// One run of `n` jobs: its jobs/s, after checking none is left.
    async fn run(&self, pool: &PgPool, n: u64) -> anyhow::Result<f64> {
        // Each run at its best, as its first on a new schema: its earlier run's deleted jobs
        // are vacuumed away, and its tables analyzed once the jobs are in. Without that,
        // every run after the first planned its job fetch on statistics of another moment
        // and ran at a quarter of the speed (2,647 / 692 / 674 jobs/s). Analyzing the empty
        // tables instead made adding the jobs take minutes.
        let tables = Self::vacuumed_tables(pool).await?;
        sqlx::query("SELECT graphile_worker.add_job('noop', json_build_object('id', i)) FROM generate_series(1, $1) i")
            .bind(i64::try_from(n)?)
            .execute(pool)
            .await?;
        if !tables.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ANALYZE {}",
                tables.join(", ")
            )))
            .execute(pool)
            .await?;
        }
        let t = Instant::now();
        let mut children = Vec::new();
        for _ in 0..2 {
            children.push(
                self.worker(&["--once", "-j", "24", "-m", "25"])
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        for mut child in children {
            if !child.wait()?.success() {
                bail!("a graphile-worker process failed");
            }
        }
        let wall = t.elapsed().as_secs_f64();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM graphile_worker.jobs")
            .fetch_one(pool)
            .await?;
        if left != 0 {
            bail!("graphile-worker left {left} jobs");
        }
        let rate = n as f64 / (wall - self.startup).max(1e-3);
        println!("  graphile-worker: {n} jobs in {wall:.2}s wall ({rate:.0} jobs/s)");
        Ok(rate)
    }

    /// The steady state's shape of work for graphile-worker: jobs added while it works, as
    /// ours are enqueued while our queue works. Its two `-j 24 -m 25` workers start first
    /// and are listening before the clock starts (no start-up is timed); `add_job` then runs
    /// in statements of 500 (our publisher waits for acks 500 at a time), each committed as
    /// it comes, and the clock stops when its queue is empty. The jobs go in through its bulk
    /// `add_jobs`: 20,000 took 0.2 s on this machine, where `add_job` row by row took 18.6 s. A job that failed would stay
    /// in the queue, so an empty queue is every job done.
    ///
    /// Its tables keep the statistics of its last backlog run, taken with that run's jobs in.
    async fn run_steady(&self, pool: &PgPool, n: u64) -> anyhow::Result<f64> {
        Self::vacuumed_tables(pool).await?;
        // Connections that began listening after this moment: an earlier run's workers, or
        // their backends still exiting, do not count.
        let spawned: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await?;
        let listening = || async {
            anyhow::Ok(
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE query LIKE 'LISTEN \"jobs:insert\"%' AND backend_start >= $1",
                )
                .bind(spawned)
                .fetch_one(pool)
                .await?,
            )
        };
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(Worker(
                self.worker(&["-j", "24", "-m", "25"])
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            ));
        }
        let ready_by = Instant::now() + Duration::from_secs(60);
        while listening().await? < 2 {
            for w in &mut workers {
                if let Some(status) = w.0.try_wait()? {
                    bail!("a graphile-worker process exited at start-up: {status}");
                }
            }
            ensure!(
                Instant::now() < ready_by,
                "graphile-worker's workers were not listening after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = Instant::now();
        let mut added = 0u64;
        while added < n {
            let k = (n - added).min(500);
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM graphile_worker.add_jobs(ARRAY(
                     SELECT ROW('noop', json_build_object('id', i), NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
                     FROM generate_series($1::bigint, $2::bigint) i))",
            )
            .bind(i64::try_from(added + 1)?)
            .bind(i64::try_from(added + k)?)
            .fetch_all(pool)
            .await?;
            ensure!(
                ids.len() as u64 == k,
                "add_job added {} of {k} jobs",
                ids.len()
            );
            added += k;
        }
        let adding = t.elapsed().as_secs_f64();
        // Looked at every 20 ms: at most that much added to a run of seconds.
        let done_by = Instant::now() + Duration::from_secs(600);
        loop {
            let empty: bool =
                sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM graphile_worker.jobs)")
                    .fetch_one(pool)
                    .await?;
            if empty {
                break;
            }
            if Instant::now() > done_by {
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM graphile_worker.jobs")
                    .fetch_one(pool)
                    .await?;
                bail!("graphile-worker left {left} of {n} jobs after 600 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        drop(workers);
        let rate = n as f64 / secs;
        println!(
            "  graphile-worker: {n} jobs added in {adding:.2}s while it worked, all done after {secs:.2}s ({rate:.0} jobs/s)"
        );
        Ok(rate)
    }
}

/// A long-running graphile-worker process, stopped gracefully (SIGTERM) when dropped.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if !signalled.is_ok_and(|s| s.success()) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
