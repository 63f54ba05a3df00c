//! The NATS JetStream bus: connect with reconnect, idempotent stream creation, typed
//! protobuf publish (with `Nats-Msg-Id` for de-duplication and `traceparent` for tracing),
//! and a durable pull-consumer loop with explicit ack, nak-with-delay and term.
//!
//! Every subject and stream name goes through a [`Namespace`], so that tests (and several
//! deployments sharing one NATS) never see each other's messages.

mod consumer;
mod headers;

pub mod auth;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

pub use async_nats;
pub use consumer::{ConsumerSpec, Delivery, Outcome};
pub use headers::{NatsHeaderExtractor, NatsHeaderInjector};

/// The header that JetStream de-duplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot create or update stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },
    #[error("invalid namespace `{0}`: use letters, digits, `-` and `_` only")]
    Namespace(String),
    /// Names the file, never its contents.
    #[error("NATS credentials in {path}: {reason}")]
    Credentials { path: String, reason: String },
}

/// A prefix for subjects and stream names. Empty in production.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace(Option<String>);

impl Namespace {
    pub fn new(prefix: &str) -> Result<Self, BusError> {
        if prefix.is_empty() {
            return Ok(Namespace(None));
        }
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(BusError::Namespace(prefix.to_owned()));
        }
        Ok(Namespace(Some(prefix.to_owned())))
    }

    /// `haven.retry.enqueue` → `<prefix>.haven.retry.enqueue`.
    pub fn subject(&self, subject: &str) -> String {
        match &self.0 {
            Some(p) => format!("{p}.{subject}"),
            None => subject.to_owned(),
        }
    }

    /// The subject as the application knows it, without the prefix.
    pub fn strip<'a>(&self, subject: &'a str) -> &'a str {
        match &self.0 {
            Some(p) => subject
                .strip_prefix(p.as_str())
                .and_then(|s| s.strip_prefix('.'))
                .unwrap_or(subject),
            None => subject,
        }
    }

    /// `RETRY` → `<prefix>_RETRY`; also used for durable consumer names.
    pub fn name(&self, name: &str) -> String {
        match &self.0 {
            Some(p) => format!("{p}_{name}"),
            None => name.to_owned(),
        }
    }
}

/// NATS settings, shared by every binary's `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        id = "nats_url",
        value_name = "URL",
        long = "nats-url",
        env = "HAVEN_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// Prefix for every subject and stream, to share one NATS between deployments.
    #[arg(
        id = "nats_prefix",
        value_name = "PREFIX",
        long = "nats-prefix",
        env = "HAVEN_NATS_PREFIX",
        default_value = ""
    )]
    pub prefix: String,
    /// File with this process's NATS credentials: a user nkey seed (`SU…`, as
    /// `havenctl nats-auth` writes them) or a `.creds` file. Unset: connect without
    /// credentials (an open development server).
    #[arg(
        id = "nats_creds",
        value_name = "FILE",
        long = "nats-creds",
        env = "HAVEN_NATS_CREDS"
    )]
    pub creds: Option<std::path::PathBuf>,
    /// How long to keep trying the first connection at start-up.
    #[arg(id = "nats_connect_timeout",
        value_name = "DURATION", long = "nats-connect-timeout", env = "HAVEN_NATS_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl NatsArgs {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        NatsArgs {
            url: url.into(),
            prefix: prefix.into(),
            creds: None,
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// The same settings, connecting with the credentials in `path`.
    pub fn with_creds(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.creds = Some(path.into());
        self
    }

    pub fn config(&self, client_name: &str) -> Result<BusConfig, BusError> {
        Ok(BusConfig {
            url: self.url.clone(),
            namespace: Namespace::new(&self.prefix)?,
            client_name: client_name.to_owned(),
            creds: self.creds.clone(),
            connect_timeout: self.connect_timeout,
        })
    }
}

/// How to reach NATS.
#[derive(Clone, Debug)]
pub struct BusConfig {
    pub url: String,
    pub namespace: Namespace,
    /// Shown in the server's connection list (`nats server report connections`).
    pub client_name: String,
    /// This process's credentials file, if the server wants them.
    pub creds: Option<std::path::PathBuf>,
    /// How long to keep trying the first connection before giving up.
    pub connect_timeout: Duration,
}

