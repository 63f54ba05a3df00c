//! Scheduled exports delivered by email through the tenant's Resend integration (the real
//! integrations service, the fake Resend): the file attached and parsed back, a file over
//! the attachment limit sent as a link that downloads it whole, and a 503 from Resend
//! retried through the retry queue until it is delivered once.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use haven_appdata::{DataKind, SeedOptions};
use haven_auth::Role;
use haven_fake_providers::FakeRoute;
use haven_proto::export::v1 as pb;
use haven_proto::integrations::v1 as ipb;
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use haven_testkit::Switch;
use uuid::Uuid;

use crate::statistics::world::{World, client};

const RESEND_KEY: &str = "re_schedule_test_key";

/// A tenant with 300 leads and Resend connected.
pub async fn tenant_with_resend(world: &World) -> Uuid {
    let tenant = Uuid::new_v4();
    let mut o = SeedOptions::new(tenant, "Mail", 300);
    o.kinds = vec![DataKind::Leads];
    o.days = 5;
    o.hostile_ratio = 0.0;
    haven_appdata::seed(&world.db.pool, &o).await.unwrap();
    world.fake.add_api_key("resend", RESEND_KEY);
    IntegrationsServiceClient::new(haven_testkit::channel(world.integrations))
        .connect_api_key(haven_testkit::request(
            ipb::ConnectApiKeyRequest {
                provider: "resend".into(),
                api_key: RESEND_KEY.into(),
            },
            &haven_testkit::token(tenant, Role::User),
        ))
        .await
        .unwrap();
    tenant
}

/// Creates an email schedule for all of the tenant's leads and makes its slot due now.
async fn due_email_schedule(world: &World, addr: std::net::SocketAddr, tenant: Uuid) -> String {
    let mut c = client(addr, &haven_testkit::token(tenant, Role::User)).await;
    let made = c
        .create_scheduled_export(pb::CreateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                export_type: "leads".into(),
                format: pb::ExportFormat::Csv as i32,
                date_range: pb::DateRangePreset::AllTime as i32,
                frequency: pb::ScheduleFrequency::Weekly as i32,
                enabled: true,
                delivery_method: pb::DeliveryMethod::Email as i32,
                delivery_email: "owner@example.com".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    crate::harness::make_due(&world.db.pool, &made.id).await;
    made.id
}

/// Starts an export service sending through the fake Resend (stopped by `stop`), makes an
/// email schedule of the tenant's due and waits up to `within` for its run to settle.
async fn run_email_schedule(
    world: &World,
    stop: &Switch,
    tenant: Uuid,
    within: Duration,
) -> (String, Uuid) {
    let addr = world
        .start_export(stop, |c| c.resend_url = world.fake.resend_base())
        .await;
    let schedule = due_email_schedule(world, addr, tenant).await;
    settled(world, &schedule, within).await
}

/// Waits for the schedule's run to leave `pending`; its status and run id.
async fn settled(world: &World, schedule: &str, within: Duration) -> (String, Uuid) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let row: Option<(String, Uuid)> = sqlx::query_as(
            "SELECT status, id FROM exports.scheduled_export_runs WHERE schedule_id = $1::uuid",
        )
        .bind(schedule)
        .fetch_optional(&world.db.pool)
        .await
        .unwrap();
        if let Some(row) = row.clone().filter(|r| r.0 != "pending") {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run is still {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn csv_rows(bytes: &[u8]) -> usize {
    csv::Reader::from_reader(bytes)
        .records()
        .map(Result::unwrap)
        .count()
}

#[tokio::test]
async fn an_email_schedule_sends_the_file_attached() {
    let world = World::with_file_store().await;
    let tenant = tenant_with_resend(&world).await;
    let stop = Switch::new();
    let (status, run) = run_email_schedule(&world, &stop, tenant, Duration::from_secs(30)).await;
    assert_eq!(status, "delivered");
    let sent = world.fake.resend_emails();
    assert_eq!(sent.len(), 1);
    let email = &sent[0];
    assert_eq!(email.to, vec!["owner@example.com".to_owned()]);
    assert_eq!(
        email.idempotency_key.as_deref(),
        Some(format!("scheduled-export-run-{run}").as_str())
    );
    assert!(email.subject.contains("export"), "{}", email.subject);
    assert!(email.text.contains("300 rows"), "{}", email.text);
    assert_eq!(email.attachments.len(), 1);
    let (name, bytes) = &email.attachments[0];
    assert!(name.ends_with(".csv"), "{name}");
    assert_eq!(csv_rows(bytes), 300);
    stop.fire();
}

#[tokio::test]
async fn a_file_over_the_limit_is_sent_as_a_link_that_downloads_it() {
    let world = World::with_s3_store().await;
    let tenant = tenant_with_resend(&world).await;
    let stop = Switch::new();
    let addr = world
        .start_export(&stop, |c| {
            c.resend_url = world.fake.resend_base();
            c.email_attachment_limit = 1_000;
        })
        .await;
    let schedule = due_email_schedule(&world, addr, tenant).await;
    let (status, _) = settled(&world, &schedule, Duration::from_secs(30)).await;
    assert_eq!(status, "delivered");
    let sent = world.fake.resend_emails();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].attachments.is_empty());
    let link = sent[0]
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no link in {:?}", sent[0].text));
    let file = reqwest::get(link).await.unwrap();
    assert_eq!(file.status(), 200, "{link}");
    assert_eq!(csv_rows(&file.bytes().await.unwrap()), 300);
    stop.fire();
}

#[tokio::test]
async fn a_resend_outage_is_retried_and_the_email_goes_out_once() {
    let world = World::with_file_store().await;
    let tenant = tenant_with_resend(&world).await;
    let stop = Switch::new();
    let retry = haven_testkit::spawn(&stop, {
        let mut config = haven_retry::Config::for_test(world.common());
        config.backoff_base = Duration::from_millis(200);
        move |listener, shutdown| haven_retry::serve(config, listener, shutdown)
    })
    .await;
    haven_testkit::wait_serving(retry.addr).await;
    world.fake.fail_next(FakeRoute::ResendEmails, 503, 1);
    let (status, run) = run_email_schedule(&world, &stop, tenant, Duration::from_secs(60)).await;
    assert_eq!(status, "delivered");
    let sent = world.fake.resend_emails();
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(format!("scheduled-export-run-{run}").as_str())
    );
    let (attempts, error): (i32, Option<String>) = sqlx::query_as(
        "SELECT attempts, last_error FROM exports.scheduled_export_runs WHERE id = $1",
    )
    .bind(run)
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(error, None);
    // The run is delivered before the owner's result reaches the queue.
    haven_testkit::wait_for("the queue item resolved", Duration::from_secs(30), || async {
        let item: String = sqlx::query_scalar(
            "SELECT status FROM retry.retry_items WHERE operation_type = 'exports.deliver_scheduled'",
        )
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
        (item == "resolved").then_some(())
    })
    .await;
    stop.fire();
}

