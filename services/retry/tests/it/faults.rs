//! The interleavings where the queue used to break its promise (issue 12), each driven to
//! the step where it broke: NATS paused (SIGSTOP: connections stay open, nothing answers),
//! killed or restarted; a handler that outlives the ack wait; an owner back from downtime;
//! two replicas under one in-flight cap.

use std::time::Duration;

use crate::common::*;
use haven_auth::Role;
use haven_proto::retry::v1 as pb;
use haven_testkit::NatsServer;
use tokio::time::Instant;
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

async fn enqueue(client: &mut Client, op: &str, max_attempts: i32) -> String {
    let mut req = enqueue_request(op, "{}");
    req.max_attempts = max_attempts;
    client
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap()
        .id
}

/// Waits until `id` is resolved, failed or cancelled; returns its status and attempts.
async fn wait_terminal(h: &Harness, id: &str, timeout: Duration) -> (String, i32) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = row(h, id).await;
        if matches!(got.0.as_str(), "resolved" | "failed" | "cancelled") {
            return got;
        }
        assert!(Instant::now() < deadline, "item {id} still {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox_rows(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM retry.outbox")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

/// Waits until `id` is claimed and dispatched.
async fn wait_processing(h: &Harness, id: &str) {
    haven_testkit::wait_for("the item's dispatch", T, || async {
        (row(h, id).await.0 == "processing").then_some(())
    })
    .await;
}

async fn attempt_outcome(h: &Harness, id: &str, attempt: i32) -> Option<String> {
    sqlx::query_scalar(
        "SELECT outcome FROM retry.retry_attempts WHERE item_id = $1::uuid AND attempt = $2",
    )
    .bind(id)
    .bind(attempt)
    .fetch_optional(&h.db.pool)
    .await
    .unwrap()
}

/// Defect 1. X is claimed for its last attempt while NATS hangs; the publish ack times out,
/// yet the client sends its buffer once the server wakes and the owner succeeds. The claim
/// used to be given back, the success dropped as stale, and X dead-lettered when its second
/// claim's lease ran out. Kept, X resolves: run once, no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_whose_ack_timed_out_keeps_its_claim() {
    let nats = NatsServer::start().unwrap();
    let h = Harness::with_nats(nats.url()).await;
    let mut config = h.config();
    config.lease = Duration::from_secs(15);
    let svc = h.start(config).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner("test.hung", |_| Ok(()));
    // All connected: one item goes through.
    let warm = enqueue(&mut client, "test.hung", 1).await;
    wait_terminal(&h, &warm, T).await;

    nats.pause();
    let x = enqueue(&mut client, "test.hung", 1).await;
    // Until the dispatcher's wait for the ack has run out (5 s), or it gave the claim back.
    let mut claimed = false;
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        match row(&h, &x).await.0.as_str() {
            "processing" => claimed = true,
            "pending" if claimed => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(claimed, "X was never claimed while NATS hung");
    nats.resume();

    assert_eq!(wait_terminal(&h, &x, T).await, ("resolved".into(), 1));
    assert_eq!(owner.deliveries(&x), vec![(1, 1)], "X ran other than once");
    assert_eq!(events_about(&h, "failed", &x).await, 0, "X dead-lettered");
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Defect 2. The rescue decides X failed while NATS is down, and the replica stops before
/// it could publish the dead letter. The event waits in the outbox; another replica sends
/// it once NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_decided_while_nats_is_down_is_sent_when_it_returns() {
    let mut nats = NatsServer::start().unwrap();
    let h = Harness::with_nats(nats.url()).await;
    let config = || {
        let mut c = h.config();
        c.lease = Duration::from_secs(1);
        c
    };
    let a = h.start(config()).await;
    let mut client = h.client(&a, Uuid::new_v4(), Role::Service).await;
    // Nobody handles this type: its only attempt's lease runs out.
    let x = enqueue(&mut client, "test.unowned", 1).await;
    haven_testkit::wait_for("X to be claimed", T, || async {
        (row(&h, &x).await.0 == "processing").then_some(())
    })
    .await;
    nats.kill();
    haven_testkit::wait_for("X to be rescued as failed", T, || async {
        (row(&h, &x).await.0 == "failed").then_some(())
    })
    .await;
    a.shutdown().await;
    assert_eq!(outbox_rows(&h).await, 1, "the dead letter is not kept");

    nats.restart().unwrap();
    let b = h.start(config()).await;
    haven_testkit::wait_for("X's dead letter", T, || async {
        (events_about(&h, "failed", &x).await == 1).then_some(())
    })
    .await;
    haven_testkit::wait_for("the outbox to empty", T, || async {
        (outbox_rows(&h).await == 0).then_some(())
    })
    .await;
    assert_eq!(events_about(&h, "failed", &x).await, 1);
    b.shutdown().await;
}

