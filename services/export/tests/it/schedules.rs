//! Scheduled exports' RPCs: create, read, page, pause and resume, edit and delete, each field
//! checked, every call scoped to the caller's tenant.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use haven_proto::export::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::harness::{Client, start};

/// Claims made by the tests themselves stay theirs: the service's scheduler must not take
/// them over.
const LEASE: std::time::Duration = std::time::Duration::from_secs(3600);

fn weekly_paris() -> pb::ScheduledExport {
    pb::ScheduledExport {
        export_type: "orders".into(),
        format: pb::ExportFormat::Csv as i32,
        fields: vec!["total".into()],
        date_range: pb::DateRangePreset::LastWeek as i32,
        frequency: pb::ScheduleFrequency::Weekly as i32,
        weekday: 1,
        time_of_day: "08:00".into(),
        time_zone: "Europe/Paris".into(),
        enabled: true,
        delivery_method: pb::DeliveryMethod::Email as i32,
        delivery_email: "ops@example.com".into(),
        ..Default::default()
    }
}

async fn create(
    client: &mut Client,
    s: pb::ScheduledExport,
) -> Result<pb::ScheduledExport, tonic::Status> {
    client
        .create_scheduled_export(pb::CreateScheduledExportRequest {
            scheduled_export: Some(s),
        })
        .await
        .map(|r| r.into_inner())
}

fn local(
    ts: &Option<prost_types::Timestamp>,
    zone: chrono_tz::Tz,
) -> chrono::DateTime<chrono_tz::Tz> {
    haven_proto::time::from_timestamp(ts.as_ref().unwrap())
        .unwrap()
        .with_timezone(&zone)
}

