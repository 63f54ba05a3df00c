//! Once per day across replicas, resumption after kill -9, and Shopify's throttling.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use haven_fake_providers::FakeCatalog;
use haven_proto::export::v1 as pb;
use haven_testkit::Switch;

use super::world::{LINK_SECRET, SECRET, World};

async fn daily_runs(world: &World) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("SELECT id, status FROM exports.statistics_runs WHERE kind = 'daily'")
        .fetch_all(&world.db.pool)
        .await
        .unwrap()
}

async fn wait_completed(world: &World, within: Duration) -> uuid::Uuid {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let runs = daily_runs(world).await;
        if let [(id, status)] = runs.as_slice()
            && status == "completed"
        {
            return *id;
        }
        assert!(runs.len() <= 1, "more than one daily run: {runs:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "daily run not completed: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas whose schedulers both wake up make one daily run between them.
#[tokio::test]
async fn two_replicas_make_a_single_daily_run() {
    let mut world = World::with_file_store().await;
    world
        .add_shop(
            "twin-store.myshopify.com",
            FakeCatalog::generate(20, 3, 2, 41),
        )
        .await;
    world.insert_events(9).await;
    let stop = Switch::new();
    let scheduled = |c: &mut haven_export::Config| c.statistics_scheduler = true;
    let (a, b) = tokio::join!(
        world.start_export(&stop, scheduled),
        world.start_export(&stop, scheduled)
    );
    let id = wait_completed(&world, Duration::from_secs(60)).await;
    // Both replicas keep ticking; still one run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(daily_runs(&world).await.len(), 1);
    let mut admin = world.admin(a).await;
    let run = world
        .finished(&mut admin, &id.to_string(), Duration::from_secs(5))
        .await;
    assert_eq!(
        (run.variants, run.failures, run.kind.as_str()),
        (60, 0, "daily"),
        "{run:?}"
    );
    assert_eq!(run.date, world.day.format("%Y-%m-%d").to_string());
    assert_eq!(world.export_keys().await, world.wanted_keys());
    assert_eq!(world.count("statistics_exports").await, 60);
    assert!(world.image_fetches().values().all(|n| *n == 1));
    // The other replica answers for the same run.
    let mut other = world.admin(b).await;
    let listed = other
        .list_statistics_runs(pb::ListStatisticsRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id.to_string());
    stop.fire();
}

/// The export service as its own process, so a test can kill it with SIGKILL.
fn spawn_binary(world: &World) -> Child {
    let config = world.export_config();
    let objects = &config.objects;
    Command::new(env!("CARGO_BIN_EXE_haven-export"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HAVEN_EXPORT_ADDR", "127.0.0.1:0")
        .env("HAVEN_EXPORT_METRICS_ADDR", "127.0.0.1:0")
        .env("HAVEN_DATABASE_URL", &world.db.url)
        .env("HAVEN_NATS_URL", haven_testkit::nats_url())
        .env("HAVEN_NATS_PREFIX", &world.ns)
        .env("HAVEN_JWT_SECRET", SECRET)
        .env("HAVEN_INTEGRATIONS_URL", &config.integrations_url)
        .env("HAVEN_SHOPIFY_URL_TEMPLATE", &config.shopify_url_template)
        .env("HAVEN_OBJECT_STORE_URL", objects.url.clone().unwrap())
        .env("HAVEN_OBJECT_LINK_SECRET", LINK_SECRET)
        .env("HAVEN_STATISTICS_SCHEDULER", "true")
        .env("HAVEN_STATISTICS_LEASE", "2s")
        .env("HAVEN_STATISTICS_CONCURRENCY", "2")
        .env("HAVEN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The export service killed with SIGKILL in the middle of the day's run: a replica
/// started afterwards takes the run over once its lease lapses and finishes it, with
/// exactly 300 + 300 objects and each variant counted once.
#[tokio::test]
async fn a_run_killed_midway_resumes_and_finishes_exactly_once() {
    let mut world = World::with_file_store().await;
    world
        .add_shop(
            "east-store.myshopify.com",
            FakeCatalog::generate(50, 3, 2, 51),
        )
        .await;
    world
        .add_shop(
            "west-store.myshopify.com",
            FakeCatalog::generate(50, 3, 2, 52),
        )
        .await;
    world.insert_events(11).await;
    // Paced by Shopify's bucket, so the run takes a while.
    world.fake.set_shopify_graphql_limits(720.0, 200.0);
    let mut child = spawn_binary(&world);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Zero until the child has migrated its schema.
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM exports.statistics_exports")
            .fetch_one(&world.db.pool)
            .await
            .unwrap_or(0);
        if stored >= 20 {
            assert!(stored < 300, "the run finished before it could be killed");
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the export service exited: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = world.count("statistics_exports").await;
    assert!(at_kill < 300);

    // A fresh replica (no scheduler: only the takeover can finish it).
    let stop = Switch::new();
    let addr = world.start_export(&stop, |_| {}).await;
    let id = wait_completed(&world, Duration::from_secs(120)).await;
    let mut admin = world.admin(addr).await;
    let run = world
        .finished(&mut admin, &id.to_string(), Duration::from_secs(5))
        .await;
    assert_eq!(
        (
            run.shops,
            run.products,
            run.variants,
            run.images,
            run.failures
        ),
        (2, 100, 300, 200, 0),
        "{run:?}"
    );
    let keys = world.export_keys().await;
    assert_eq!(keys.len(), 600);
    assert_eq!(keys, world.wanted_keys());
    assert_eq!(world.count("statistics_exports").await, 300);
    assert_eq!(world.count("product_image_backups").await, 200);
    assert_eq!(world.check_files().await, 300);
    // No staging files of the killed process's uploads remain beside the objects.
    if let Some(url) = &world.objects.url {
        let root = std::path::PathBuf::from(url.trim_start_matches("file://"));
        let strays = walk(&root)
            .into_iter()
            .filter(|p| {
                !p.ends_with(".csv")
                    && !p.ends_with(".json")
                    && !p.ends_with(".png")
                    && !p.ends_with(".jpg")
            })
            .collect::<Vec<_>>();
        // Only the killed process's uploads under way may have left their staging files:
        // two variants at once (HAVEN_STATISTICS_CONCURRENCY above), each writing its CSV,
        // JSON and image at the same time. Each of those objects was then written whole.
        assert!(strays.len() <= 2 * 3, "partial uploads left: {strays:?}");
        for stray in &strays {
            let object = stray.rsplit_once('#').map_or(stray.as_str(), |(o, _)| o);
            assert!(
                std::path::Path::new(object).exists(),
                "a partial upload {stray} beside no finished object"
            );
        }
    }
    stop.fire();
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

/// A shop whose bucket holds little more than one page: the run waits as the bucket says
/// and is never throttled, and still stores everything.
#[tokio::test]
async fn the_run_paces_itself_to_shopifys_bucket() {
    let mut world = World::with_file_store().await;
    world
        .add_shop(
            "small-plan.myshopify.com",
            FakeCatalog::generate(30, 3, 2, 61),
        )
        .await;
    world.insert_events(13).await;
    world.fake.set_shopify_graphql_limits(750.0, 200.0);
    let stop = Switch::new();
    let addr = world.start_export(&stop, |_| {}).await;
    let mut admin = world.admin(addr).await;
    let run = world.daily_run(&mut admin, Duration::from_secs(120)).await;
    assert_eq!((run.variants, run.failures), (90, 0), "{run:?}");
    let stats = world.fake.shopify_graphql_stats("small-plan.myshopify.com");
    assert!(stats.queries >= 8, "{stats:?}");
    assert_eq!(stats.throttled, 0, "the client waited instead: {stats:?}");
    assert!(
        stats.min_available_after_charge.unwrap() >= 0.0,
        "{stats:?}"
    );
    assert_eq!(world.export_keys().await, world.wanted_keys());
    stop.fire();
}
