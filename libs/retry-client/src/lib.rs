//! For services that own retryable operations: hand a failed operation to the retry
//! service over NATS ([`enqueue`]) and handle its dispatches ([`consume`]), reporting each
//! attempt's outcome back. The subjects and streams of the retry queue are defined here, once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haven_batch::Batcher;
use haven_bus::{Bus, BusError, ConsumerSpec, Delivery, Fate, Outcome, Outgoing, StreamSpec};
use haven_proto::events::v1::{
    RetryDispatch, RetryEnqueue, RetryEnqueues, RetryOutcome, RetryResult, RetryResults,
};
use haven_proto::retry::v1::EnqueueRequest;
use haven_proto::time::from_timestamp;
use prost::Message;
use tracing::{Instrument, Span};

/// Work-queue stream of the retry queue's commands: enqueue, dispatch and result.
pub const COMMANDS_STREAM: &str = "RETRY_COMMANDS";
/// Stream of its lifecycle events.
pub const EVENTS_STREAM: &str = "RETRY_EVENTS";
pub const ENQUEUE_SUBJECT: &str = "haven.retry.enqueue";
/// Several enqueues in one [`RetryEnqueues`] message.
pub const ENQUEUES_SUBJECT: &str = "haven.retry.enqueues";
pub const RESULT_SUBJECT: &str = "haven.retry.result";
/// Several results in one [`RetryResults`] message.
pub const RESULTS_SUBJECT: &str = "haven.retry.results";
pub const RESOLVED_SUBJECT: &str = "haven.retry.events.resolved";
pub const FAILED_SUBJECT: &str = "haven.retry.events.failed";

/// `haven.retry.dispatch.<operation_type>`.
pub fn dispatch_subject(operation_type: &str) -> String {
    format!("haven.retry.dispatch.{operation_type}")
}

/// The streams the retry service owns (and creates at start-up).
pub fn streams() -> Vec<StreamSpec> {
    vec![
        StreamSpec {
            name: COMMANDS_STREAM,
            subjects: vec![
                ENQUEUE_SUBJECT,
                ENQUEUES_SUBJECT,
                RESULT_SUBJECT,
                RESULTS_SUBJECT,
                "haven.retry.dispatch.>",
            ],
            // Each command has exactly one consumer and is gone once handled.
            work_queue: true,
            max_age: Duration::from_secs(7 * 24 * 3600),
            // The dispatcher publishes an unanswered dispatch again, with its id, for as long
            // as its lease runs: the repeat must still be recognised then.
            duplicate_window: MAX_LEASE + Duration::from_secs(300),
        },
        StreamSpec {
            name: EVENTS_STREAM,
            subjects: vec!["haven.retry.events.>"],
            work_queue: false,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
        },
    ]
}

/// The owners' durable consumer of `operation_type`'s dispatches. Operation types are
/// `[a-z0-9_]` words joined by dots and `-` appears in none, so `.` → `-` keeps distinct types
/// apart (`a.b_c` and `a_b.c` once both became `dispatch_a_b_c`).
pub fn dispatch_durable(operation_type: &str) -> String {
    format!("dispatch_{}", operation_type.replace('.', "-"))
}

/// Hands a failed operation to the retry service. `msg_id` de-duplicates within the tenant:
/// publishing the same operation twice with the same id creates one item. The `Nats-Msg-Id`
/// is `<tenant>:<msg_id>`, so another tenant's use of the same id is never taken for a repeat.
pub async fn enqueue(
    bus: &Bus,
    tenant_id: uuid::Uuid,
    user_id: Option<&str>,
    request: EnqueueRequest,
    msg_id: &str,
) -> Result<(), BusError> {
    let message = RetryEnqueue {
        tenant_id: tenant_id.to_string(),
        user_id: user_id.unwrap_or_default().to_owned(),
        request: Some(request),
    };
    bus.publish(ENQUEUE_SUBJECT, &message, &format!("{tenant_id}:{msg_id}"))
        .await
        .map(|_| ())
}