/// Defect 3. With a full batch claimed and NATS hung, the dispatcher used to wait for each
/// ack in turn (5 s apiece, ~21 minutes for 256) and the lease rescue, run from the same
/// loop, waited with it. The rescue has its own task now, and the batch its one deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_bus_holds_back_neither_rescue_nor_recovery() {
    let nats = NatsServer::start().unwrap();
    let h = Harness::with_nats(nats.url()).await;
    let mut config = h.config();
    config.lease = Duration::from_secs(3);
    config.max_in_flight_per_tenant = 0;
    let svc = h.start(config).await;
    let tenant = Uuid::new_v4();
    let mut client = h.client(&svc, tenant, Role::Service).await;
    // X is dispatched; nobody handles it, so its lease will run out.
    let x = enqueue(&mut client, "test.unowned", 20).await;
    wait_processing(&h, &x).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    nats.pause();
    let paused = Instant::now();
    // A whole batch falls due at once and is claimed; its publish cannot be answered.
    backlog(&h, tenant, "test.many", 256).await;
    haven_testkit::wait_for("X's lease to be rescued while the bus hangs", T, || async {
        (attempt_outcome(&h, &x, 1).await.as_deref() == Some("lease_expired")).then_some(())
    })
    .await;
    assert!(
        paused.elapsed() < Duration::from_secs(10),
        "X rescued only after {:?}",
        paused.elapsed()
    );
    nats.resume();
    let resumed = Instant::now();
    let owner = h.owner("test.many", |_| Ok(()));
    h.wait_status("resolved", 256, T).await;
    assert!(
        resumed.elapsed() < Duration::from_secs(30),
        "recovery took {:?}",
        resumed.elapsed()
    );
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Defect 4. An owner that was down receives, on restart, dispatches whose lease has
/// passed (the queue has rescued them and dispatched a later attempt). It must skip them
/// and run only the live attempt.
#[tokio::test]
async fn an_owner_back_from_downtime_skips_dispatches_whose_lease_passed() {
    let h = Harness::new().await;
    let mut config = h.config();
    config.lease = Duration::from_secs(3);
    let svc = h.start(config).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let x = enqueue(&mut client, "test.late", 20).await;
    haven_testkit::wait_for("a second attempt", T, || async {
        (row(&h, &x).await.1 >= 2).then_some(())
    })
    .await;

    // Every attempt before this one is past its lease by now.
    let live = row(&h, &x).await.1;
    let owner = h.owner("test.late", |_| Ok(()));
    let (status, attempts) = wait_terminal(&h, &x, T).await;
    assert_eq!(status, "resolved");
    let ran = owner.deliveries(&x);
    assert!(
        ran.iter().all(|&(attempt, n)| attempt >= live && n == 1),
        "ran {ran:?}; attempts before {live} had passed their lease"
    );
    // The one that resolved it ran (a live attempt whose lease ran out while it ran can
    // precede it: that one was live when it started).
    assert_eq!(ran.last(), Some(&(attempts, 1)));
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Defect 4. A handler slower than the owner library's old ack wait (30 s, under the 60 s
/// lease) was delivered again while it ran, and the attempt ran twice at once.
#[tokio::test]
async fn a_handler_slower_than_the_old_ack_wait_runs_once() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let owner = h.owner_with("test.slow", 4, |_d| async {
        tokio::time::sleep(Duration::from_secs(35)).await;
        Ok(())
    });
    let x = enqueue(&mut client, "test.slow", 5).await;
    assert_eq!(
        wait_terminal(&h, &x, Duration::from_secs(90)).await,
        ("resolved".into(), 1)
    );
    assert_eq!(owner.deliveries(&x), vec![(1, 1)]);
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Defect 9. Cancelling an item while its owner runs it closes the running attempt: its
/// history must not show it running forever.
#[tokio::test]
async fn cancelling_a_processing_item_closes_its_attempt() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let x = enqueue(&mut client, "test.unowned", 5).await;
    wait_processing(&h, &x).await;
    // While it runs, its history shows the attempt running, started by its claim.
    let running = client
        .get_retry_item(pb::GetRetryItemRequest { id: x.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.attempt_history.len(), 1);
    let attempt = &running.attempt_history[0];
    assert_eq!(attempt.attempt, 1);
    assert_eq!(attempt.outcome, pb::AttemptOutcome::Running as i32);
    assert_eq!(attempt.started_at, running.claimed_at);
    assert!(attempt.finished_at.is_none());
    assert!(!attempt.worker_id.is_empty());
    assert_eq!(attempt.worker_id, running.worker_id);
    let cancelled = client
        .cancel_retry_item(pb::CancelRetryItemRequest { id: x.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::RetryStatus::Cancelled as i32);
    let got = client
        .get_retry_item(pb::GetRetryItemRequest { id: x.clone() })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<i32> = got.attempt_history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![pb::AttemptOutcome::Cancelled as i32]);
    assert!(got.attempt_history[0].finished_at.is_some());
    assert_eq!(got.attempt_history[0].started_at, running.claimed_at);
    assert_eq!(got.attempt_history[0].worker_id, running.worker_id);
    svc.shutdown().await;
}

/// An attempt's row is written when it ends. A version before that wrote a `running` row at
/// the claim; an item claimed by it and finished by this one keeps one row per attempt.
#[tokio::test]
async fn an_attempt_claimed_by_an_earlier_version_finishes_in_its_row() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let x = enqueue(&mut client, "test.upgraded", 5).await;
    wait_processing(&h, &x).await;
    // The row an earlier version wrote at the claim.
    sqlx::query(
        "INSERT INTO retry.retry_attempts (item_id, attempt, started_at, worker_id)
         SELECT id, attempts, claimed_at, worker_id FROM retry.retry_items WHERE id = $1::uuid",
    )
    .bind(&x)
    .execute(&h.db.pool)
    .await
    .unwrap();
    let get = |client: &mut Client| {
        let mut client = client.clone();
        let x = x.clone();
        async move {
            client
                .get_retry_item(pb::GetRetryItemRequest { id: x })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let running = get(&mut client).await;
    let outcomes: Vec<i32> = running.attempt_history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![pb::AttemptOutcome::Running as i32]);

    let owner = h.owner("test.upgraded", |_| Ok(()));
    assert_eq!(wait_terminal(&h, &x, T).await.0, "resolved");
    let done = get(&mut client).await;
    let outcomes: Vec<i32> = done.attempt_history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![pb::AttemptOutcome::Succeeded as i32]);
    assert_eq!(done.attempt_history[0].started_at, running.claimed_at);
    assert!(done.attempt_history[0].finished_at.is_some());
    owner.shutdown().await;
    svc.shutdown().await;
}

