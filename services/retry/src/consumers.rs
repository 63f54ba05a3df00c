//! The retry service's entrances on the bus: `haven.retry.enqueue` and `haven.retry.result`,
//! each with its batched form (`haven.retry.enqueues`, `haven.retry.results`). A message is
//! acknowledged only after its effect is committed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haven_batch::Batcher;
use haven_bus::{Bus, ConsumerSpec, Delivery, Outcome};
use haven_proto::events::v1::{
    RetryEnqueue, RetryEnqueues, RetryOutcome, RetryResult, RetryResults,
};
use haven_retry_client::{
    COMMANDS_STREAM, ENQUEUE_SUBJECT, ENQUEUES_SUBJECT, RESULT_SUBJECT, RESULTS_SUBJECT,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admission::{Admission, Refused};
use crate::model::ItemRow;
use crate::store::{Applied, NewItem, Outcome as AttemptOutcome, ResultIn, Store};
use crate::validate;
use crate::window::Window;

/// Most items in one enqueue or result batch.
const BATCH: usize = 512;
/// Batches written at once: two, so that one runs while the other's commit is flushed.
const IN_FLIGHT: usize = 2;

pub type EnqueueBatcher = Batcher<NewItem, Option<(ItemRow, bool)>>;

/// Inserts enqueued items in batches.
pub fn enqueue_batcher(store: Store) -> EnqueueBatcher {
    Batcher::spawn(BATCH, IN_FLIGHT, move |items: Vec<NewItem>| {
        let store = store.clone();
        async move {
            let out = store.enqueue(&items).await?;
            let created = out.iter().filter(|o| matches!(o, Some((_, true)))).count();
            metrics::counter!("haven_retry_enqueued_total").increment(created as u64);
            Ok::<_, crate::store::StoreError>(out)
        }
    })
}

/// Applies results in batches; the store writes the lifecycle events of what finished to
/// the outbox in the same transaction.
pub fn result_batcher(
    store: Store,
    wake: Arc<Notify>,
    window: Arc<Window>,
) -> Batcher<ResultIn, ()> {
    Batcher::spawn(BATCH, IN_FLIGHT, move |results: Vec<ResultIn>| {
        let store = store.clone();
        let wake = wake.clone();
        let window = window.clone();
        async move {
            let applied = store
                .apply_results(&results)
                .await
                .map_err(|e| e.to_string())?;
            let (mut finished, mut stale) = (0, 0u64);
            for a in &applied {
                match a {
                    Applied::Transition(_) => finished += 1,
                    Applied::Stale => stale += 1,
                    Applied::Replayed => {}
                }
            }
            // What owners finished within their leases sizes the in-flight window.
            window.finished(finished, tokio::time::Instant::now());
            metrics::counter!("haven_retry_results_total").increment(results.len() as u64);
            if stale > 0 {
                metrics::counter!("haven_retry_stale_results_total").increment(stale);
            }
            // Room freed and rescheduled items: the dispatcher may have work.
            wake.notify_one();
            Ok::<_, String>(vec![(); results.len()])
        }
    })
}

pub fn spawn(
    bus: Bus,
    enqueue: EnqueueBatcher,
    admission: Arc<Admission>,
    results: Batcher<ResultIn, ()>,
    token: CancellationToken,
) {
    let spec = ConsumerSpec::new(COMMANDS_STREAM, "retry_enqueue")
        .filter(ENQUEUE_SUBJECT)
        .concurrency(BATCH);
    let (batcher, admitting) = (enqueue.clone(), admission.clone());
    run(&bus, &token, spec, move |d: Delivery<RetryEnqueue>| {
        let (enqueue, admission) = (batcher.clone(), admitting.clone());
        async move { handle_enqueue(d, &enqueue, &admission).await }
    });
    let spec = ConsumerSpec::new(COMMANDS_STREAM, "retry_enqueue_batches")
        .filter(ENQUEUES_SUBJECT)
        // Each message holds up to a publisher's whole batch.
        .concurrency(IN_FLIGHT * 4);
    run(&bus, &token, spec, move |d: Delivery<RetryEnqueues>| {
        let (enqueue, admission) = (enqueue.clone(), admission.clone());
        async move { handle_enqueues(d, &enqueue, &admission).await }
    });
    let spec = ConsumerSpec::new(COMMANDS_STREAM, "retry_results")
        .filter(RESULT_SUBJECT)
        // Enough for both of the batcher's batches to be full.
        .concurrency(BATCH * IN_FLIGHT);
    let batcher = results.clone();
    run(&bus, &token, spec, move |d: Delivery<RetryResult>| {
        let results = batcher.clone();
        async move { handle_result(d, &results).await }
    });
    let spec = ConsumerSpec::new(COMMANDS_STREAM, "retry_result_batches")
        .filter(RESULTS_SUBJECT)
        // Each message holds up to an owner's whole batch.
        .concurrency(IN_FLIGHT * 4);
    run(&bus, &token, spec, move |d: Delivery<RetryResults>| {
        let results = results.clone();
        async move { handle_results(d, &results).await }
    });
}

/// Runs one consumer on a task of its own until `token` is cancelled.
fn run<M, H, Fut>(bus: &Bus, token: &CancellationToken, spec: ConsumerSpec, handler: H)
where
    M: prost::Message + Default + Send + 'static,
    H: Fn(Delivery<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (bus, shutdown) = (bus.clone(), token.clone().cancelled_owned());
    tokio::spawn(async move {
        let durable = spec.durable.clone();
        if let Err(e) = bus.consume(spec, handler, shutdown).await {
            tracing::error!(error = %e, consumer = %durable, "consumer stopped");
        }
    });
}

async fn handle_enqueue(
    d: Delivery<RetryEnqueue>,
    batcher: &EnqueueBatcher,
    admission: &Admission,
) -> Outcome {
    let Some(item) = new_item(&d.message, d.msg_id.clone()) else {
        return Outcome::Term;
    };
    match admit(admission, &item).await {
        Admit::Yes => {}
        Admit::Never => return Outcome::Term,
        Admit::Later => return Outcome::Retry(Some(Duration::from_secs(5))),
    }
    match batcher.submit(item).await {
        Ok(Some(_)) => Outcome::Ack,
        Ok(None) => Outcome::Retry(Some(Duration::from_millis(100))),
        Err(e) => {
            tracing::warn!(error = %e, "enqueue not stored; will retry");
            Outcome::Retry(Some(Duration::from_secs(1)))
        }
    }
}

/// Each enqueue of the message as if it had come alone, item `i` under the source id
/// `<Nats-Msg-Id>#i`: the invalid and the disallowed are dropped, the rest stored, and the
/// message is acknowledged once all of those are. Admission is asked for every item before
/// any is stored, so a tenant over its backlog cap holds the whole message back; when some
/// items cannot be stored it comes again whole, and the ones already stored are recognised
/// by their source ids.
async fn handle_enqueues(
    d: Delivery<RetryEnqueues>,
    batcher: &EnqueueBatcher,
    admission: &Admission,
) -> Outcome {
    let mut items = Vec::with_capacity(d.message.items.len());
    for (i, message) in d.message.items.iter().enumerate() {
        let source = d.msg_id.as_ref().map(|id| format!("{id}#{i}"));
        let Some(item) = new_item(message, source) else {
            continue;
        };
        match admit(admission, &item).await {
            Admit::Yes => items.push(item),
            Admit::Never => {}
            Admit::Later => return Outcome::Retry(Some(Duration::from_secs(5))),
        }
    }
    let stored =
        futures::future::join_all(items.into_iter().map(|item| batcher.submit(item))).await;
    let (mut failed, mut raced, mut first) = (0usize, 0usize, None);
    for s in stored {
        match s {
            Ok(Some(_)) => {}
            Ok(None) => raced += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => {
            tracing::warn!(error = %e, failed, of = d.message.items.len(), "enqueues not stored; will retry the batch");
            Outcome::Retry(Some(Duration::from_secs(1)))
        }
        None if raced > 0 => Outcome::Retry(Some(Duration::from_millis(100))),
        None => Outcome::Ack,
    }
}

/// The store's form of an enqueue, or `None` (logged) when it can never be stored.
fn new_item(message: &RetryEnqueue, source_msg_id: Option<String>) -> Option<NewItem> {
    let Ok(tenant_id) = Uuid::parse_str(&message.tenant_id) else {
        tracing::error!(tenant_id = %message.tenant_id, "enqueue message has no valid tenant_id; dropping it");
        return None;
    };
    let Some(request) = message.request.as_ref() else {
        tracing::error!("enqueue message has no request; dropping it");
        return None;
    };
    let user = Some(message.user_id.clone());
    match validate::new_item(tenant_id, user, request, source_msg_id, Utc::now()) {
        Ok(item) => Some(item),
        Err(e) => {
            tracing::error!(error = %e, operation_type = %request.operation_type, "invalid enqueue message; dropping it");
            metrics::counter!("haven_retry_rejected_total").increment(1);
            None
        }
    }
}

/// What admission said of an item, as the consumers act on it.
enum Admit {
    Yes,
    /// Not on this deployment's allow-list: dropped.
    Never,
    /// Over the tenant's backlog cap, or the count could not be read: offered again later,
    /// as nothing a publisher handed over is lost.
    Later,
}

async fn admit(admission: &Admission, item: &NewItem) -> Admit {
    match admission.admit(item.tenant_id, &item.operation_type).await {
        Ok(()) => Admit::Yes,
        Err(Refused::NotAllowed(op)) => {
            tracing::error!(operation_type = ?op, "enqueue of an operation type this deployment does not accept; dropping it");
            metrics::counter!("haven_retry_rejected_total").increment(1);
            Admit::Never
        }
        Err(e @ (Refused::Backlog { .. } | Refused::Store(_))) => {
            tracing::warn!(error = %e, tenant = %item.tenant_id, "enqueue held back; will retry");
            Admit::Later
        }
    }
}

async fn handle_result(d: Delivery<RetryResult>, batcher: &Batcher<ResultIn, ()>) -> Outcome {
    let Some(result) = result_in(&d.message) else {
        return Outcome::Term;
    };
    match batcher.submit(result).await {
        Ok(()) => Outcome::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "result not applied; will retry");
            Outcome::Retry(Some(Duration::from_secs(1)))
        }
    }
}

