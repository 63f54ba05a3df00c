//! The durable pull-consumer loop every service uses to take work off the bus.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::Instrument;

use crate::headers::NatsHeaderExtractor;
use crate::{Bus, BusError, MSG_ID_HEADER};

/// How long a pull request waits on the server for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What the handler decided about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the server forgets the message.
    Ack,
    /// Not now: redeliver after the delay (or at once).
    Retry(Option<Duration>),
    /// Never: the message cannot be handled (e.g. it does not decode); do not redeliver.
    Term,
}

/// A durable consumer on one of a service's streams.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// The stream's name, without namespace.
    pub stream: &'static str,
    /// The durable name, without namespace; replicas sharing it share the work.
    pub durable: String,
    /// Subjects to take, without namespace; empty takes the whole stream.
    pub filter_subjects: Vec<String>,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before the server gives up; `-1` for unlimited.
    pub max_deliver: i64,
    /// Messages handled at once by this process.
    pub concurrency: usize,
    /// An older durable name this consumer replaces: deleted when it exists with the same
    /// filter (a work-queue stream refuses two consumers with one filter), left alone when it
    /// belongs to someone else.
    pub replaces: Option<String>,
}

impl ConsumerSpec {
    pub fn new(stream: &'static str, durable: impl Into<String>) -> Self {
        ConsumerSpec {
            stream,
            durable: durable.into(),
            filter_subjects: Vec::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            concurrency: 64,
            replaces: None,
        }
    }

    pub fn replacing(mut self, old_durable: impl Into<String>) -> Self {
        self.replaces = Some(old_durable.into());
        self
    }

    pub fn filter(mut self, subject: impl Into<String>) -> Self {
        self.filter_subjects.push(subject.into());
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }
}

/// A decoded message handed to a handler.
#[derive(Debug)]
pub struct Delivery<M> {
    pub message: M,
    /// The subject without namespace, e.g. `haven.retry.dispatch.integrations.refresh`.
    pub subject: String,
    /// The publisher's `Nats-Msg-Id`, the natural idempotency key.
    pub msg_id: Option<String>,
    /// 1 on first delivery, more on redelivery.
    pub delivered: i64,
}