/// What `HAVEN_NATS_CREDS` points at.
enum Credentials {
    /// A user nkey seed: the server knows the public key.
    Seed(String),
    /// A `.creds` file (a user JWT and its seed), for servers in operator mode.
    File(std::path::PathBuf),
}

impl Credentials {
    fn read(path: &std::path::Path) -> Result<Self, BusError> {
        let unreadable = |reason: String| BusError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        if text.contains("BEGIN NATS USER JWT") {
            return Ok(Credentials::File(path.to_owned()));
        }
        let seed = text.trim();
        if !seed.starts_with("SU") {
            return Err(unreadable(
                "expected a user nkey seed (SU…) or a .creds file".into(),
            ));
        }
        Ok(Credentials::Seed(seed.to_owned()))
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        match self {
            Credentials::Seed(seed) => Ok(async_nats::ConnectOptions::with_nkey(seed.clone())),
            Credentials::File(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| BusError::Credentials {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// A stream owned by a service, created idempotently at start-up.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: Vec<&'static str>,
    /// Work queues delete a message once acked; event streams keep it until `max_age`.
    pub work_queue: bool,
    pub max_age: Duration,
    /// The window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
}

/// A connected bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    namespace: Namespace,
    connected: watch::Receiver<bool>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects, retrying until `connect_timeout`; afterwards the client reconnects by itself
    /// for as long as the process lives.
    pub async fn connect(config: &BusConfig) -> Result<Bus, BusError> {
        let (tx, rx) = watch::channel(false);
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let mut delay = Duration::from_millis(50);
        let credentials = match &config.creds {
            Some(path) => Some(Credentials::read(path)?),
            None => None,
        };
        let client = loop {
            let tx = tx.clone();
            let options = match &credentials {
                Some(c) => c.options().await?,
                None => async_nats::ConnectOptions::new(),
            };
            let options = options
                .name(&config.client_name)
                .max_reconnects(None)
                .connection_timeout(Duration::from_secs(5))
                .event_callback(move |event| {
                    let tx = tx.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                tracing::info!("NATS connected");
                                tx.send_replace(true);
                            }
                            async_nats::Event::Disconnected => {
                                tracing::warn!("NATS disconnected; reconnecting");
                                tx.send_replace(false);
                            }
                            other => tracing::info!(event = %other, "NATS event"),
                        }
                    }
                });
            match options.connect(&config.url).await {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(url = %config.url, error = %e, "NATS not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(BusError::Connect {
                        url: config.url.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        };
        tx.send_replace(true);
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            namespace: config.namespace.clone(),
            connected: rx,
        })
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Follows the connection: `true` while connected. Health checks watch it.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Runs `f` every time the connection comes back after a loss, until `shutdown`: a NATS
    /// that restarted without its store needs its streams created again.
    pub async fn each_reconnect<F, Fut>(&self, shutdown: impl Future<Output = ()>, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut connected = self.connected();
        let mut was = *connected.borrow_and_update();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                changed = connected.changed() => if changed.is_err() { return },
            }
            let now = *connected.borrow_and_update();
            if now && !was {
                f().await;
            }
            was = now;
        }
    }

    /// Creates the stream, or updates it to `spec` if it exists.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<(), BusError> {
        let name = self.namespace.name(spec.name);
        let config = StreamConfig {
            name: name.clone(),
            subjects: spec
                .subjects
                .iter()
                .map(|s| self.namespace.subject(s))
                .collect(),
            retention: if spec.work_queue {
                RetentionPolicy::WorkQueue
            } else {
                RetentionPolicy::Limits
            },
            storage: StorageType::File,
            max_age: spec.max_age,
            duplicate_window: spec.duplicate_window,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .map_err(|e| BusError::Stream {
                stream: name,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Publishes `message` and waits until JetStream has stored it. A repeated `msg_id`
    /// within the stream's duplicate window is stored once; the ack says so.
    pub async fn publish<M: prost::Message>(
        &self,
        subject: &str,
        message: &M,
        msg_id: &str,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        self.publish_bytes(subject, Bytes::from(message.encode_to_vec()), msg_id)
            .await
    }

    /// As [`Bus::publish`], for a payload that is already encoded.
    pub async fn publish_bytes(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let ack = self.publish_start(subject, payload, msg_id).await?;
        ack.await.map_err(|e| BusError::Publish {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Sends without waiting for the store's ack, for callers that pipeline many publishes
    /// and await the returned futures afterwards. Each unawaited ack holds one of the
    /// client's in-flight permits (shared by the whole process): await them in chunks.
    pub async fn publish_start(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<PublishAckFuture, BusError> {
        self.send(subject, payload, msg_id)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn send(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
        let full = self.namespace.subject(subject);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(MSG_ID_HEADER, msg_id);
        headers.insert("Content-Type", "application/protobuf");
        haven_telemetry::inject_current(&mut NatsHeaderInjector(&mut headers));
        let span = tracing::debug_span!("nats.publish", subject = %full);
        self.js
            .publish_with_headers(full, headers, payload)
            .instrument(span)
            .await
    }
}

/// One message of a [`Bus::publish_all`].
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    pub msg_id: String,
}

/// What became of a message handed to [`Bus::publish_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// JetStream stored it (or already had it: a repeated message id).
    Stored,
    /// It was certainly not stored: never handed to the connection, or refused by the
    /// server (no stream takes the subject, a limit). Safe to undo what it announced.
    Refused(String),
    /// No answer in time. It may still be stored, e.g. when the client's buffer goes out
    /// after a reconnect: only a republish with the same message id is safe.
    Unknown(String),
}

impl Bus {
    /// Publishes every message, then awaits their acks together, all under one deadline,
    /// so that a stalled server costs `within` however many messages wait. Returns each
    /// message's [`Fate`], in order.
    pub async fn publish_all(&self, messages: Vec<Outgoing>, within: Duration) -> Vec<Fate> {
        let deadline = tokio::time::Instant::now() + within;
        let mut fates = vec![Fate::Unknown("no ack before the deadline".into()); messages.len()];
        let mut acks = futures::stream::FuturesUnordered::new();
        for (i, m) in messages.into_iter().enumerate() {
            let start = self.send(&m.subject, m.payload, &m.msg_id);
            match tokio::time::timeout_at(deadline, start).await {
                // Cancelling a send that has not completed leaves nothing sent.
                Err(_) => {
                    fates[i] = Fate::Refused("not sent before the deadline".into());
                    for fate in &mut fates[i + 1..] {
                        *fate = Fate::Refused("not sent before the deadline".into());
                    }
                    break;
                }
                Ok(Err(e)) => fates[i] = Fate::Refused(e.to_string()),
                Ok(Ok(ack)) => acks.push(async move { (i, ack.await) }),
            }
        }
        while let Ok(Some((i, ack))) = tokio::time::timeout_at(deadline, acks.next()).await {
            use async_nats::jetstream::context::PublishErrorKind as Kind;
            fates[i] = match ack {
                Ok(_) => Fate::Stored,
                Err(e) => match e.kind() {
                    Kind::TimedOut | Kind::BrokenPipe => Fate::Unknown(e.to_string()),
                    Kind::StreamNotFound
                    | Kind::WrongLastMessageId
                    | Kind::WrongLastSequence
                    | Kind::MaxAckPending
                    | Kind::MaxPayloadExceeded
                    | Kind::Other => Fate::Refused(e.to_string()),
                },
            };
        }
        fates
    }
}

/// The stream of verified provider webhooks (`haven.webhooks.>`), shared by the gateway that
/// publishes them and the services that consume them; both ensure it with this one spec.
pub fn webhooks_stream() -> StreamSpec {
    StreamSpec {
        name: "WEBHOOKS",
        subjects: vec!["haven.webhooks.>"],
        work_queue: false,
        max_age: Duration::from_secs(7 * 24 * 3600),
        // Longer than Shopify's retry schedule (8 tries over 4 hours), so a repeated event id
        // is refused for as long as Shopify may send it again.
        duplicate_window: Duration::from_secs(6 * 3600),
    }
}