/// Hands several failed operations of one tenant to the retry service at once, in as few
/// `haven.retry.enqueues` messages as fit [`MESSAGE_BYTES`] (one stored message and one ack
/// each, instead of one per operation). `msg_id` de-duplicates the call as a whole: calling
/// again with the same id and the same requests creates nothing new, since message `k` is
/// `<tenant>:<msg_id>:<k>` and its item `i` is stored as `<tenant>:<msg_id>:<k>#<i>`.
///
/// Needs a retry service that takes `haven.retry.enqueues`; against an older one the
/// messages are refused (no stream takes the subject) and the error says so.
pub async fn enqueue_many(
    bus: &Bus,
    tenant_id: uuid::Uuid,
    user_id: Option<&str>,
    requests: Vec<EnqueueRequest>,
    msg_id: &str,
) -> Result<(), BusError> {
    let items = requests.into_iter().map(|request| RetryEnqueue {
        tenant_id: tenant_id.to_string(),
        user_id: user_id.unwrap_or_default().to_owned(),
        request: Some(request),
    });
    let messages: Vec<Outgoing> = split(items, MESSAGE_BYTES)
        .into_iter()
        .enumerate()
        .map(|(k, items)| Outgoing {
            subject: ENQUEUES_SUBJECT.to_owned(),
            payload: RetryEnqueues { items }.encode_to_vec().into(),
            msg_id: format!("{tenant_id}:{msg_id}:{k}"),
        })
        .collect();
    publish(bus, messages)
        .await
        .map_err(|reason| BusError::Publish {
            subject: ENQUEUES_SUBJECT.to_owned(),
            reason,
        })
}

/// `items` in groups whose encoded size (each with its tag and length prefix) stays within
/// `bytes`; an item larger than that goes alone.
fn split<M: Message>(items: impl IntoIterator<Item = M>, bytes: usize) -> Vec<Vec<M>> {
    let mut groups: Vec<Vec<M>> = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.encoded_len() + 8;
        match groups.last_mut() {
            Some(last) if size + len <= bytes => last.push(item),
            _ => {
                groups.push(vec![item]);
                size = 0;
            }
        }
        size += len;
    }
    groups
}

/// Why a handler did not succeed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt (5xx, 429, a timeout); `retry_after` is a floor for the wait.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// No retry can fix it (400, a revoked grant): the item fails at once.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent(message.into())
    }
}

/// The longest lease the retry service may hand out (`HAVEN_RETRY_LEASE` is refused above
/// it), and the ack wait of every owner's consumer: the server never redelivers a dispatch
/// while its lease may still run.
pub const MAX_LEASE: Duration = Duration::from_secs(15 * 60);

/// Results reported in one message at most: a batch forms only while earlier reports are
/// on their way, so under light load each result goes alone and nothing waits.
const REPORT_BATCH: usize = 512;
/// Encoded results or enqueues in one `haven.retry.results` or `haven.retry.enqueues`
/// message at most, a quarter of the server's default max payload; a larger batch is split.
const MESSAGE_BYTES: usize = 256 * 1024;
/// How long a report's messages may take to be stored before they count as failed.
const REPORT_WITHIN: Duration = Duration::from_secs(10);
/// After a batch is not stored, how long results go alone before batches are tried again.
const BATCHES_PAUSED: Duration = Duration::from_secs(60);

/// Reports results for one [`consume`]: one result alone on `haven.retry.result`, under its
/// own message id; several finished at once as [`RetryResults`] on `haven.retry.results`,
/// one stored message and one ack for the lot.
///
/// A batch that is not stored is reported again result by result, and batches pause for a
/// minute: a retry service that predates `haven.retry.results` has a stream that does not
/// take it, and it is told once a minute, not once a batch.
fn reporter(bus: Bus) -> Batcher<(RetryResult, Span), ()> {
    let paused_until: std::sync::Arc<Mutex<Option<Instant>>> = std::sync::Arc::default();
    Batcher::spawn(REPORT_BATCH, 2, move |results: Vec<(RetryResult, Span)>| {
        let (bus, paused_until) = (bus.clone(), paused_until.clone());
        async move {
            let n = results.len();
            let batches_paused = || {
                paused_until
                    .lock()
                    .map(|until| until.is_some_and(|t| Instant::now() < t))
                    .unwrap_or(false)
            };
            if n > 1 && !batches_paused() {
                // One message for many traces: its span follows from each handler's.
                let span = tracing::info_span!("retry.report_results", results = n);
                for (_, handler) in &results {
                    span.follows_from(handler);
                }
                let only: Vec<&RetryResult> = results.iter().map(|(r, _)| r).collect();
                match publish(&bus, batched(&only)).instrument(span).await {
                    Ok(()) => return Ok::<_, String>(vec![(); n]),
                    Err(why) => {
                        tracing::warn!(error = %why, results = n, pause_s = BATCHES_PAUSED.as_secs(), "batch of results not stored; reporting each alone, without batches for a while");
                        if let Ok(mut until) = paused_until.lock() {
                            *until = Some(Instant::now() + BATCHES_PAUSED);
                        }
                    }
                }
            }
            // Each alone, in its handler's trace, all at once.
            let sent = results.iter().map(|(result, handler)| {
                let bus = &bus;
                async move {
                    bus.publish(RESULT_SUBJECT, result, &result_id(result))
                        .await
                }
                .instrument(handler.clone())
            });
            for sent in futures::future::join_all(sent).await {
                sent.map_err(|e| e.to_string())?;
            }
            Ok(vec![(); n])
        }
    })
}

