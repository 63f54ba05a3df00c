//! Two retry-service replicas share 10,000 items: every attempt is dispatched exactly once,
//! every item ends resolved, none is lost.

use std::time::Duration;

use crate::common::*;
use haven_proto::events::v1::RetryEnqueue;
use uuid::Uuid;

const ITEMS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_dispatch_ten_thousand_items_exactly_once() {
    let h = Harness::new().await;
    let a = h.start(h.config()).await;
    let b = h.start(h.config()).await;
    let owner = h.owner("test.bulk", |_| Ok(()));
    let tenant = Uuid::new_v4();

    // Enqueue over NATS, pipelined; each message is acked by JetStream before we go on.
    let mut acks = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        let message = RetryEnqueue {
            tenant_id: tenant.to_string(),
            user_id: String::new(),
            request: Some(enqueue_request("test.bulk", &format!(r#"{{"n":{i}}}"#))),
        };
        let payload = prost::Message::encode_to_vec(&message).into();
        acks.push(
            h.bus
                .publish_start("haven.retry.enqueue", payload, &format!("bulk-{i}"))
                .await
                .unwrap(),
        );
        // Unawaited acks hold the client's in-flight permits: settle them in chunks.
        if acks.len() == 500 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }

    h.wait_status("resolved", ITEMS as i64, Duration::from_secs(240))
        .await;

    // Exactly once: one dispatch per item, for attempt 1, seen once by the owner.
    let seen = owner.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), ITEMS);
    assert!(
        seen.iter()
            .all(|((_, attempt), n)| *attempt == 1 && *n == 1),
        "a dispatch was repeated"
    );
    let (attempts, rows, workers): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(attempts)::bigint FROM retry.retry_items),
                (SELECT count(*) FROM retry.retry_attempts WHERE outcome = 'succeeded'),
                (SELECT count(DISTINCT worker_id) FROM retry.retry_attempts)",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!((attempts, rows), (ITEMS as i64, ITEMS as i64));
    assert_eq!(workers, 2, "both replicas should have claimed work");
    owner.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}