/// Each result of the message as if it had come alone: the invalid ones are dropped, the
/// rest applied, and the message is acknowledged once all of those are. If some cannot be
/// applied, it comes again whole, and the ones already applied are recognised as repeats.
async fn handle_results(d: Delivery<RetryResults>, batcher: &Batcher<ResultIn, ()>) -> Outcome {
    let submitted = d
        .message
        .results
        .iter()
        .filter_map(result_in)
        .map(|result| batcher.submit(result));
    let failed: Vec<String> = futures::future::join_all(submitted)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    match failed.first() {
        None => Outcome::Ack,
        Some(e) => {
            tracing::warn!(error = %e, failed = failed.len(), of = d.message.results.len(), "results not applied; will retry the batch");
            Outcome::Retry(Some(Duration::from_secs(1)))
        }
    }
}

/// The store's form of a result, or `None` (logged) when it cannot be applied.
fn result_in(r: &RetryResult) -> Option<ResultIn> {
    let (Ok(id), Ok(tenant_id)) = (Uuid::parse_str(&r.id), Uuid::parse_str(&r.tenant_id)) else {
        tracing::error!(id = %r.id, "result with invalid ids; dropping it");
        return None;
    };
    let outcome = match RetryOutcome::try_from(r.outcome) {
        Ok(RetryOutcome::Succeeded) => AttemptOutcome::Succeeded,
        Ok(RetryOutcome::Failed) => AttemptOutcome::Failed,
        Ok(RetryOutcome::Permanent) => AttemptOutcome::Permanent,
        Ok(RetryOutcome::Unspecified) | Err(_) => {
            tracing::error!(id = %r.id, outcome = r.outcome, "result without a valid outcome; dropping it");
            return None;
        }
    };
    Some(ResultIn {
        id,
        tenant_id,
        attempt: r.attempt,
        outcome,
        error: (!r.error.is_empty()).then(|| r.error.chars().take(4000).collect()),
        duration_ms: r.duration_ms,
        retry_after: Duration::from_millis(r.retry_after_ms).min(crate::backoff::MAX_RETRY_AFTER),
    })
}