#[tokio::test]
async fn schedules_are_created_read_paged_paused_edited_and_deleted() {
    use chrono::{Datelike, Timelike};
    let stack = start("").await;
    let tenant = Uuid::new_v4();
    let mut c = stack.client(tenant).await;

    let made = create(&mut c, weekly_paris()).await.unwrap();
    assert_eq!(made.tenant_id, tenant.to_string());
    assert_eq!(
        (made.time_of_day.as_str(), made.time_zone.as_str()),
        ("08:00", "Europe/Paris")
    );
    // The next slot is a Monday at 08:00 in Paris, within a week.
    let next = local(&made.next_run_at, chrono_tz::Europe::Paris);
    assert_eq!(
        (next.weekday(), next.hour(), next.minute()),
        (chrono::Weekday::Mon, 8, 0)
    );
    assert!(next.with_timezone(&chrono::Utc) > chrono::Utc::now());
    assert!(next.with_timezone(&chrono::Utc) <= chrono::Utc::now() + chrono::Duration::days(7));

    let got = c
        .get_scheduled_export(pb::GetScheduledExportRequest {
            id: made.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, made);

    // Pages, oldest first.
    for i in 0..4 {
        let mut s = weekly_paris();
        s.weekday = i + 2;
        create(&mut c, s).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_scheduled_exports(pb::ListScheduledExportsRequest {
                page_size: Some(2),
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.scheduled_exports.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], made.id);

    // Pause: only `enabled` changes, next_run_at stays.
    let paused = c
        .update_scheduled_export(pb::UpdateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                id: made.id.clone(),
                enabled: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!paused.enabled);
    assert_eq!(paused.export_type, "orders");
    assert_eq!(paused.next_run_at, made.next_run_at);
    // Edit: monthly on the 31st at 06:30 New York time, resumed.
    let edited = c
        .update_scheduled_export(pb::UpdateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                id: made.id.clone(),
                enabled: true,
                frequency: pb::ScheduleFrequency::Monthly as i32,
                day_of_month: 31,
                time_of_day: "06:30".into(),
                time_zone: "America/New_York".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: ["enabled", "frequency", "time_of_day", "time_zone"]
                    .map(String::from)
                    .to_vec(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(edited.enabled);
    assert_eq!((edited.weekday, edited.day_of_month), (0, 31));
    let next = local(&edited.next_run_at, chrono_tz::America::New_York);
    assert_eq!((next.hour(), next.minute()), (6, 30));
    let last_of_month = (next.date_naive() + chrono::Duration::days(1)).day() == 1;
    assert!(next.day() == 31 || last_of_month, "{next}");

    // Another tenant sees none of it and cannot touch it.
    let mut other = stack.client(Uuid::new_v4()).await;
    let listed = other
        .list_scheduled_exports(pb::ListScheduledExportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.scheduled_exports.is_empty());
    let err = other
        .get_scheduled_export(pb::GetScheduledExportRequest {
            id: made.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = other
        .update_scheduled_export(pb::UpdateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                id: made.id.clone(),
                enabled: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = other
        .delete_scheduled_export(pb::DeleteScheduledExportRequest {
            id: made.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    c.delete_scheduled_export(pb::DeleteScheduledExportRequest {
        id: made.id.clone(),
    })
    .await
    .unwrap();
    let err = c
        .get_scheduled_export(pb::GetScheduledExportRequest { id: made.id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    stack.stop.fire();
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let stack = start("").await;
    let mut c = stack.client(Uuid::new_v4()).await;
    type Edit = fn(&mut pb::ScheduledExport);
    let cases: [(&str, Edit); 8] = [
        ("export_type", |s| s.export_type = "invoices".into()),
        ("fields", |s| s.fields = vec!["password".into()]),
        ("format", |s| s.format = pb::ExportFormat::Pdf as i32),
        ("frequency", |s| s.frequency = 0),
        ("time_zone", |s| s.time_zone = "Europe/Atlantis".into()),
        ("time_of_day", |s| s.time_of_day = "24:30".into()),
        ("delivery_email", |s| {
            s.delivery_email = "ops at example dot com".into()
        }),
        ("weekday", |s| s.weekday = 9),
    ];
    for (field, edit) in cases {
        let mut s = weekly_paris();
        edit(&mut s);
        let err = create(&mut c, s).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let err = c
        .create_scheduled_export(pb::CreateScheduledExportRequest {
            scheduled_export: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for (id, code) in [
        ("nope", Code::InvalidArgument),
        (&Uuid::new_v4().to_string()[..], Code::NotFound),
    ] {
        let err = c
            .get_scheduled_export(pb::GetScheduledExportRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{id}");
    }
    let made = create(&mut c, weekly_paris()).await.unwrap();
    for paths in [
        vec![],
        vec!["id".to_owned()],
        vec!["next_run_at".to_owned()],
    ] {
        let err = c
            .update_scheduled_export(pb::UpdateScheduledExportRequest {
                scheduled_export: Some(pb::ScheduledExport {
                    id: made.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.clone(),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{paths:?}");
        assert!(
            err.message().starts_with("update_mask"),
            "{}",
            err.message()
        );
    }
    // An edit that breaks a rule is refused as a whole and changes nothing.
    let err = c
        .update_scheduled_export(pb::UpdateScheduledExportRequest {
            scheduled_export: Some(pb::ScheduledExport {
                id: made.id.clone(),
                time_zone: "Nowhere/Land".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["time_zone".into()],
            }),
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("time_zone"), "{}", err.message());
    let again = c
        .get_scheduled_export(pb::GetScheduledExportRequest {
            id: made.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, made);
    let err = c
        .list_scheduled_exports(pb::ListScheduledExportsRequest {
            page_size: Some(0),
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page_size"), "{}", err.message());
    stack.stop.fire();
}

/// Three replicas claiming due slots at the same simulated instants, over six weeks of
/// slots for a handful of schedules: every slot is claimed exactly once, in order.
#[tokio::test]
async fn three_replicas_claim_each_slot_exactly_once() {
    use std::collections::BTreeMap;
    let stack = start("").await;
    let tenant = Uuid::new_v4();
    let mut c = stack.client(tenant).await;
    let mut schedules = Vec::new();
    for (zone, weekday, time) in [
        ("UTC", 1, "08:00"),
        ("Europe/Paris", 7, "02:30"),
        ("America/New_York", 3, "23:45"),
        ("Asia/Kolkata", 5, "00:00"),
    ] {
        let mut s = weekly_paris();
        s.time_zone = zone.into();
        s.weekday = weekday;
        s.time_of_day = time.into();
        schedules.push(create(&mut c, s).await.unwrap());
    }
    let mut monthly = weekly_paris();
    monthly.frequency = pb::ScheduleFrequency::Monthly as i32;
    monthly.weekday = 0;
    monthly.day_of_month = 31;
    schedules.push(create(&mut c, monthly).await.unwrap());

    // The slots each schedule must run, from its own rule.
    let start_at = chrono::Utc::now();
    let end_at = start_at + chrono::Duration::weeks(6);
    let mut want: BTreeMap<String, Vec<chrono::DateTime<chrono::Utc>>> = BTreeMap::new();
    for s in &schedules {
        let settings = haven_export::schedule::model::Settings::from_proto(s).unwrap();
        let rule = settings.rule().unwrap();
        let mut slot = haven_proto::time::from_timestamp(s.next_run_at.as_ref().unwrap()).unwrap();
        let mut slots = Vec::new();
        while slot <= end_at {
            slots.push(slot);
            slot = rule.next_after(slot);
        }
        want.insert(s.id.clone(), slots);
    }

    // Every 30 simulated minutes, three replicas claim at once.
    let mut got: BTreeMap<String, Vec<chrono::DateTime<chrono::Utc>>> = BTreeMap::new();
    let mut now = start_at;
    while now <= end_at {
        let pool = &stack.db.pool;
        let (a, b, c3) = tokio::join!(
            haven_export::schedule::claim_due(pool, now, 10, LEASE),
            haven_export::schedule::claim_due(pool, now, 10, LEASE),
            haven_export::schedule::claim_due(pool, now, 10, LEASE),
        );
        for claimed in [a.unwrap(), b.unwrap(), c3.unwrap()].into_iter().flatten() {
            // Late only when claimed more than the scheduler's tick after its slot.
            assert_eq!(
                claimed.late,
                now - claimed.slot > haven_export::schedule::slots::ON_TIME,
                "{claimed:?}"
            );
            got.entry(claimed.schedule.id.to_string())
                .or_default()
                .push(claimed.slot);
        }
        now += chrono::Duration::minutes(30);
    }
    for slots in got.values_mut() {
        slots.sort();
    }
    assert_eq!(got, want);
    let (runs, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (schedule_id, scheduled_for)) FROM exports.scheduled_export_runs",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(runs, distinct);
    assert_eq!(runs as usize, want.values().map(Vec::len).sum::<usize>());
    stack.stop.fire();
}

/// A scheduler away across two slots makes one late run for the latest and records the
/// older one as skipped; paused schedules are not claimed.
#[tokio::test]
async fn missed_slots_make_one_late_run_and_a_skipped_record() {
    let stack = start("").await;
    let mut c = stack.client(Uuid::new_v4()).await;
    let mut s = weekly_paris();
    s.time_zone = "UTC".into();
    let made = create(&mut c, s).await.unwrap();
    let mut paused = weekly_paris();
    paused.enabled = false;
    create(&mut c, paused).await.unwrap();
    let first = haven_proto::time::from_timestamp(made.next_run_at.as_ref().unwrap()).unwrap();

    // Away from just before the first slot until after the second.
    let back = first + chrono::Duration::days(8);
    let claimed = haven_export::schedule::claim_due(&stack.db.pool, back, 10, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].slot, first + chrono::Duration::weeks(1));
    assert!(claimed[0].late);
    let rows: Vec<(String, bool, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT status, late, scheduled_for FROM exports.scheduled_export_runs ORDER BY scheduled_for",
    )
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("skipped".to_owned(), true, first),
            (
                "pending".to_owned(),
                true,
                first + chrono::Duration::weeks(1)
            ),
        ]
    );
    let next: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_run_at FROM exports.scheduled_exports WHERE id = $1::uuid")
            .bind(&made.id)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!(next, first + chrono::Duration::weeks(2));
    // Nothing more is due until then.
    assert!(
        haven_export::schedule::claim_due(&stack.db.pool, back, 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    stack.stop.fire();
}

/// A due slot of a download schedule runs through the export engine into the object store:
/// the run is delivered, the file is the slot's range of orders, and history has it.
#[tokio::test]
async fn a_due_download_schedule_stores_its_file() {
    let store_name = Uuid::new_v4().simple().to_string();
    let objects = haven_objects::ObjectsArgs::memory(
        &store_name,
        "schedule-test-link-secret-0123456789abc",
        "http://g",
    );
    let stack = crate::harness::start_config("", |c| c.objects = objects.clone()).await;
    let tenant = Uuid::new_v4();
    stack.seed(tenant, 500, 0.0).await;
    let mut c = stack.client(tenant).await;
    let mut s = weekly_paris();
    s.delivery_method = pb::DeliveryMethod::Download as i32;
    s.delivery_email.clear();
    s.date_range = pb::DateRangePreset::AllTime as i32;
    s.fields = vec!["shopify_order_id".into(), "total".into()];
    let made = create(&mut c, s).await.unwrap();
    // Make its slot due now (as if the clock had reached it).
    crate::harness::make_due(&stack.db.pool, &made.id).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, key, export_id): (String, Option<String>, Option<Uuid>) = loop {
        let row: Option<(String, Option<String>, Option<Uuid>)> = sqlx::query_as(
            "SELECT status, object_key, export_id FROM exports.scheduled_export_runs WHERE schedule_id = $1::uuid",
        )
        .bind(&made.id)
        .fetch_optional(&stack.db.pool)
        .await
        .unwrap();
        if let Some(row) = row.filter(|r| r.0 != "pending") {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, "delivered");
    let key = key.unwrap();
    assert!(
        key.starts_with(&format!("scheduled-exports/{tenant}/{}/", made.id)),
        "{key}"
    );
    assert!(key.ends_with(".csv"), "{key}");
    let storage = haven_objects::ObjectStorage::open(&objects).unwrap();
    let download = storage
        .get(&haven_objects::ObjectKey::parse(&key).unwrap())
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(download.body)
        .await
        .unwrap();
    let file = chunks.concat();
    let mut reader = csv::Reader::from_reader(file.as_slice());
    assert_eq!(reader.headers().unwrap().len(), 2);
    assert_eq!(reader.records().count(), 500);
    // The export went through the engine: it has its history row.
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM exports.export_history WHERE id = $1 AND status = 'completed' AND record_count = 500")
        .bind(export_id.unwrap())
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(history, 1);
    // The run is listed with a signed link to the file.
    let runs = c
        .list_scheduled_export_runs(pb::ListScheduledExportRunsRequest {
            schedule_id: made.id.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].attempts),
        ("delivered", 1)
    );
    assert!(
        runs[0]
            .download_url
            .starts_with(&format!("http://g/api/objects/{key}?expires=")),
        "{}",
        runs[0].download_url
    );
    assert!(runs[0].download_url.contains("&sig="));
    let err = stack
        .client(Uuid::new_v4())
        .await
        .list_scheduled_export_runs(pb::ListScheduledExportRunsRequest {
            schedule_id: made.id.clone(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    stack.stop.fire();
}
