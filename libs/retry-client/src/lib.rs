//! For services that own retryable operations: hand a failed operation to the retry
//! service over NATS ([`enqueue`]) and handle its dispatches ([`consume`]), reporting each
//! attempt's outcome back. The subjects and streams of the retry queue are defined here, once.

use std::future::Future;
use std::time::{Duration, Instant};

use haven_bus::{Bus, BusError, ConsumerSpec, Delivery, Outcome, StreamSpec};
use haven_proto::events::v1::{RetryDispatch, RetryEnqueue, RetryOutcome, RetryResult};
use haven_proto::retry::v1::EnqueueRequest;

/// Work-queue stream of the retry queue's commands: enqueue, dispatch and result.
pub const COMMANDS_STREAM: &str = "RETRY_COMMANDS";
/// Stream of its lifecycle events.
pub const EVENTS_STREAM: &str = "RETRY_EVENTS";
pub const ENQUEUE_SUBJECT: &str = "haven.retry.enqueue";
pub const RESULT_SUBJECT: &str = "haven.retry.result";
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
            subjects: vec![ENQUEUE_SUBJECT, RESULT_SUBJECT, "haven.retry.dispatch.>"],
            // Each command has exactly one consumer and is gone once handled.
            work_queue: true,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
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

/// Handles dispatches of `operation_type` until `shutdown`, reporting every outcome to the
/// retry service. Replicas of the owner share the work through one durable consumer. A
/// dispatch is acknowledged only once its result is stored on the bus; if that fails the
/// dispatch comes again, so handlers must be idempotent.
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
        .concurrency(concurrency);
    let handler = &handler;
    bus.consume(
        spec,
        move |delivery: Delivery<RetryDispatch>| async move {
            let dispatch = delivery.message;
            let started = Instant::now();
            let result = handler(dispatch.clone()).await;
            let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            let (outcome, error, retry_after) = match &result {
                Ok(()) => (RetryOutcome::Succeeded, String::new(), None),
                Err(HandlerError::Retryable { message, retry_after }) => (RetryOutcome::Failed, message.clone(), *retry_after),
                Err(HandlerError::Permanent(message)) => (RetryOutcome::Permanent, message.clone(), None),
            };
            let report = RetryResult {
                id: dispatch.id.clone(),
                tenant_id: dispatch.tenant_id.clone(),
                attempt: dispatch.attempt,
                outcome: outcome as i32,
                error,
                duration_ms,
                retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0),
                finished_at: Some(haven_proto::time::timestamp(chrono::Utc::now())),
            };
            let msg_id = format!("{}:{}:result", dispatch.id, dispatch.attempt);
            match bus.publish(RESULT_SUBJECT, &report, &msg_id).await {
                Ok(_) => Outcome::Ack,
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
