//! Queue semantics against real PostgreSQL and NATS: dispatch, backoff to exhaustion and the
//! dead letter, permanent failures, stale results, RetryNow, Cancel, idempotent enqueue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use haven_auth::Role;
use haven_proto::events::v1::{
    RetryEnqueue, RetryEnqueues, RetryLifecycle, RetryOutcome, RetryResult, RetryResults,
};
use haven_proto::retry::v1 as pb;
use haven_retry_client::HandlerError;
use prost::Message;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dispatches_resolves_and_keeps_history() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let tenant = Uuid::new_v4();
    let mut client = h.client(&svc, tenant, Role::Service).await;
    let mut resolved = lifecycle_events(&h, "resolved").await;
    let owner = h.owner("test.ok", |_| Ok(()));

    let mut req = enqueue_request("test.ok", r#"{"shop":"acme.myshopify.com"}"#);
    req.reference_id = "ref-1".into();
    req.reference_table = "integrations".into();
    req.last_error = "HTTP 503 from Shopify".into();
    let created = client.enqueue(req).await.unwrap().into_inner();
    assert!(created.created);
    let item = created.item.unwrap();
    assert_eq!(item.status, pb::RetryStatus::Pending as i32);
    assert_eq!(item.max_attempts, 5);
    assert_eq!(item.last_error, "HTTP 503 from Shopify");

    h.wait_status("resolved", 1, T).await;
    let got = client
        .get_retry_item(pb::GetRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RetryStatus::Resolved as i32);
    assert_eq!(got.attempts, 1);
    assert!(got.resolved_at.is_some());
    assert_eq!(got.payload_json, r#"{"shop": "acme.myshopify.com"}"#);
    assert_eq!(got.attempt_history.len(), 1);
    assert_eq!(
        got.attempt_history[0].outcome,
        pb::AttemptOutcome::Succeeded as i32
    );
    assert_eq!(owner.deliveries(&item.id), vec![(1, 1)]);

    let event = tokio::time::timeout(T, resolved.next())
        .await
        .unwrap()
        .unwrap();
    let event = RetryLifecycle::decode(event.payload).unwrap();
    assert_eq!(event.item.unwrap().id, item.id);
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn retryable_failures_back_off_until_exhausted_then_dead_letter() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let mut dead = lifecycle_events(&h, "failed").await;
    let owner = h.owner("test.flaky", |d| {
        Err(HandlerError::retryable(format!("boom {}", d.attempt)))
    });

    let mut req = enqueue_request("test.flaky", "{}");
    req.max_attempts = 3;
    let item = client
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    h.wait_status("failed", 1, T).await;

    let got = client
        .get_retry_item(pb::GetRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.attempts, 3);
    assert_eq!(got.last_error, "boom 3");
    let outcomes: Vec<i32> = got.attempt_history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![pb::AttemptOutcome::Failed as i32; 3]);
    // Each retry waited for its backoff: attempts started in order, later than the last.
    for pair in got.attempt_history.windows(2) {
        let (a, b) = (pair[0].started_at.unwrap(), pair[1].started_at.unwrap());
        assert!((b.seconds, b.nanos) > (a.seconds, a.nanos));
    }
    assert_eq!(owner.deliveries(&item.id), vec![(1, 1), (2, 1), (3, 1)]);

    // The type's figures: the failure, its three attempts and its last error.
    let stats = client
        .get_retry_stats(pb::GetRetryStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let flaky = &stats.operation_types[0];
    assert_eq!(flaky.operation_type, "test.flaky");
    assert_eq!(flaky.counts.unwrap().failed, 1);
    assert_eq!(flaky.total_attempts, 3);
    assert_eq!(flaky.last_error, "boom 3");
    assert!(flaky.oldest_pending_created_at.is_none());

    let event = tokio::time::timeout(T, dead.next()).await.unwrap().unwrap();
    let event = RetryLifecycle::decode(event.payload).unwrap().item.unwrap();
    assert_eq!(
        (event.id.as_str(), event.status),
        (item.id.as_str(), pb::RetryStatus::Failed as i32)
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn permanent_failure_fails_at_once() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.permanent", |_| {
        Err(HandlerError::permanent("400: shop domain is invalid"))
    });
    let item = client
        .enqueue(enqueue_request("test.permanent", "{}"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    h.wait_status("failed", 1, T).await;
    let got = client
        .get_retry_item(pb::GetRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.attempts, 1);
    assert_eq!(got.last_error, "400: shop domain is invalid");
    assert_eq!(
        got.attempt_history[0].outcome,
        pb::AttemptOutcome::Permanent as i32
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

async fn publish_result(
    h: &Harness,
    item: &pb::RetryItem,
    attempt: i32,
    outcome: RetryOutcome,
    tag: &str,
) {
    let result = RetryResult {
        id: item.id.clone(),
        tenant_id: item.tenant_id.clone(),
        attempt,
        outcome: outcome as i32,
        error: format!("reported {tag}"),
        ..Default::default()
    };
    h.bus
        .publish("haven.retry.result", &result, &format!("manual-{tag}"))
        .await
        .unwrap();
}

async fn wait_row(h: &Harness, id: &str, want: (&str, i32)) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got = row(h, id).await;
        if (got.0.as_str(), got.1) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "item {id}: {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn results_for_attempts_no_longer_current_are_ignored() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    // No owner yet: dispatches wait in the stream and results are ours to forge.
    let item = client
        .enqueue(enqueue_request("test.stale", "{}"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    wait_row(&h, &item.id, ("processing", 1)).await;

    publish_result(&h, &item, 2, RetryOutcome::Succeeded, "future-attempt").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row(&h, &item.id).await, ("processing".into(), 1));

    publish_result(&h, &item, 1, RetryOutcome::Failed, "attempt-1-failed").await;
    wait_row(&h, &item.id, ("processing", 2)).await;

    // A late success for attempt 1 must not resolve attempt 2.
    publish_result(&h, &item, 1, RetryOutcome::Succeeded, "late-attempt-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row(&h, &item.id).await, ("processing".into(), 2));

    // The owner arrives: it answers both queued dispatches; only attempt 2 counts.
    let owner = h.owner("test.stale", |_| Ok(()));
    wait_row(&h, &item.id, ("resolved", 2)).await;
    let got = client
        .get_retry_item(pb::GetRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let history: Vec<(i32, i32)> = got
        .attempt_history
        .iter()
        .map(|a| (a.attempt, a.outcome))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, pb::AttemptOutcome::Failed as i32),
            (2, pb::AttemptOutcome::Succeeded as i32)
        ]
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn retry_now_gives_an_exhausted_item_one_more_attempt() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let owner = h.owner("test.revive", move |_| {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HandlerError::retryable("down"))
        }
    });
    let mut req = enqueue_request("test.revive", "{}");
    req.max_attempts = 1;
    let item = client
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    h.wait_status("failed", 1, T).await;

    healthy.store(true, Ordering::SeqCst);
    let revived = client
        .retry_now(pb::RetryNowRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revived.status, pb::RetryStatus::Pending as i32);
    assert_eq!(revived.max_attempts, 2);
    assert!(revived.worker_id.is_empty() && revived.claimed_at.is_none());
    h.wait_status("resolved", 1, T).await;
    assert_eq!(row(&h, &item.id).await, ("resolved".into(), 2));

    // Resolved items cannot be retried or cancelled.
    let err = client
        .retry_now(pb::RetryNowRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = client
        .cancel_retry_item(pb::CancelRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn retry_now_makes_a_waiting_item_due_at_once() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.later", |_| Ok(()));
    let mut req = enqueue_request("test.later", "{}");
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
    let item = client
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row(&h, &item.id).await, ("pending".into(), 0));
    client
        .retry_now(pb::RetryNowRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap();
    wait_row(&h, &item.id, ("resolved", 1)).await;
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Items are claimed a little ahead of their due time (`claim_ahead`) but published only
/// once due: never early, and their lease runs from the due time, not the claim.
#[tokio::test]
async fn scheduled_items_are_dispatched_when_due_and_never_before() {
    let h = Harness::new().await;
    let mut config = h.config();
    config.claim_ahead = Duration::from_millis(200);
    let svc = h.start(config.clone()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    type Received = Vec<(pb_time::Times, chrono::DateTime<chrono::Utc>)>;
    let received: Arc<std::sync::Mutex<Received>> = Arc::default();
    let record = received.clone();
    let owner = h.owner("test.scheduled", move |d| {
        let now = chrono::Utc::now();
        record.lock().unwrap().push((pb_time::Times::of(d), now));
        Ok(())
    });
    let first = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let n = 40;
    for i in 0..n {
        let mut req = enqueue_request("test.scheduled", "{}");
        // Several due in the same millisecond, the rest 7 ms apart: both kinds of group.
        let due = first + chrono::Duration::milliseconds(7 * (i / 3));
        req.first_run = Some(pb::enqueue_request::FirstRun::RunAt(
            haven_proto::time::timestamp(due),
        ));
        client.enqueue(req).await.unwrap();
    }
    h.wait_status("resolved", n, T).await;
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), n as usize);
    for (times, at) in received {
        assert!(
            times.dispatched >= times.due,
            "published {:?} before due {:?}",
            times.dispatched,
            times.due
        );
        assert!(
            at >= times.due,
            "received {at:?} before due {:?}",
            times.due
        );
        let lease = chrono::Duration::from_std(config.lease).unwrap();
        assert!(
            times.lease_expires >= times.due + lease,
            "lease ends {:?}, before due {:?} + the lease",
            times.lease_expires,
            times.due
        );
    }
    owner.shutdown().await;
    svc.shutdown().await;
}

/// The times a dispatch carries, as chrono times.
mod pb_time {
    use haven_proto::events::v1::RetryDispatch;

    #[derive(Clone, Debug)]
    pub struct Times {
        pub due: chrono::DateTime<chrono::Utc>,
        pub dispatched: chrono::DateTime<chrono::Utc>,
        pub lease_expires: chrono::DateTime<chrono::Utc>,
    }

    impl Times {
        pub fn of(d: &RetryDispatch) -> Self {
            let at = |t| haven_proto::time::from_timestamp(Option::as_ref(t).unwrap()).unwrap();
            Times {
                due: at(&d.due_at),
                dispatched: at(&d.dispatched_at),
                lease_expires: at(&d.lease_expires_at),
            }
        }
    }
}

#[tokio::test]
async fn cancelled_items_are_never_dispatched() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.cancel", |_| Ok(()));
    let mut req = enqueue_request("test.cancel", "{}");
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(500));
    let item = client
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let cancelled = client
        .cancel_retry_item(pb::CancelRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::RetryStatus::Cancelled as i32);
    // Cancelling again is harmless; retrying a cancelled item is not allowed.
    client
        .cancel_retry_item(pb::CancelRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap();
    let err = client
        .retry_now(pb::RetryNowRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(row(&h, &item.id).await, ("cancelled".into(), 0));
    assert!(owner.deliveries(&item.id).is_empty());
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn enqueue_is_idempotent_by_key_and_by_message_id() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let tenant = Uuid::new_v4();
    let mut client = h.client(&svc, tenant, Role::Service).await;

    let mut req = enqueue_request("test.idem", r#"{"n":1}"#);
    req.idempotency_key = "webhook:orders/create".into();
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
    let first = client.enqueue(req.clone()).await.unwrap().into_inner();
    let second = client.enqueue(req.clone()).await.unwrap().into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.item.unwrap().id, second.item.unwrap().id);

    // Over NATS: the same message twice, and another message with the same key.
    let nats_req = {
        let mut r = enqueue_request("test.idem", r#"{"n":2}"#);
        r.idempotency_key = "nats-key".into();
        r.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
        r
    };
    for msg_id in ["m-1", "m-1", "m-2"] {
        haven_retry_client::enqueue(&h.bus, tenant, None, nats_req.clone(), msg_id)
            .await
            .unwrap();
    }
    // A message id seen before also creates nothing when its key differs (a redelivery).
    let mut other = nats_req.clone();
    other.idempotency_key = String::new();
    haven_retry_client::enqueue(&h.bus, tenant, None, other.clone(), "m-3")
        .await
        .unwrap();
    haven_retry_client::enqueue(&h.bus, tenant, None, other, "m-3")
        .await
        .unwrap();
    h.wait_status("pending", 3, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.status_counts().await.get("pending"), Some(&3));

    // Another tenant's identical key is its own item.
    let mut other_client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    assert!(
        other_client
            .enqueue(req.clone())
            .await
            .unwrap()
            .into_inner()
            .created
    );

    // A finished item frees its key.
    let id = first_id(&mut client, "webhook:orders/create").await;
    client
        .cancel_retry_item(pb::CancelRetryItemRequest { id })
        .await
        .unwrap();
    assert!(client.enqueue(req).await.unwrap().into_inner().created);
    svc.shutdown().await;
}

async fn first_id(client: &mut Client, key: &str) -> String {
    let page = client
        .list_retry_items(pb::ListRetryItemsRequest {
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.items
        .into_iter()
        .find(|i| i.idempotency_key == key)
        .unwrap()
        .id
}

#[tokio::test]
async fn lists_page_newest_first_with_counts_and_stats() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut req = enqueue_request(if i % 2 == 0 { "test.even" } else { "test.odd" }, "{}");
        req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
        ids.push(
            client
                .enqueue(req)
                .await
                .unwrap()
                .into_inner()
                .item
                .unwrap()
                .id,
        );
    }
    client
        .cancel_retry_item(pb::CancelRetryItemRequest { id: ids[0].clone() })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_retry_items(pb::ListRetryItemsRequest {
                page_size: Some(3),
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, 7);
        let counts = page.counts.unwrap();
        assert_eq!((counts.pending, counts.cancelled), (6, 1));
        seen.extend(page.items.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let even = client
        .list_retry_items(pb::ListRetryItemsRequest {
            operation_type: "test.even".into(),
            status: pb::RetryStatus::Pending as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(even.total, 3);
    assert_eq!(even.counts.unwrap().cancelled, 1);

    let stats = client
        .get_retry_stats(pb::GetRetryStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let types: Vec<(String, i64)> = stats
        .operation_types
        .iter()
        .map(|s| (s.operation_type.clone(), s.counts.unwrap().pending))
        .collect();
    assert_eq!(types, vec![("test.even".into(), 3), ("test.odd".into(), 3)]);
    assert!(
        stats
            .operation_types
            .iter()
            .all(|s| s.oldest_pending_created_at.is_some())
    );
    assert_eq!(stats.totals.unwrap().cancelled, 1);
    svc.shutdown().await;
}

async fn claimed_at(h: &Harness, id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT claimed_at FROM retry.retry_items WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

/// Tenant `tenant`'s service enqueues one item, due now.
async fn enqueue_due(h: &Harness, svc: &haven_testkit::Running, tenant: Uuid) -> pb::RetryItem {
    h.client(svc, tenant, Role::Service)
        .await
        .enqueue(enqueue_request("test.other", "{}"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap()
}

/// When item `id` was claimed, waiting up to `within` for it.
async fn claimed_by(h: &Harness, id: &str, within: Duration) -> chrono::DateTime<chrono::Utc> {
    haven_testkit::wait_for(&format!("item {id} to be claimed"), within, || {
        claimed_at(h, id)
    })
    .await
}

/// Tenant A has 50,000 items due for an hour; tenant B's one item, due now, is claimed in the
/// first claim round after it was enqueued: no more than one batch of A's items is claimed
/// between the two.
#[tokio::test]
async fn one_tenants_backlog_does_not_hold_back_another_tenants_due_item() {
    let h = Harness::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut config = h.config();
    config.max_in_flight = 0;
    config.max_in_flight_per_tenant = 0;
    let batch = config.claim_batch;
    let svc = h.start(config).await;
    backlog(&h, a, "test.backlog", 50_000).await;
    // Let the dispatcher get busy with A's backlog first.
    haven_testkit::wait_for(
        "A's backlog to be claimed",
        Duration::from_secs(60),
        || async {
            let processing = h.status_counts().await.get("processing").copied();
            processing.filter(|n| *n >= 1_000)
        },
    )
    .await;
    let item = enqueue_due(&h, &svc, b).await;
    let enqueued_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM retry.retry_items WHERE id = $1::uuid")
            .bind(&item.id)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    let b_claimed = claimed_by(&h, &item.id, Duration::from_secs(60)).await;
    let a_between: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM retry.retry_items
         WHERE tenant_id = $1 AND claimed_at > $2 AND claimed_at < $3",
    )
    .bind(a)
    .bind(enqueued_at)
    .bind(b_claimed)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(
        a_between <= batch,
        "{a_between} of A's items were claimed before B's due item"
    );
}

/// A tenant holds at most its share of leases; another tenant's item is still claimed.
#[tokio::test]
async fn a_tenants_leases_are_capped() {
    let h = Harness::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut config = h.config();
    config.max_in_flight_per_tenant = 100;
    let svc = h.start(config).await;
    backlog(&h, a, "test.backlog", 1_000).await;
    let item = enqueue_due(&h, &svc, b).await;
    claimed_by(&h, &item.id, Duration::from_secs(30)).await;
    // Give the dispatcher a few more rounds to overreach, if it would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM retry.retry_items WHERE tenant_id = $1 AND status = 'processing'",
    )
    .bind(a)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(held, 100);
}

/// X with key K failed (freeing K) and Y took K: RetryNow on X cannot succeed however often
/// it is tried, so it is FailedPrecondition naming Y, not Unavailable.
#[tokio::test]
async fn retry_now_of_an_item_whose_key_was_taken_names_the_holder() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.keyed", |_| Err(HandlerError::Permanent("no".into())));
    let mut req = enqueue_request("test.keyed", "{}");
    req.idempotency_key = "K".into();
    let x = client
        .enqueue(req.clone())
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    h.wait_status("failed", 1, T).await;
    owner.shutdown().await;
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
    let y = client.enqueue(req).await.unwrap().into_inner();
    assert!(y.created);
    let y = y.item.unwrap();
    let err = client
        .retry_now(pb::RetryNowRequest { id: x.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&y.id), "{}", err.message());
    svc.shutdown().await;
}

/// A handler asking to wait `Duration::MAX` gets a year: the result applies, the item waits,
/// and nothing else in its batch fails.
#[tokio::test]
async fn an_endless_retry_after_is_held_to_a_year() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.forever", |_| {
        Err(HandlerError::Retryable {
            message: "come back never".into(),
            retry_after: Some(Duration::MAX),
        })
    });
    let item = client
        .enqueue(enqueue_request("test.forever", "{}"))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let wait_days: f64 = haven_testkit::wait_for("the item to wait again", T, || async {
        let (status, days): (String, f64) = sqlx::query_as(
            "SELECT status, extract(epoch FROM next_retry_at - now())::float8 / 86400
             FROM retry.retry_items WHERE id = $1::uuid",
        )
        .bind(&item.id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        (status == "pending" && days > 1.0).then_some(days)
    })
    .await;
    assert!((364.0..=366.0).contains(&wait_days), "{wait_days} days");
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Two tenants using the same message id each get their item.
#[tokio::test]
async fn one_tenants_message_id_never_swallows_anothers_enqueue() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut req = enqueue_request("test.shared_id", "{}");
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
    for tenant in [a, b, a] {
        haven_retry_client::enqueue(&h.bus, tenant, None, req.clone(), "same-id")
            .await
            .unwrap();
    }
    let per_tenant: Vec<(Uuid, i64)> =
        haven_testkit::wait_for("both tenants' items", T, || async {
            let per_tenant: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT tenant_id, count(*) FROM retry.retry_items GROUP BY tenant_id ORDER BY 1",
            )
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
            (per_tenant.len() == 2).then_some(per_tenant)
        })
        .await;
    assert!(per_tenant.iter().all(|(_, n)| *n == 1), "{per_tenant:?}");
    svc.shutdown().await;
}

/// `a.b_c` and `a_b.c` once shared a durable consumer: each owner now takes its own type only.
#[tokio::test]
async fn owners_of_look_alike_types_take_only_their_own_dispatches() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let first = h.owner("test.a_b.c", |_| Ok(()));
    let second = h.owner("test.a.b_c", |_| Ok(()));
    let mut ids = Vec::new();
    for op in ["test.a_b.c", "test.a.b_c"] {
        let item = client
            .enqueue(enqueue_request(op, "{}"))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        ids.push(item.id);
    }
    h.wait_status("resolved", 2, T).await;
    let seen = |owner: &Owner| -> Vec<String> {
        owner
            .seen
            .lock()
            .unwrap()
            .keys()
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(seen(&first), vec![ids[0].clone()]);
    assert_eq!(seen(&second), vec![ids[1].clone()]);
    first.shutdown().await;
    second.shutdown().await;
    svc.shutdown().await;
}

/// An owner deployed before the rename finds its old durable consumer in place; the new one
/// replaces it (a work queue takes one consumer per filter) and the work goes on.
#[tokio::test]
async fn an_owners_old_durable_name_is_replaced() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let js = async_nats::jetstream::new(async_nats::connect(&h.nats_url).await.unwrap());
    let stream = js
        .get_stream(format!("{}_{}", h.ns, haven_retry_client::COMMANDS_STREAM))
        .await
        .unwrap();
    let legacy = format!("{}_dispatch_test_legacy_x", h.ns);
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(legacy.clone()),
            filter_subject: format!("{}.haven.retry.dispatch.test.legacy_x", h.ns),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    client
        .enqueue(enqueue_request("test.legacy_x", "{}"))
        .await
        .unwrap();
    let owner = h.owner("test.legacy_x", |_| Ok(()));
    h.wait_status("resolved", 1, T).await;
    assert!(
        stream.consumer_info(&legacy).await.is_err(),
        "the old consumer is still there"
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn retention_deletes_old_resolved_and_cancelled_items_and_keeps_failed() {
    let h = Harness::new().await;
    // A first start makes the schema; retention looks when a service starts.
    let mut config = h.config();
    config.retention = Duration::ZERO;
    h.start(config).await.shutdown().await;
    let tenant = Uuid::new_v4();
    // (status, last change): two past retention that go, the rest stay.
    let rows = [
        ("resolved", "2 hours", false),
        ("cancelled", "2 hours", false),
        ("failed", "2 hours", true),
        ("resolved", "10 minutes", true),
        ("pending", "2 hours", true),
    ];
    let mut ids = Vec::new();
    for (status, age, _) in rows {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO retry.retry_items (id, tenant_id, operation_type, status, attempts,
                 next_retry_at, updated_at)
             VALUES (gen_random_uuid(), $1, 'test.old', $2, 1, now() + interval '1 day',
                     now() - $3::interval)
             RETURNING id",
        )
        .bind(tenant)
        .bind(status)
        .bind(age)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO retry.retry_attempts (item_id, attempt, started_at, outcome)
             VALUES ($1, 1, now() - interval '3 hours', 'failed')",
        )
        .bind(id)
        .execute(&h.db.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    let mut config = h.config();
    config.retention = Duration::from_secs(3600);
    let svc = h.start(config).await;
    let expected: Vec<Uuid> = ids
        .iter()
        .zip(rows)
        .filter(|(_, (_, _, kept))| *kept)
        .map(|(id, _)| *id)
        .collect();
    let mut left: Vec<Uuid> =
        haven_testkit::wait_for("old finished items to be deleted", T, || async {
            let left: Vec<Uuid> =
                sqlx::query_scalar("SELECT id FROM retry.retry_items WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_all(&h.db.pool)
                    .await
                    .unwrap();
            (left.len() == expected.len()).then_some(left)
        })
        .await;
    left.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(left, want);
    // Their history went with them.
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM retry.retry_attempts WHERE item_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, expected.len() as i64);
    assert_counts_match(&h).await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_results_is_applied_as_if_each_came_alone() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    // No owner: dispatches wait in the stream and the results are ours to send.
    let mut items = Vec::new();
    for n in 0..3 {
        let item = client
            .enqueue(enqueue_request("test.batch", &format!(r#"{{"n":{n}}}"#)))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        wait_row(&h, &item.id, ("processing", 1)).await;
        items.push(item);
    }
    let result = |item: &pb::RetryItem, attempt, outcome: RetryOutcome| RetryResult {
        id: item.id.clone(),
        tenant_id: item.tenant_id.clone(),
        attempt,
        outcome: outcome as i32,
        error: format!("{outcome:?}"),
        ..Default::default()
    };
    let batch = RetryResults {
        results: vec![
            result(&items[0], 1, RetryOutcome::Succeeded),
            // Invalid: dropped alone, the others still count.
            RetryResult {
                id: "not-a-uuid".into(),
                ..result(&items[1], 1, RetryOutcome::Succeeded)
            },
            result(&items[1], 1, RetryOutcome::Failed),
            // An attempt not dispatched yet: ignored.
            result(&items[2], 2, RetryOutcome::Succeeded),
            // Another tenant's claim on an item: ignored.
            RetryResult {
                tenant_id: Uuid::new_v4().to_string(),
                ..result(&items[2], 1, RetryOutcome::Succeeded)
            },
        ],
    };
    h.bus
        .publish("haven.retry.results", &batch, "batch-1")
        .await
        .unwrap();
    wait_row(&h, &items[0].id, ("resolved", 1)).await;
    wait_row(&h, &items[1].id, ("processing", 2)).await;
    assert_eq!(row(&h, &items[2].id).await, ("processing".into(), 1));

    // The same batch again (a publisher's retry under a new id): nothing changes.
    h.bus
        .publish("haven.retry.results", &batch, "batch-1-again")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row(&h, &items[0].id).await, ("resolved".into(), 1));
    assert_eq!(row(&h, &items[1].id).await, ("processing".into(), 2));
    assert_eq!(row(&h, &items[2].id).await, ("processing".into(), 1));
    let history = |id: &str| {
        let mut client = client.clone();
        let id = id.to_owned();
        async move {
            client
                .get_retry_item(pb::GetRetryItemRequest { id })
                .await
                .unwrap()
                .into_inner()
                .attempt_history
                .iter()
                .map(|a| (a.attempt, a.outcome))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        history(&items[0].id).await,
        vec![(1, pb::AttemptOutcome::Succeeded as i32)]
    );
    assert_eq!(
        history(&items[1].id).await,
        vec![
            (1, pb::AttemptOutcome::Failed as i32),
            (2, pb::AttemptOutcome::Running as i32)
        ]
    );
    assert_counts_match(&h).await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_enqueues_is_stored_as_if_each_came_alone() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let item = |tenant: Uuid, op: &str, payload: &str| RetryEnqueue {
        tenant_id: tenant.to_string(),
        user_id: "u-1".into(),
        request: Some(enqueue_request(op, payload)),
    };
    let batch = RetryEnqueues {
        items: vec![
            item(a, "test.bulk", r#"{"n":0}"#),
            // Invalid, each dropped alone: the others are still stored.
            item(a, "Not A Type", "{}"),
            RetryEnqueue {
                tenant_id: "not-a-uuid".into(),
                ..item(a, "test.bulk", "{}")
            },
            item(a, "test.bulk", "[1]"),
            // Another tenant in the same message.
            item(b, "test.bulk", r#"{"n":4}"#),
        ],
    };
    h.bus
        .publish(haven_retry_client::ENQUEUES_SUBJECT, &batch, "bulk-1")
        .await
        .unwrap();
    h.wait_status("processing", 2, T).await;
    let stored = || async {
        sqlx::query_as::<_, (Uuid, String, String, Option<String>)>(
            "SELECT tenant_id, source_msg_id, payload::text, user_id FROM retry.retry_items
             ORDER BY source_msg_id",
        )
        .fetch_all(&h.db.pool)
        .await
        .unwrap()
    };
    let expected = vec![
        (
            a,
            "bulk-1#0".to_owned(),
            r#"{"n": 0}"#.to_owned(),
            Some("u-1".to_owned()),
        ),
        (
            b,
            "bulk-1#4".to_owned(),
            r#"{"n": 4}"#.to_owned(),
            Some("u-1".to_owned()),
        ),
    ];
    assert_eq!(stored().await, expected);

    // The same message again with the same id once the bus no longer remembers it, as a
    // redelivery after a lost ack brings it: each item is known by `<id>#<index>`.
    let mut forgetful = haven_retry_client::streams().remove(0);
    forgetful.duplicate_window = Duration::from_millis(100);
    h.bus.ensure_stream(&forgetful).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ack = h
        .bus
        .publish(haven_retry_client::ENQUEUES_SUBJECT, &batch, "bulk-1")
        .await
        .unwrap();
    assert!(!ack.duplicate, "the bus took it for a repeat");
    // Handled once the consumer has it acknowledged.
    let stream = h
        .bus
        .jetstream()
        .get_stream(format!("{}_{}", h.ns, haven_retry_client::COMMANDS_STREAM))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&format!("{}_retry_enqueue_batches", h.ns))
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repeat was never handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored().await, expected);
    let owner = h.owner("test.bulk", |_| Ok(()));
    h.wait_status("resolved", 2, T).await;
    assert_counts_match(&h).await;
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn enqueue_many_splits_a_large_call_and_a_repeat_of_it_creates_nothing() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let tenant = Uuid::new_v4();
    let owner = h.owner("test.bulk", |_| Ok(()));
    // About 1.2 MB of payloads: more than one message.
    let filler = "x".repeat(1000);
    let requests: Vec<pb::EnqueueRequest> = (0..1200)
        .map(|n| enqueue_request("test.bulk", &format!(r#"{{"n":{n},"f":"{filler}"}}"#)))
        .collect();
    let mut messages = h
        .bus
        .client()
        .subscribe(format!("{}.haven.retry.enqueues", h.ns))
        .await
        .unwrap();
    haven_retry_client::enqueue_many(&h.bus, tenant, None, requests.clone(), "sync-7")
        .await
        .unwrap();
    h.wait_status("resolved", 1200, T).await;
    let mut sizes = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        assert!(m.payload.len() <= 256 * 1024, "{} bytes", m.payload.len());
        sizes.push(RetryEnqueues::decode(m.payload).unwrap().items.len());
    }
    assert!(sizes.len() > 1, "one message of {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 1200);

    // The whole call again, e.g. by a publisher that did not hear back: nothing new.
    haven_retry_client::enqueue_many(&h.bus, tenant, None, requests, "sync-7")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT payload->>'n') FROM retry.retry_items")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1200);
    h.wait_status("resolved", 1200, T).await;
    assert_counts_match(&h).await;
    owner.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn owners_report_results_in_batches_and_alone_to_a_service_without_batches() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let tenant = Uuid::new_v4();
    let mut batches = h
        .bus
        .client()
        .subscribe(format!("{}.haven.retry.results", h.ns))
        .await
        .unwrap();
    let owner = h.owner("test.many", |_| Ok(()));
    backlog(&h, tenant, "test.many", 500).await;
    h.wait_status("resolved", 500, T).await;
    // 500 results finished 64 at a time: some shared a message.
    let first = tokio::time::timeout(T, batches.next())
        .await
        .unwrap()
        .unwrap();
    let first = RetryResults::decode(first.payload).unwrap();
    assert!(first.results.len() > 1, "{} results", first.results.len());

    // A retry service from before `haven.retry.results`: its stream does not take it, so
    // the owner's batches are refused and each result goes alone on `haven.retry.result`.
    // (Without our listener the refusal is immediate: nobody answers the subject.)
    drop(batches);
    let mut old = haven_retry_client::streams().remove(0);
    old.subjects
        .retain(|s| *s != haven_retry_client::RESULTS_SUBJECT);
    h.bus.ensure_stream(&old).await.unwrap();
    backlog(&h, tenant, "test.many", 500).await;
    h.wait_status("resolved", 1000, T).await;
    assert_counts_match(&h).await;
    owner.shutdown().await;
    svc.shutdown().await;
}