/// The message id of a result sent alone: it names the attempt, so a repeat is stored once.
fn result_id(result: &RetryResult) -> String {
    format!("{}:{}:result", result.id, result.attempt)
}

/// Results as `haven.retry.results` messages of at most [`MESSAGE_BYTES`] each.
fn batched(results: &[&RetryResult]) -> Vec<Outgoing> {
    let results = results.iter().map(|r| (*r).clone());
    // A repeat of a batch is harmless (the retry service ignores a result it has applied),
    // so a fresh id per message is enough.
    split(results, MESSAGE_BYTES)
        .into_iter()
        .map(|results| Outgoing {
            subject: RESULTS_SUBJECT.to_owned(),
            payload: RetryResults { results }.encode_to_vec().into(),
            msg_id: format!("{}:results", uuid::Uuid::new_v4()),
        })
        .collect()
}

/// Publishes every message and waits until all are stored.
async fn publish(bus: &Bus, messages: Vec<Outgoing>) -> Result<(), String> {
    let n = messages.len();
    for fate in bus.publish_all(messages, REPORT_WITHIN).await {
        match fate {
            Fate::Stored => {}
            Fate::Refused(why) | Fate::Unknown(why) => {
                return Err(format!("{why} (one of {n} messages)"));
            }
        }
    }
    Ok(())
}

/// Attempts this process remembers, so a redelivery is answered without running again.
const REMEMBERED: usize = 65_536;

/// What this process knows of one attempt.
#[derive(Clone)]
enum Attempt {
    /// Its handler is running here now.
    Running,
    /// Its lease ran out before or while it ran: not run (any more), no result.
    Abandoned,
    /// It ran; this is the result reported.
    Finished(RetryResult),
}

/// The attempts this process took, newest [`REMEMBERED`] of them.
#[derive(Default)]
struct Memory {
    attempts: HashMap<(String, i32), Attempt>,
    order: VecDeque<(String, i32)>,
}

impl Memory {
    /// Records `attempt` and returns what was known of it before.
    fn set(&mut self, key: &(String, i32), attempt: Attempt) -> Option<Attempt> {
        let before = self.attempts.insert(key.clone(), attempt);
        if before.is_none() {
            self.order.push_back(key.clone());
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.attempts.remove(&old);
                }
            }
        }
        before
    }
}