/// Defect 9. Two replicas under one in-flight cap: each used to compare the cap with its
/// own stale count, and together they held up to twice as many leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_holds_across_replicas() {
    const CAP: i64 = 8;
    const N: i64 = 600;
    let h = Harness::new().await;
    let config = |worker: &str| {
        let mut c = h.config();
        c.worker_id = Some(worker.into());
        c.max_in_flight = CAP;
        c.max_in_flight_per_tenant = 0;
        c
    };
    let a = h.start(config("replica-a")).await;
    let b = h.start(config("replica-b")).await;
    let owner = h.owner_with("test.capped", 64, |_d| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    });
    backlog(&h, Uuid::new_v4(), "test.capped", N as i32).await;
    let mut most = 0;
    let deadline = Instant::now() + T;
    loop {
        let counts = h.status_counts().await;
        most = most.max(counts.get("processing").copied().unwrap_or(0));
        if counts.get("resolved").copied().unwrap_or(0) == N {
            break;
        }
        assert!(Instant::now() < deadline, "not finished: {counts:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(most <= CAP, "{most} leases held under a cap of {CAP}");
    assert!(most > 0);
    owner.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Owners a tenth as fast as the claims: a thousand items leased at once for a second each,
/// an owner finishing about a hundred a second. Every dispatch but the first hundred used to
/// expire in the owner's stream before it ran, and again on each rescue, until the items
/// failed without having run. The in-flight window is cut to what the owner finishes in a
/// lease, so every item resolves within its five attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_slower_than_the_claims_get_fewer_leases_not_failed_items() {
    const N: i32 = 1_000;
    let h = Harness::new().await;
    let mut config = h.config();
    config.lease = Duration::from_secs(1);
    config.claim_batch = 16;
    config.max_in_flight_per_tenant = 0;
    let svc = h.start(config).await;
    backlog(&h, Uuid::new_v4(), "test.behind", N).await;
    let owner = h.owner_with("test.behind", 2, |_d| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let counts = h.status_counts().await;
        let done = ["resolved", "failed"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum::<i64>();
        if done == i64::from(N) {
            break counts;
        }
        assert!(Instant::now() < deadline, "not finished: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM retry.retry_attempts WHERE outcome = 'lease_expired'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        counts.get("resolved").copied().unwrap_or(0),
        i64::from(N),
        "{counts:?}, after {expired} expired leases"
    );
    assert_counts_match(&h).await;
    owner.shutdown().await;
    svc.shutdown().await;
}
