//! A full daily run, a rerun, a failing variant and its retry, and the S3 store.

use std::time::Duration;

use haven_fake_providers::FakeCatalog;
use haven_proto::export::v1 as pb;
use haven_testkit::Switch;

use super::world::World;
use crate::harness::next_event;

fn trigger(daily: bool, date: &str) -> pb::TriggerStatisticsExportRequest {
    pb::TriggerStatisticsExportRequest {
        date: date.into(),
        daily,
        ..Default::default()
    }
}

/// 2 shops × 50 products × 3 variants: 300 CSV and 300 JSON files with the right keys and
/// the right numbers, zero-event variants included; a rerun changes nothing and fetches no
/// image again.
#[tokio::test]
async fn a_daily_run_stores_every_variant_and_a_rerun_duplicates_nothing() {
    let mut world = World::with_file_store().await;
    world
        .add_shop(
            "north-store.myshopify.com",
            FakeCatalog::generate(50, 3, 2, 11),
        )
        .await;
    world
        .add_shop(
            "south-store.myshopify.com",
            FakeCatalog::generate(50, 3, 2, 12),
        )
        .await;
    world.insert_events(7).await;
    let stop = Switch::new();
    let addr = world.start_export(&stop, |_| {}).await;
    let mut admin = world.admin(addr).await;
    let mut events = async_nats::connect(haven_testkit::nats_url())
        .await
        .unwrap()
        .subscribe(format!("{}.haven.exports.events.completed", world.ns))
        .await
        .unwrap();

    let date = world.day.format("%Y-%m-%d").to_string();
    let started = admin
        .trigger_statistics_export(trigger(true, &date))
        .await
        .unwrap()
        .into_inner();
    assert!(started.created);
    let id = started.run.unwrap().id;
    // The day is claimed: a second daily trigger (a cron retry) finds the same run.
    let again = admin
        .trigger_statistics_export(trigger(true, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.run.unwrap().id, id);

    let run = world
        .finished(&mut admin, &id, Duration::from_secs(120))
        .await;
    assert_eq!(
        run.status,
        pb::StatisticsRunStatus::Completed as i32,
        "{run:?}"
    );
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
    assert_eq!(run.kind, "daily");
    assert_eq!(run.shop_progress.len(), 2);
    assert!(
        run.shop_progress
            .iter()
            .all(|s| s.status == "done" && s.variants == 150)
    );

    let keys = world.export_keys().await;
    assert_eq!(keys.len(), 600);
    assert_eq!(keys, world.wanted_keys());
    assert_eq!(world.check_files().await, 300);
    assert_eq!(world.count("statistics_exports").await, 300);
    assert_eq!(world.count("product_image_backups").await, 200);
    let fetches = world.image_fetches();
    assert_eq!(fetches.len(), 200);
    assert!(
        fetches.values().all(|n| *n == 1),
        "each image fetched once: {fetches:?}"
    );

    // The summary is published when the run ends.
    let (subject, event) = next_event(&mut events).await;
    assert!(subject.ends_with("haven.exports.events.completed"));
    let summary = event.statistics_run.unwrap();
    assert_eq!((summary.id.as_str(), summary.variants), (id.as_str(), 300));

    // A rerun of the same day (an admin's) replaces rows and objects, duplicating nothing,
    // and backs up no image again.
    let rerun = admin
        .trigger_statistics_export(trigger(false, &date))
        .await
        .unwrap()
        .into_inner();
    assert!(rerun.created);
    let rerun = world
        .finished(&mut admin, &rerun.run.unwrap().id, Duration::from_secs(120))
        .await;
    assert_eq!(
        (rerun.status, rerun.variants, rerun.images, rerun.failures),
        (pb::StatisticsRunStatus::Completed as i32, 300, 0, 0),
        "{rerun:?}"
    );
    assert_eq!(world.export_keys().await, world.wanted_keys());
    assert_eq!(world.check_files().await, 300);
    assert_eq!(world.count("statistics_exports").await, 300);
    assert_eq!(world.count("product_image_backups").await, 200);
    assert_eq!(world.image_fetches(), fetches);
    stop.fire();
}

/// The same against a real S3 protocol server, and the variant's stored exports listed
/// with presigned links that work.
#[tokio::test]
async fn runs_write_to_an_s3_store_with_presigned_links() {
    let mut world = World::with_s3_store().await;
    let tenant = world
        .add_shop(
            "cloud-store.myshopify.com",
            FakeCatalog::generate(10, 3, 2, 21),
        )
        .await;
    world.insert_events(3).await;
    let stop = Switch::new();
    let addr = world.start_export(&stop, |_| {}).await;
    let mut admin = world.admin(addr).await;
    let run = world.daily_run(&mut admin, Duration::from_secs(60)).await;
    assert_eq!((run.variants, run.failures), (30, 0), "{run:?}");
    assert_eq!(world.export_keys().await, world.wanted_keys());
    assert_eq!(world.check_files().await, 30);

    // The tenant's user lists one variant's exports with links S3 itself honours.
    let variant = world.shops[0].catalog.products[4].variants[1].id;
    let mut user =
        super::world::client(addr, &haven_testkit::token(tenant, haven_auth::Role::User)).await;
    let listed = user
        .list_variant_statistics(pb::ListVariantStatisticsRequest {
            variant_id: variant.to_string(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    assert_eq!(listed.len(), 1);
    let csv = reqwest::get(&listed[0].csv_url).await.unwrap();
    assert_eq!(csv.status(), 200, "{}", listed[0].csv_url);
    let body = csv.text().await.unwrap();
    assert!(body.starts_with("date,shopId,"), "{body}");
    assert!(body.contains(&format!(",{variant},")), "{body}");
    // Another tenant sees nothing of it.
    let mut other = super::world::client(
        addr,
        &haven_testkit::token(uuid::Uuid::new_v4(), haven_auth::Role::User),
    )
    .await;
    let none = other
        .list_variant_statistics(pb::ListVariantStatisticsRequest {
            variant_id: variant.to_string(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    assert!(none.is_empty());
    stop.fire();
}

/// One variant's image fails once at the CDN: that variant goes to the retry queue, every
/// other variant is stored, and the retry stores it.
#[tokio::test]
async fn a_failing_variant_is_retried_and_the_others_are_stored() {
    let mut world = World::with_file_store().await;
    // Three images for three variants: each variant shows its own, so failing one image
    // fails exactly one variant.
    let catalog = FakeCatalog::generate(20, 3, 3, 31);
    let failing_media = catalog.products[5].variants[0].media[0].id;
    let failing_variant = catalog.products[5].variants[0].id;
    world.add_shop("flaky-store.myshopify.com", catalog).await;
    world.insert_events(5).await;
    world.fake.fail_image_next(failing_media, 503, 1);
    let stop = Switch::new();
    // The retry service, dispatching the first attempt soon.
    let retry = haven_testkit::spawn(&stop, {
        let mut config = haven_retry::Config::for_test(world.common());
        config.backoff_base = Duration::from_millis(200);
        move |listener, shutdown| haven_retry::serve(config, listener, shutdown)
    })
    .await;
    haven_testkit::wait_serving(retry.addr).await;
    let addr = world.start_export(&stop, |_| {}).await;
    let mut admin = world.admin(addr).await;
    let run = world.daily_run(&mut admin, Duration::from_secs(60)).await;
    assert_eq!(run.status, pb::StatisticsRunStatus::Completed as i32);
    assert_eq!((run.variants, run.failures), (59, 1), "{run:?}");

    // The retry queue holds it, and resolves it by exporting the variant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM retry.retry_items WHERE operation_type = 'exports.statistics_variant'",
        )
        .fetch_optional(&world.db.pool)
        .await
        .unwrap();
        if status.as_deref() == Some("resolved") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry item is {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(world.count("statistics_exports").await, 60);
    assert_eq!(world.export_keys().await, world.wanted_keys());
    assert_eq!(world.check_files().await, 60);
    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM retry.retry_items WHERE operation_type = 'exports.statistics_variant'",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert!(payload.contains(&failing_variant.to_string()), "{payload}");
    stop.fire();
}
