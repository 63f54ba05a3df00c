//! A bounded soak: 20,000 items handed over on the bus, two replicas (one a real process,
//! SIGKILLed mid-run), an owner with random latency and 5% retryable failures, and NATS
//! restarted twice. Every item must end as its outcomes dictate, no attempt may run twice,
//! and every failed item must have its own dead letter on the bus.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::*;
use haven_bus::{Fate, Outgoing};
use haven_proto::events::v1::RetryEnqueue;
use haven_retry_client::HandlerError;
use haven_testkit::NatsServer;
use rand::Rng;
use tokio::time::Instant;
use uuid::Uuid;

const N: usize = 20_000;
/// One item in fifty always fails: it must end failed, with a dead letter.
const DOOMED_EVERY: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_replica_kill_and_nats_restarts() {
    let mut nats = NatsServer::start().unwrap();
    let h = Harness::with_nats(nats.url()).await;
    let mut a = spawn_replica(&h, "replica-a", "5s");
    let mut config = h.config();
    config.worker_id = Some("replica-b".into());
    config.lease = Duration::from_secs(5);
    config.max_in_flight_per_tenant = 0;
    let b = h.start(config).await;

    // The owner records every execution by (item, attempt).
    let owner = h.owner_with("test.soak", 64, |d| async move {
        let (latency, flaky) = {
            let mut rng = rand::rng();
            (rng.random_range(0..20u64), rng.random_bool(0.05))
        };
        tokio::time::sleep(Duration::from_millis(latency)).await;
        if d.payload_json.contains("doomed") {
            Err(HandlerError::retryable("doomed"))
        } else if flaky {
            Err(HandlerError::retryable("flaky"))
        } else {
            Ok(())
        }
    });

    // A producer that, like any caller, publishes again what the bus did not store.
    let tenant = Uuid::new_v4();
    let producer = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            let messages: Vec<Outgoing> = (0..N)
                .map(|i| {
                    let doomed = i % DOOMED_EVERY == 0;
                    let mut request = enqueue_request(
                        "test.soak",
                        &format!(r#"{{"n":{i},"doomed":{doomed}}}"#)
                            .replace(r#","doomed":false"#, ""),
                    );
                    // Doomed items give up soon; the others outlast the leases an outage
                    // or the kill burns, and a run of flaky failures.
                    request.max_attempts = if doomed { 2 } else { 12 };
                    let message = RetryEnqueue {
                        tenant_id: tenant.to_string(),
                        user_id: String::new(),
                        request: Some(request),
                    };
                    Outgoing {
                        subject: "haven.retry.enqueue".into(),
                        payload: prost::Message::encode_to_vec(&message).into(),
                        msg_id: format!("soak-{i}"),
                    }
                })
                .collect();
            for chunk in messages.chunks(500) {
                let mut left = chunk.to_vec();
                while !left.is_empty() {
                    let fates = bus.publish_all(left.clone(), Duration::from_secs(5)).await;
                    left = left
                        .into_iter()
                        .zip(fates)
                        .filter(|(_, f)| *f != Fate::Stored)
                        .map(|(m, _)| m)
                        .collect();
                    if !left.is_empty() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
    };

    let finished = |counts: &HashMap<String, i64>| {
        counts.get("resolved").copied().unwrap_or(0) + counts.get("failed").copied().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut faults = [N / 8, N * 3 / 8, N * 5 / 8]
        .into_iter()
        .enumerate()
        .peekable();
    loop {
        let counts = h.status_counts().await;
        let done = finished(&counts) as usize;
        if done == N {
            break;
        }
        assert!(Instant::now() < deadline, "soak stuck: {counts:?}");
        if let Some(&(step, at)) = faults.peek()
            && done >= at
        {
            faults.next();
            if step == 1 {
                a.kill().unwrap();
                a.wait().unwrap();
            } else {
                nats.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                nats.restart().unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed by now, unless the run ended before its turn (asserted next).
    let _ = a.kill();
    let _ = a.wait();
    assert!(faults.next().is_none(), "the run ended before every fault");
    producer.await.unwrap();

    // As the outcomes dictate: the doomed failed, every other item resolved.
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id::text, status, payload::text FROM retry.retry_items ORDER BY id")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), N, "items lost or doubled");
    let wrong: Vec<_> = rows
        .iter()
        .filter(|(_, status, payload)| {
            let doomed = payload.contains("doomed");
            (doomed && status != "failed") || (!doomed && status != "resolved")
        })
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "items that ended wrong: {wrong:?}");

    // The error page's counts, kept by triggers through all of it, are exact.
    assert_counts_match(&h).await;

    // No attempt executed twice.
    let twice: Vec<_> = owner
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (k.clone(), *n))
        .take(5)
        .collect();
    assert!(twice.is_empty(), "attempts executed twice: {twice:?}");

    // Every failed item has its own dead letter.
    let failed: HashSet<&str> = rows
        .iter()
        .filter(|(_, s, _)| s == "failed")
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert_eq!(failed.len(), N / DOOMED_EVERY);
    let mut dead_letters: HashMap<String, HashSet<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (msg_id, event) in stored_events(&h, "failed").await {
            let item = event.item.map(|i| i.id).unwrap_or_default();
            dead_letters.entry(msg_id).or_default().insert(item);
        }
        let covered: HashSet<&str> = dead_letters
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        if failed.iter().all(|id| covered.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} failed items without a dead letter",
            failed.iter().filter(|id| !covered.contains(*id)).count()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let shared: Vec<_> = dead_letters
        .iter()
        .filter(|(_, items)| items.len() > 1)
        .collect();
    assert!(
        shared.is_empty(),
        "dead letters shared by items: {shared:?}"
    );

    owner.shutdown().await;
    b.shutdown().await;
}