/// An export with no rows still sends, saying so, with the header-only file attached.
#[tokio::test]
async fn an_empty_export_still_sends_saying_so() {
    let world = World::with_file_store().await;
    let tenant = tenant_with_resend(&world).await;
    sqlx::query("DELETE FROM app.leads WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&world.db.pool)
        .await
        .unwrap();
    let stop = Switch::new();
    let (status, _) = run_email_schedule(&world, &stop, tenant, Duration::from_secs(30)).await;
    assert_eq!(status, "delivered");
    let sent = world.fake.resend_emails();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text.contains("No rows matched"), "{}", sent[0].text);
    assert_eq!(sent[0].attachments.len(), 1);
    assert_eq!(csv_rows(&sent[0].attachments[0].1), 0);
    stop.fire();
}

/// A download schedule on S3: the run's signed link downloads the stored file.
#[tokio::test]
async fn a_download_schedules_link_downloads_the_file() {
    let world = World::with_s3_store().await;
    let tenant = tenant_with_resend(&world).await;
    let stop = Switch::new();
    let addr = world.start_export(&stop, |_| {}).await;
    let mut c = client(addr, &haven_testkit::token(tenant, Role::User)).await;
    let made = c
        .create_scheduled_export(pb::CreateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                export_type: "leads".into(),
                format: pb::ExportFormat::Ndjson as i32,
                date_range: pb::DateRangePreset::AllTime as i32,
                frequency: pb::ScheduleFrequency::Monthly as i32,
                day_of_month: 31,
                enabled: true,
                delivery_method: pb::DeliveryMethod::Download as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    crate::harness::make_due(&world.db.pool, &made.id).await;
    let (status, _) = settled(&world, &made.id, Duration::from_secs(30)).await;
    assert_eq!(status, "delivered");
    let runs = c
        .list_scheduled_export_runs(pb::ListScheduledExportRunsRequest {
            schedule_id: made.id.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let file = reqwest::get(&runs[0].download_url).await.unwrap();
    assert_eq!(file.status(), 200, "{}", runs[0].download_url);
    let text = file.text().await.unwrap();
    assert_eq!(text.lines().count(), 300);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(world.fake.resend_emails().is_empty());
    stop.fire();
}
