//! Crashes and outages: an owner that dies holding a dispatch, a retry replica killed with
//! its claims outstanding, and NATS restarted mid-run. Nothing accepted is lost.

use std::time::Duration;

use crate::common::*;
use haven_auth::Role;
use haven_proto::events::v1::{RetryDispatch, RetryEnqueue};
use haven_proto::retry::v1 as pb;
use haven_retry_client::HandlerError;
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn owner_dying_mid_lease_gets_its_item_rescued_and_finished() {
    let h = Harness::new().await;
    let mut config = h.config();
    config.lease = Duration::from_secs(1);
    let svc = h.start(config).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;

    // The first owner takes the dispatch and hangs: then it dies.
    let bus = h.bus.clone();
    let hung = tokio::spawn(async move {
        haven_retry_client::consume(
            &bus,
            "test.crash",
            4,
            |_d: RetryDispatch| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<(), HandlerError>(())
            },
            std::future::pending(),
        )
        .await
    });
    let item = client
        .enqueue(enqueue_request("test.crash", "{}"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    h.wait_status("processing", 1, T).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    hung.abort();

    // A healthy owner takes over; the expired lease made a second attempt.
    let owner = h.owner("test.crash", |_| Ok(()));
    h.wait_status("resolved", 1, T).await;
    let got = client
        .get_retry_item(pb::GetRetryItemRequest { id: item.id })
        .await
        .unwrap()
        .into_inner();
    let history: Vec<(i32, i32, String)> = got
        .attempt_history
        .iter()
        .map(|a| (a.attempt, a.outcome, a.error.clone()))
        .collect();
    assert_eq!(
        history[0],
        (
            1,
            pb::AttemptOutcome::LeaseExpired as i32,
            "lease expired".to_owned()
        )
    );
    assert_eq!(
        history.last().unwrap().1,
        pb::AttemptOutcome::Succeeded as i32
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn replica_killed_with_claims_outstanding_loses_nothing() {
    let h = Harness::new().await;
    // Replica A is a real process, so that it can be killed for real.
    let mut a = spawn_replica(&h, "replica-a", "1s");

    // No owner yet: replica A claims and dispatches every item, and then dies with all of
    // them leased.
    let tenant = Uuid::new_v4();
    const N: usize = 200;
    wait_for_stream(&h).await;
    for i in 0..N {
        let message = RetryEnqueue {
            tenant_id: tenant.to_string(),
            user_id: String::new(),
            request: Some(enqueue_request("test.killed", &format!(r#"{{"n":{i}}}"#))),
        };
        h.bus
            .publish("haven.retry.enqueue", &message, &format!("k-{i}"))
            .await
            .unwrap();
    }
    h.wait_status("processing", N as i64, T).await;
    a.kill().unwrap();
    a.wait().unwrap();

    let mut config = h.config();
    config.worker_id = Some("replica-b".into());
    let b = h.start(config).await;
    // B rescues every lease A left behind and dispatches the items again.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let second: i64 =
            sqlx::query_scalar("SELECT count(*) FROM retry.retry_items WHERE attempts = 2")
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if second == N as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {second} of {N} rescued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let owner = h.owner("test.killed", |_| Ok(()));
    h.wait_status("resolved", N as i64, T).await;

    // Every item: attempt 1 claimed by A and rescued, the next finished under B.
    let rows: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT attempt, outcome, worker_id FROM retry.retry_attempts ORDER BY item_id, attempt",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let firsts: Vec<_> = rows.iter().filter(|r| r.0 == 1).collect();
    assert_eq!(firsts.len(), N);
    let wrong = firsts
        .iter()
        .filter(|r| r.1 != "lease_expired" || r.2 != "replica-a")
        .count();
    assert_eq!(
        wrong,
        0,
        "first attempts not rescued from replica A: {:?}",
        &firsts[..firsts.len().min(5)]
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.1 == "succeeded" && r.2 == "replica-b")
            .count(),
        N
    );
    owner.shutdown().await;
    b.shutdown().await;
}

/// Replica A creates the streams at start-up; publishing before that would be refused.
async fn wait_for_stream(h: &Harness) {
    let deadline = tokio::time::Instant::now() + T;
    while h
        .bus
        .jetstream()
        .get_stream(format!("{}_RETRY_COMMANDS", h.ns))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica A never created its streams"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_run_loses_nothing() {
    let mut nats = haven_testkit::NatsServer::start().unwrap();
    let h = Harness::with_nats(nats.url()).await;
    let svc = h.start(h.config()).await;
    let owner = h.owner("test.outage", |_| Ok(()));
    let tenant = Uuid::new_v4();
    const N: usize = 600;

    // A producer that, like any caller, retries until JetStream has acked its message.
    let bus = h.bus.clone();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            let message = RetryEnqueue {
                tenant_id: tenant.to_string(),
                user_id: String::new(),
                request: Some(enqueue_request("test.outage", &format!(r#"{{"n":{i}}}"#))),
            };
            loop {
                match bus
                    .publish("haven.retry.enqueue", &message, &format!("o-{i}"))
                    .await
                {
                    Ok(_) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Mid-run: the server goes away and comes back with its store.
    let deadline = tokio::time::Instant::now() + T;
    while h
        .status_counts()
        .await
        .get("resolved")
        .copied()
        .unwrap_or(0)
        < 100
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();

    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .unwrap()
        .unwrap();
    h.wait_status("resolved", N as i64, Duration::from_secs(120))
        .await;
    assert_eq!(h.status_counts().await.values().sum::<i64>(), N as i64);
    owner.shutdown().await;
    svc.shutdown().await;
}