impl Bus {
    /// Runs `handler` on every message of the durable consumer until `shutdown` resolves,
    /// then lets in-flight handlers finish. A message is acked, nak'ed or terminated only
    /// after its handler returns, so a crash mid-handler means redelivery, never loss.
    /// Connection trouble (e.g. NATS restarting) is waited out, not returned.
    ///
    /// It asks the server for no more messages than it has free handlers, so nothing waits
    /// in this process while its ack wait runs out (and is then delivered twice); while a
    /// handler runs, the server is told every third of the ack wait that it is in progress.
    pub async fn consume<M, H, Fut>(
        &self,
        spec: ConsumerSpec,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), BusError>
    where
        M: prost::Message + Default + Send + 'static,
        H: Fn(Delivery<M>) -> Fut + Send + Sync,
        Fut: Future<Output = Outcome> + Send,
    {
        let consumer_name = self.namespace.name(&spec.durable);
        let handler = &handler;
        let mut running = FuturesUnordered::new();
        let mut connected = self.connected();
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut consumer = None;
        let mut open_failures = Failures::default();
        let mut pull_failures = Failures::default();
        'pulling: loop {
            let Some(open) = consumer.as_ref() else {
                let Some(opened) =
                    alongside(&mut running, &mut shutdown, self.open_consumer(&spec)).await
                else {
                    break 'pulling;
                };
                match opened {
                    Ok(c) => {
                        if let Some(failed) = open_failures.ended() {
                            tracing::info!(consumer = %consumer_name, failed_attempts = failed, "consumer open");
                        }
                        consumer = Some(c);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        match open_failures.failed(&reason, Instant::now()) {
                            Some(unreported) => tracing::warn!(
                                error = %reason,
                                failed_since_last_warning = unreported,
                                "cannot open consumer; retrying (the same failure is logged at warn once a minute)"
                            ),
                            None => {
                                tracing::debug!(error = %reason, "cannot open consumer; retrying")
                            }
                        }
                        if !pause(&mut running, &mut shutdown, &mut backoff).await {
                            break 'pulling;
                        }
                    }
                }
                continue;
            };
            // Every handler busy: wait for one to finish.
            if running.len() >= spec.concurrency {
                tokio::select! {
                    _ = &mut shutdown => break 'pulling,
                    _ = running.next() => {}
                }
                continue;
            }
            let free = spec.concurrency - running.len();
            let request = open
                .batch()
                .max_messages(free)
                .expires(PULL_EXPIRES)
                .messages();
            let Some(batch) = alongside(&mut running, &mut shutdown, request).await else {
                break 'pulling;
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    pull_failed(&mut pull_failures, &consumer_name, "request", &e);
                    consumer = None;
                    if !pause(&mut running, &mut shutdown, &mut backoff).await {
                        break 'pulling;
                    }
                    continue;
                }
            };
            connected.borrow_and_update();
            loop {
                tokio::select! {
                    _ = &mut shutdown => break 'pulling,
                    msg = batch.next() => match msg {
                        Some(Ok(msg)) => {
                            if let Some(failed) = pull_failures.ended() {
                                tracing::info!(consumer = %consumer_name, failed_attempts = failed, "pulling again");
                            }
                            running.push(self.handle(msg, handler, spec.ack_wait));
                        }
                        Some(Err(e)) => {
                            pull_failed(&mut pull_failures, &consumer_name, "batch", &e);
                            consumer = None;
                            if !pause(&mut running, &mut shutdown, &mut backoff).await {
                                break 'pulling;
                            }
                            break;
                        }
                        // Served in full, or expired: ask again for what is free.
                        None => break,
                    },
                    Some(()) = running.next(), if !running.is_empty() => {}
                    // A request made before a reconnect is lost with the old connection.
                    changed = connected.changed() => {
                        if changed.is_err() || *connected.borrow_and_update() {
                            break;
                        }
                    }
                }
            }
        }
        // Let what started finish: its ack is all that is left to send.
        while running.next().await.is_some() {}
        Ok(())
    }

    async fn open_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, BusError> {
        let durable = self.namespace.name(&spec.durable);
        let err = |reason: String| BusError::Consumer {
            consumer: durable.clone(),
            reason,
        };
        let stream = self
            .js
            .get_stream(self.namespace.name(spec.stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        let filters: Vec<String> = spec
            .filter_subjects
            .iter()
            .map(|s| self.namespace.subject(s))
            .collect();
        let mut config = pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: (spec.concurrency as i64 * 4).max(1000),
            ..Default::default()
        };
        // A single filter works on every server; several need NATS 2.10.
        match filters.len() {
            0 => {}
            1 => config.filter_subject = filters[0].clone(),
            _ => config.filter_subjects = filters.clone(),
        }
        let mut want = filters;
        want.sort();
        let filters_of = |info: &async_nats::jetstream::consumer::Info| {
            let mut have = info.config.filter_subjects.clone();
            if !info.config.filter_subject.is_empty() {
                have.push(info.config.filter_subject.clone());
            }
            have.sort();
            have
        };
        if let Some(old) = &spec.replaces {
            let old = self.namespace.name(old);
            if let Ok(info) = stream.consumer_info(&old).await
                && filters_of(&info) == want
            {
                tracing::info!(old = %old, new = %durable, "replacing a consumer's old durable name");
                stream
                    .delete_consumer(&old)
                    .await
                    .map_err(|e| err(format!("cannot remove the old consumer {old}: {e}")))?;
            }
        }
        let mut consumer = stream
            .get_or_create_consumer::<pull::Config>(&durable, config.clone())
            .await
            .map_err(|e| err(e.to_string()))?;
        // An existing consumer is returned whatever its filter: one that takes other
        // subjects under this name must not be consumed as ours.
        let have = filters_of(consumer.cached_info());
        if have != want {
            return Err(err(format!(
                "a consumer of this name already takes {have:?}, not {want:?}"
            )));
        }
        // Made by an older version with other limits (e.g. a shorter ack wait): bring it to
        // this spec, as the ack wait is part of the owner's contract.
        let existing = &consumer.cached_info().config;
        if existing.ack_wait != config.ack_wait
            || existing.max_ack_pending != config.max_ack_pending
            || existing.max_deliver != config.max_deliver
        {
            tracing::info!(consumer = %durable, ack_wait = ?config.ack_wait, "updating the consumer's settings");
            consumer = stream
                .update_consumer(config)
                .await
                .map_err(|e| err(format!("cannot update its settings: {e}")))?;
        }
        Ok(consumer)
    }

    async fn handle<M, H, Fut>(
        &self,
        msg: async_nats::jetstream::Message,
        handler: &H,
        ack_wait: Duration,
    ) where
        M: prost::Message + Default,
        H: Fn(Delivery<M>) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let subject = self.namespace.strip(msg.subject.as_str()).to_owned();
        let span = tracing::info_span!("nats.consume", otel.kind = "consumer", subject = %subject);
        if let Some(headers) = &msg.headers {
            haven_telemetry::set_parent_from(&span, &NatsHeaderExtractor(headers));
        }
        async {
            let msg_id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(MSG_ID_HEADER))
                .map(|v| v.as_str().to_owned());
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            let outcome = match M::decode(msg.payload.clone()) {
                Ok(message) => {
                    let run = handler(Delivery {
                        message,
                        subject,
                        msg_id,
                        delivered,
                    });
                    tokio::pin!(run);
                    // Keeps the message ours while the handler runs, however long it takes.
                    let every = (ack_wait / 3).max(Duration::from_millis(100));
                    let mut progress =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    loop {
                        tokio::select! {
                            outcome = &mut run => break outcome,
                            _ = progress.tick() => {
                                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                                    tracing::debug!(error = %e, "cannot send progress");
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "message does not decode; terminating it");
                    Outcome::Term
                }
            };
            let kind = match outcome {
                Outcome::Ack => AckKind::Ack,
                Outcome::Retry(delay) => AckKind::Nak(delay),
                Outcome::Term => AckKind::Term,
            };
            if let Err(e) = msg.ack_with(kind).await {
                // The server will redeliver after ack_wait; handlers are idempotent.
                tracing::warn!(error = %e, "ack failed; message will be redelivered");
            }
        }
        .instrument(span)
        .await
    }
}

