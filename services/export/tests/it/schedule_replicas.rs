//! Scheduled exports across running replicas: three export services on one database and
//! one manual clock deliver every slot of ten simulated weeks exactly once (one run, one
//! export, one email or one stored file each), and a run whose replica died after claiming
//! it is taken over when its lease lapses.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use haven_auth::Role;
use haven_export::schedule::Clock;
use haven_export::schedule::model::Settings;
use haven_objects::ObjectKey;
use haven_proto::export::v1 as pb;
use haven_testkit::Switch;
use uuid::Uuid;

use crate::schedule_mail::tenant_with_resend;
use crate::statistics::world::{World, client};

#[derive(Debug, sqlx::FromRow)]
struct Run {
    schedule: String,
    scheduled_for: DateTime<Utc>,
    status: String,
    late: bool,
    export_id: Option<Uuid>,
    object_key: Option<String>,
    attempts: i32,
    leased_until: Option<DateTime<Utc>>,
}

fn leads(
    frequency: pb::ScheduleFrequency,
    day: i32,
    time: &str,
    zone: &str,
    email: bool,
) -> pb::ScheduledExport {
    let weekly = frequency == pb::ScheduleFrequency::Weekly;
    pb::ScheduledExport {
        export_type: "leads".into(),
        format: pb::ExportFormat::Csv as i32,
        date_range: pb::DateRangePreset::AllTime as i32,
        frequency: frequency as i32,
        weekday: if weekly { day } else { 0 },
        day_of_month: if weekly { 0 } else { day },
        time_of_day: time.into(),
        time_zone: zone.into(),
        enabled: true,
        delivery_method: if email {
            pb::DeliveryMethod::Email
        } else {
            pb::DeliveryMethod::Download
        } as i32,
        delivery_email: if email {
            "ops@example.com".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

async fn create(
    addr: std::net::SocketAddr,
    tenant: Uuid,
    s: pb::ScheduledExport,
) -> pb::ScheduledExport {
    client(addr, &haven_testkit::token(tenant, Role::User))
        .await
        .create_scheduled_export(pb::CreateScheduledExportRequest {
            scheduled_export: Some(s),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until nothing is due at the clock's time and no run is pending.
async fn quiet(pool: &sqlx::PgPool, now: DateTime<Utc>, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (due, pending): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM exports.scheduled_exports WHERE enabled AND next_run_at <= $1),
                    (SELECT count(*) FROM exports.scheduled_export_runs WHERE status = 'pending')",
        )
        .bind(now)
        .fetch_one(pool)
        .await
        .unwrap();
        if due == 0 && pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {due} schedules due and {pending} runs pending after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_replicas_deliver_every_slot_of_ten_weeks_exactly_once() {
    let world = World::with_file_store().await;
    let tenant = tenant_with_resend(&world).await;
    let clock = Clock::manual(Utc::now());
    let stop = Switch::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            world
                .start_export(&stop, |c| {
                    c.resend_url = world.fake.resend_base();
                    c.clock = clock.clone();
                    c.scheduler_tick = Duration::from_millis(20);
                })
                .await,
        );
    }
    use pb::ScheduleFrequency::{Monthly, Weekly};
    let mut schedules = Vec::new();
    for (i, s) in [
        leads(Weekly, 1, "08:00", "UTC", true),
        leads(Weekly, 7, "02:30", "Europe/Paris", false),
        leads(Weekly, 3, "23:45", "America/New_York", true),
        leads(Monthly, 31, "07:15", "Asia/Kolkata", false),
        leads(Monthly, 1, "00:00", "Europe/Paris", true),
    ]
    .into_iter()
    .enumerate()
    {
        schedules.push(create(replicas[i % 3], tenant, s).await);
    }

    // Every slot each schedule must run in ten weeks, from its own rule.
    let start = clock.now();
    let end = start + chrono::Duration::weeks(10);
    let mut want: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for s in &schedules {
        let rule = Settings::from_proto(s).unwrap().rule().unwrap();
        let mut slot = haven_proto::time::from_timestamp(s.next_run_at.as_ref().unwrap()).unwrap();
        while slot <= end {
            want.entry(s.id.clone()).or_default().push(slot);
            slot = rule.next_after(slot);
        }
    }
    let instants: BTreeSet<DateTime<Utc>> = want.values().flatten().copied().collect();
    assert!(instants.len() >= 25, "{} slots", instants.len());

    // The clock visits each slot; the three replicas race for it.
    for at in &instants {
        clock.set(*at);
        quiet(&world.db.pool, *at, &format!("slot {at}")).await;
    }

    let runs: Vec<Run> = sqlx::query_as(
        "SELECT schedule_id::text AS schedule, scheduled_for, status, late, export_id, object_key,
                attempts, leased_until
         FROM exports.scheduled_export_runs ORDER BY scheduled_for",
    )
    .fetch_all(&world.db.pool)
    .await
    .unwrap();
    let mut got: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for r in &runs {
        assert_eq!(r.status, "delivered", "{r:?}");
        assert!(!r.late, "ran on time: {r:?}");
        assert!(r.export_id.is_some() && r.object_key.is_some(), "{r:?}");
        assert_eq!(r.attempts, 1, "ran once: {r:?}");
        assert_eq!(
            r.leased_until, None,
            "a delivered run holds no lease: {r:?}"
        );
        got.entry(r.schedule.clone())
            .or_default()
            .push(r.scheduled_for);
    }
    assert_eq!(got, want, "each slot has exactly one run");

    // One export per run, and each file stored once under its slot.
    let exports: i64 =
        sqlx::query_scalar("SELECT count(*) FROM exports.export_history WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&world.db.pool)
            .await
            .unwrap();
    assert_eq!(exports as usize, runs.len(), "no slot was exported twice");
    let distinct: BTreeSet<Option<Uuid>> = runs.iter().map(|r| r.export_id).collect();
    assert_eq!(distinct.len(), runs.len());
    let storage = world.storage();
    for r in &runs {
        let key = ObjectKey::parse(r.object_key.as_deref().unwrap()).unwrap();
        assert!(storage.size(&key).await.unwrap().unwrap() > 0, "{key}");
    }

    // One email per emailed run, each under its own run's Idempotency-Key.
    let email_schedules: BTreeSet<&str> = schedules
        .iter()
        .filter(|s| s.delivery_method == pb::DeliveryMethod::Email as i32)
        .map(|s| s.id.as_str())
        .collect();
    let emailed = runs
        .iter()
        .filter(|r| email_schedules.contains(r.schedule.as_str()))
        .count();
    let sent = world.fake.resend_emails();
    assert_eq!(sent.len(), emailed, "one email per emailed slot");
    let keys: BTreeSet<_> = sent.iter().map(|e| e.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), emailed);
    stop.fire();
}

#[tokio::test]
async fn a_run_whose_replica_died_is_taken_over_when_its_lease_lapses() {
    let world = World::with_file_store().await;
    let tenant = tenant_with_resend(&world).await;
    // A replica that only serves calls creates the schedules.
    let stop = Switch::new();
    let front = world.start_export(&stop, |c| c.scheduler = false).await;
    let download = create(
        front,
        tenant,
        leads(pb::ScheduleFrequency::Weekly, 2, "09:00", "UTC", false),
    )
    .await;
    let email = create(
        front,
        tenant,
        leads(pb::ScheduleFrequency::Weekly, 2, "09:00", "UTC", true),
    )
    .await;
    for s in [&download, &email] {
        crate::harness::make_due(&world.db.pool, &s.id).await;
    }

    // A replica claims both slots with a one-second lease, then dies before running them.
    let claimed =
        haven_export::schedule::claim_due(&world.db.pool, Utc::now(), 10, Duration::from_secs(1))
            .await
            .unwrap();
    assert_eq!(claimed.len(), 2);
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports.scheduled_export_runs WHERE status = 'pending' AND leased_until > now()",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(leased, 2, "the runs are leased to the dead replica");

    // Another replica takes them over once the lease has lapsed, and delivers each once.
    world
        .start_export(&stop, |c| {
            c.resend_url = world.fake.resend_base();
            c.scheduler_lease = Duration::from_secs(1);
            c.scheduler_tick = Duration::from_millis(50);
        })
        .await;
    quiet(&world.db.pool, Utc::now(), "the lapsed runs").await;
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT schedule_id::text AS schedule, scheduled_for, status, late, export_id, object_key,
                attempts, leased_until
         FROM exports.scheduled_export_runs ORDER BY schedule_id",
    )
    .fetch_all(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(r.status, "delivered", "{r:?}");
        assert!(r.object_key.is_some(), "{r:?}");
        assert_eq!(
            r.leased_until, None,
            "a delivered run holds no lease: {r:?}"
        );
    }
    assert_eq!(
        world.fake.resend_emails().len(),
        1,
        "the email went out once"
    );
    stop.fire();
}
