//! Publish and consume through a real JetStream, with de-duplication by `Nats-Msg-Id`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use haven_bus::{Bus, ConsumerSpec, NatsArgs, Outcome, StreamSpec};
use haven_proto::events::v1::RetryResult;
use tokio::sync::{Mutex, oneshot};

async fn bus() -> Bus {
    let args = NatsArgs::new(haven_testkit::nats_url(), haven_testkit::namespace());
    Bus::connect(&args.config("bus-test").unwrap())
        .await
        .unwrap()
}

fn stream() -> StreamSpec {
    StreamSpec {
        name: "TEST",
        subjects: vec!["haven.test.>"],
        work_queue: false,
        max_age: Duration::from_secs(600),
        duplicate_window: Duration::from_secs(120),
    }
}

fn result(id: &str) -> RetryResult {
    RetryResult {
        id: id.to_owned(),
        attempt: 1,
        error: "boom".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn publish_and_consume_with_dedup_by_msg_id() {
    let bus = bus().await;
    bus.ensure_stream(&stream()).await.unwrap();
    // Idempotent: a second ensure with the same spec is fine.
    bus.ensure_stream(&stream()).await.unwrap();

    let first = bus
        .publish("haven.test.results", &result("a"), "msg-a")
        .await
        .unwrap();
    let again = bus
        .publish("haven.test.results", &result("a"), "msg-a")
        .await
        .unwrap();
    let other = bus
        .publish("haven.test.results", &result("b"), "msg-b")
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate, "same Nats-Msg-Id must be dropped");
    assert!(!other.duplicate);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let consumer = {
        let bus = bus.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            bus.consume(
                ConsumerSpec::new("TEST", "dedup-test").filter("haven.test.results"),
                move |d: haven_bus::Delivery<RetryResult>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().await.push((d.message.id, d.subject, d.msg_id));
                        Outcome::Ack
                    }
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    wait_until(|| async { seen.lock().await.len() >= 2 }).await;
    // Nothing more arrives: the duplicate was never stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    consumer.await.unwrap().unwrap();

    let seen = seen.lock().await.clone();
    assert_eq!(
        seen,
        vec![
            (
                "a".into(),
                "haven.test.results".into(),
                Some("msg-a".into())
            ),
            (
                "b".into(),
                "haven.test.results".into(),
                Some("msg-b".into())
            ),
        ]
    );
}

#[tokio::test]
async fn nak_redelivers_and_term_does_not() {
    let bus = bus().await;
    bus.ensure_stream(&stream()).await.unwrap();
    bus.publish("haven.test.retry", &result("again"), "m1")
        .await
        .unwrap();
    bus.publish("haven.test.retry", &result("poison"), "m2")
        .await
        .unwrap();
    // Bytes that are not a RetryResult: terminated by the loop, never handed over.
    bus.publish_bytes("haven.test.retry", vec![0xff, 0xff, 0xff].into(), "m3")
        .await
        .unwrap();

    let deliveries = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = {
        let bus = bus.clone();
        let deliveries = deliveries.clone();
        let log = log.clone();
        tokio::spawn(async move {
            bus.consume(
                ConsumerSpec::new("TEST", "nak-test")
                    .filter("haven.test.retry")
                    .ack_wait(Duration::from_secs(2)),
                move |d: haven_bus::Delivery<RetryResult>| {
                    let deliveries = deliveries.clone();
                    let log = log.clone();
                    async move {
                        deliveries.fetch_add(1, Ordering::SeqCst);
                        log.lock().await.push((d.message.id.clone(), d.delivered));
                        match (d.message.id.as_str(), d.delivered) {
                            ("again", 1) => Outcome::Retry(Some(Duration::from_millis(100))),
                            ("again", _) => Outcome::Ack,
                            _ => Outcome::Term,
                        }
                    }
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    wait_until(|| async {
        log.lock()
            .await
            .iter()
            .any(|(id, n)| id == "again" && *n == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    let mut log = log.lock().await.clone();
    log.sort();
    assert_eq!(
        log,
        vec![
            ("again".into(), 1),
            ("again".into(), 2),
            ("poison".into(), 1)
        ]
    );
}

/// A handler slower than the ack wait is told to the server as in progress, so the message
/// is not delivered a second time while the first handler still runs.
#[tokio::test]
async fn a_handler_slower_than_the_ack_wait_runs_once() {
    let bus = bus().await;
    bus.ensure_stream(&stream()).await.unwrap();
    bus.publish("haven.test.slow", &result("slow"), "s1")
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = {
        let bus = bus.clone();
        let runs = runs.clone();
        tokio::spawn(async move {
            bus.consume(
                ConsumerSpec::new("TEST", "slow-test")
                    .filter("haven.test.slow")
                    .concurrency(4)
                    .ack_wait(Duration::from_secs(1)),
                move |_d: haven_bus::Delivery<RetryResult>| {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // Three and a half ack waits.
                        tokio::time::sleep(Duration::from_millis(3_500)).await;
                        Outcome::Ack
                    }
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    wait_until(|| async { runs.load(Ordering::SeqCst) >= 1 }).await;
    // Past the handler's end and one more ack wait: a redelivery would have come by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The consumer holds no more unacknowledged messages than it has handlers: the rest stay
/// on the server for other consumers, and none waits here while its ack wait runs out.
#[tokio::test]
async fn it_pulls_no_more_than_it_can_run() {
    let bus = bus().await;
    bus.ensure_stream(&stream()).await.unwrap();
    for i in 0..20 {
        bus.publish(
            "haven.test.busy",
            &result(&format!("b{i}")),
            &format!("b{i}"),
        )
        .await
        .unwrap();
    }
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = {
        let bus = bus.clone();
        let started = started.clone();
        let release = release.clone();
        tokio::spawn(async move {
            bus.consume(
                ConsumerSpec::new("TEST", "busy-test")
                    .filter("haven.test.busy")
                    .concurrency(2),
                move |_d: haven_bus::Delivery<RetryResult>| {
                    let started = started.clone();
                    let release = release.clone();
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Outcome::Ack
                    }
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    wait_until(|| async { started.load(Ordering::SeqCst) >= 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = bus
        .jetstream()
        .get_stream(bus.namespace().name("TEST"))
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            &bus.namespace().name("busy-test"),
        )
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(info.num_ack_pending, 2, "delivered but not running");
    assert_eq!(info.num_pending, 18);
    // Everything is handled once the handlers are let go.
    let done = started.clone();
    let releaser = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    wait_until(|| async { done.load(Ordering::SeqCst) >= 20 }).await;
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    releaser.abort();
}

async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