/// How often a consumer that keeps failing to open says so at warn level.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Failed attempts to open a consumer (its stream may not exist yet: the service that owns
/// it is not up) or to pull from it (a server that accepts the open and breaks each pull),
/// each retried every few seconds: the first failure, a new reason, and then one line a
/// minute are warnings (with how many attempts failed since the last one), the rest debug
/// lines; the success that ends them says how many there were.
#[derive(Debug, Default)]
struct Failures {
    /// Failures since the consumer was last open.
    total: u32,
    /// Failures since the last warning, and when and why that was.
    unreported: u32,
    warned: Option<(Instant, String)>,
}

impl Failures {
    /// Counts a failure; `Some(n)` when it is to be a warning, `n` being the failures not
    /// reported at warn level since the last one.
    fn failed(&mut self, reason: &str, now: Instant) -> Option<u32> {
        self.total += 1;
        let warn = match &self.warned {
            None => true,
            Some((at, last)) => last != reason || now.duration_since(*at) >= WARN_EVERY,
        };
        if !warn {
            self.unreported += 1;
            return None;
        }
        let unreported = std::mem::take(&mut self.unreported);
        self.warned = Some((now, reason.to_owned()));
        Some(unreported)
    }

    /// It worked: how many attempts failed before, if any. Called for every message pulled,
    /// so nothing is touched while nothing failed.
    fn ended(&mut self) -> Option<u32> {
        if self.total == 0 {
            return None;
        }
        Some(std::mem::take(self).total)
    }
}

/// Logs a failed pull (`step`: the request, or the batch it returned), throttled by
/// `failures`; the caller reopens the consumer.
fn pull_failed(
    failures: &mut Failures,
    consumer: &str,
    step: &'static str,
    error: &dyn std::fmt::Display,
) {
    let reason = error.to_string();
    match failures.failed(&reason, Instant::now()) {
        Some(unreported) => tracing::warn!(
            consumer,
            step,
            error = %reason,
            failed_since_last_warning = unreported,
            "pull failed; reopening the consumer (the same failure is logged at warn once a minute)"
        ),
        None => {
            tracing::debug!(consumer, step, error = %reason, "pull failed; reopening the consumer")
        }
    }
}

/// Awaits `fut` while the running handlers go on (they are polled only here, so a slow
/// request or a backoff must not freeze them or their progress acks); `None` when
/// `shutdown` came first.
async fn alongside<T>(
    running: &mut FuturesUnordered<impl Future<Output = ()>>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            v = &mut fut => return Some(v),
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

/// Waits `backoff` (doubling it for next time, up to 5 s) while the handlers go on; false
/// when `shutdown` came first.
async fn pause(
    running: &mut FuturesUnordered<impl Future<Output = ()>>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    backoff: &mut Duration,
) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    alongside(running, shutdown, tokio::time::sleep(wait))
        .await
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GONE: &str = "stream not found";

    #[test]
    fn failures_warn_first_then_once_a_minute_and_on_a_new_reason() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        assert_eq!(f.failed(GONE, t0), Some(0));
        assert_eq!(f.failed(GONE, t0 + Duration::from_secs(5)), None);
        assert_eq!(f.failed(GONE, t0 + Duration::from_secs(10)), None);
        // A different reason is news.
        assert_eq!(f.failed("timed out", t0 + Duration::from_secs(15)), Some(2));
        assert_eq!(f.failed("timed out", t0 + Duration::from_secs(20)), None);
        // A minute after the last warning, the next one counts what was not reported.
        assert_eq!(f.failed("timed out", t0 + Duration::from_secs(74)), None);
        assert_eq!(f.failed("timed out", t0 + Duration::from_secs(75)), Some(2));
        assert_eq!(f.ended(), Some(7));
        // Open again: the next failure is a warning at once.
        assert_eq!(f.ended(), None);
        assert_eq!(f.failed(GONE, t0 + Duration::from_secs(80)), Some(0));
    }
}