/// Handles dispatches of `operation_type` until `shutdown`, reporting every outcome to the
/// retry service. Replicas of the owner share the work through one durable consumer.
///
/// The lease is honoured, so that one attempt runs once while the owner lives:
/// - a dispatch whose lease has passed (it waited in the stream while this owner was down,
///   and the retry service has since rescued it) is acknowledged without running;
/// - a handler still running when its lease ends is abandoned (dropped) and reports nothing:
///   the retry service counts the attempt as expired and dispatches the next one;
/// - a redelivery of an attempt this process ran (its ack was lost) is answered with the
///   result it already reported, without running the handler again.
///
/// A dispatch is acknowledged only once its result is stored on the bus; if that fails the
/// dispatch comes again. Handlers should still be idempotent: a process that dies after
/// running one but before reporting it leaves the attempt to the lease.
pub async fn consume<H, Fut>(
    bus: &Bus,
    operation_type: &str,
    concurrency: usize,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BusError>
where
    H: Fn(RetryDispatch) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let spec = ConsumerSpec::new(COMMANDS_STREAM, dispatch_durable(operation_type))
        .replacing(format!("dispatch_{}", operation_type.replace('.', "_")))
        .filter(dispatch_subject(operation_type))
        .concurrency(concurrency)
        .ack_wait(MAX_LEASE);
    let handler = &handler;
    let memory = &Mutex::new(Memory::default());
    let reporter = &reporter(bus.clone());
    bus.consume(
        spec,
        move |delivery: Delivery<RetryDispatch>| async move {
            let dispatch = delivery.message;
            let key = (dispatch.id.clone(), dispatch.attempt);
            let before = memory
                .lock()
                .map(|mut m| m.set(&key, Attempt::Running))
                .unwrap_or(None);
            let report = match before {
                None => run(handler, &dispatch).await,
                // Running here already (its progress acks were lost) or given up: nothing more.
                Some(again @ (Attempt::Running | Attempt::Abandoned)) => {
                    tracing::debug!(item = %dispatch.id, attempt = dispatch.attempt, "redelivery of an attempt taken here; not run again");
                    if let Ok(mut m) = memory.lock() {
                        m.set(&key, again);
                    }
                    return Outcome::Ack;
                }
                Some(Attempt::Finished(report)) => Some(report),
            };
            let Some(report) = report else {
                if let Ok(mut m) = memory.lock() {
                    m.set(&key, Attempt::Abandoned);
                }
                return Outcome::Ack;
            };
            if let Ok(mut m) = memory.lock() {
                m.set(&key, Attempt::Finished(report.clone()));
            }
            match reporter.submit((report, Span::current())).await {
                Ok(()) => Outcome::Ack,
                Err(e) => {
                    tracing::warn!(error = %e, item = %dispatch.id, "cannot report result; dispatch will come again");
                    Outcome::Retry(Some(Duration::from_secs(1)))
                }
            }
        },
        shutdown,
    )
    .await
}

/// Runs the handler within the dispatch's lease; `None` when the lease ran out first.
async fn run<H, Fut>(handler: &H, dispatch: &RetryDispatch) -> Option<RetryResult>
where
    H: Fn(RetryDispatch) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let left = match dispatch.lease_expires_at.as_ref().and_then(from_timestamp) {
        Some(lease) => match (lease - chrono::Utc::now()).to_std() {
            Ok(left) if !left.is_zero() => Some(left),
            _ => {
                tracing::warn!(item = %dispatch.id, attempt = dispatch.attempt, %lease, "dispatch arrived after its lease ran out; not run (the retry service dispatches the next attempt)");
                return None;
            }
        },
        // From a retry service that sets no lease.
        None => None,
    };
    let started = Instant::now();
    let call = handler(dispatch.clone());
    let result = match left {
        Some(left) => match tokio::time::timeout(left, call).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(item = %dispatch.id, attempt = dispatch.attempt, "handler outlived its lease; abandoned (the retry service dispatches the next attempt)");
                return None;
            }
        },
        None => call.await,
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (outcome, error, retry_after) = match &result {
        Ok(()) => (RetryOutcome::Succeeded, String::new(), None),
        Err(HandlerError::Retryable {
            message,
            retry_after,
        }) => (RetryOutcome::Failed, message.clone(), *retry_after),
        Err(HandlerError::Permanent(message)) => (RetryOutcome::Permanent, message.clone(), None),
    };
    Some(RetryResult {
        id: dispatch.id.clone(),
        tenant_id: dispatch.tenant_id.clone(),
        attempt: dispatch.attempt,
        outcome: outcome as i32,
        error,
        duration_ms,
        retry_after_ms: retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        finished_at: Some(haven_proto::time::timestamp(chrono::Utc::now())),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn result(id: &str, error_bytes: usize) -> RetryResult {
        RetryResult {
            id: id.to_owned(),
            attempt: 1,
            error: "e".repeat(error_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn batches_are_split_under_the_byte_bound_and_keep_every_result_in_order() {
        let results = [
            result("a", 100_000),
            result("b", 100_000),
            result("c", 100_000),
            result("d", 10),
            // Larger than the bound alone: a message of its own, never dropped.
            result("e", MESSAGE_BYTES + 1),
        ];
        let messages = batched(&results.iter().collect::<Vec<_>>());
        let decoded: Vec<Vec<String>> = messages
            .iter()
            .map(|m| {
                assert_eq!(m.subject, RESULTS_SUBJECT);
                RetryResults::decode(m.payload.clone())
                    .unwrap()
                    .results
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            })
            .collect();
        assert_eq!(decoded, vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        // Each message has its own id, so none is taken for a repeat of another.
        assert_ne!(messages[0].msg_id, messages[1].msg_id);
    }

    #[test]
    fn a_result_alone_is_named_by_its_attempt() {
        assert_eq!(result_id(&result("item", 0)), "item:1:result");
    }
}
