//! A retry service (or several) in-process against real PostgreSQL and NATS, with gRPC
//! clients for any tenant and role, and an owner that handles dispatches. Tokens, spawning
//! and the wait for SERVING are the test kit's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_auth::Role;
use haven_bus::{Bus, NatsArgs};
use haven_proto::events::v1::RetryDispatch;
use haven_proto::retry::v1::retry_service_client::RetryServiceClient;
use haven_retry::Config;
use haven_retry_client::HandlerError;
use haven_server::CommonArgs;
use haven_testkit::{Running, Switch, TestDb};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

pub use haven_testkit::JWT_SECRET;

pub struct Harness {
    pub db: TestDb,
    pub ns: String,
    pub nats_url: String,
    pub bus: Bus,
}

#[derive(Clone)]
pub struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = RetryServiceClient<InterceptedService<Channel, Auth>>;

impl Harness {
    pub async fn new() -> Self {
        Self::with_nats(haven_testkit::nats_url()).await
    }

    pub async fn with_nats(nats_url: String) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let ns = haven_testkit::namespace();
        let bus = Bus::connect(&NatsArgs::new(&nats_url, &ns).config("retry-test").unwrap())
            .await
            .unwrap();
        Harness {
            db,
            ns,
            nats_url,
            bus,
        }
    }

    /// Test settings: fast backoff so retries happen within a test.
    pub fn config(&self) -> Config {
        let mut c = Config::for_test(CommonArgs::new(
            &self.db.url,
            &self.nats_url,
            &self.ns,
            JWT_SECRET,
        ));
        c.backoff_base = Duration::from_millis(20);
        c.backoff_cap = Duration::from_millis(100);
        c
    }

    /// A service on `config`, once it answers SERVING.
    pub async fn start(&self, config: Config) -> Running {
        haven_testkit::spawn_serving(|listener, shutdown| {
            haven_retry::serve(config, listener, shutdown)
        })
        .await
    }

    pub async fn client(&self, instance: &Running, tenant: Uuid, role: Role) -> Client {
        let channel = Channel::from_shared(instance.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let value = format!("Bearer {}", haven_testkit::token(tenant, role))
            .parse()
            .unwrap();
        RetryServiceClient::with_interceptor(channel, Auth(value))
    }

    /// Runs an owner for `operation_type`: `decide(dispatch)` picks each attempt's outcome.
    /// Every dispatch received is recorded by (item id, attempt).
    pub fn owner<F>(&self, operation_type: &str, decide: F) -> Owner
    where
        F: Fn(&RetryDispatch) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.owner_with(operation_type, 64, move |d| std::future::ready(decide(&d)))
    }

    /// Runs an owner for `operation_type` with `concurrency` handlers running `handler`.
    /// Every execution of the handler is recorded by (item id, attempt).
    pub fn owner_with<H, Fut>(&self, operation_type: &str, concurrency: usize, handler: H) -> Owner
    where
        H: Fn(RetryDispatch) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let seen: Arc<Mutex<HashMap<(String, i32), u32>>> = Arc::default();
        let stop = Switch::new();
        let bus = self.bus.clone();
        let op = operation_type.to_owned();
        let record = seen.clone();
        let shutdown = stop.wait();
        let task = tokio::spawn(async move {
            haven_retry_client::consume(
                &bus,
                &op,
                concurrency,
                move |d: RetryDispatch| {
                    *record
                        .lock()
                        .unwrap()
                        .entry((d.id.clone(), d.attempt))
                        .or_default() += 1;
                    handler(d)
                },
                shutdown,
            )
            .await
            .unwrap();
        });
        Owner { seen, stop, task }
    }

    pub async fn status_counts(&self) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM retry.retry_items GROUP BY status",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// Waits until `n` items have `status`.
    pub async fn wait_status(&self, status: &str, n: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let counts = self.status_counts().await;
            if counts.get(status).copied().unwrap_or(0) == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiting for {n} {status}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct Owner {
    pub seen: Arc<Mutex<HashMap<(String, i32), u32>>>,
    pub stop: Switch,
    pub task: JoinHandle<()>,
}

impl Owner {
    pub async fn shutdown(self) {
        self.stop.fire();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap();
    }

    pub fn deliveries(&self, id: &str) -> Vec<(i32, u32)> {
        let mut v: Vec<(i32, u32)> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((i, _), _)| i == id)
            .map(|((_, a), n)| (*a, *n))
            .collect();
        v.sort();
        v
    }
}

pub fn enqueue_request(op: &str, payload: &str) -> haven_proto::retry::v1::EnqueueRequest {
    haven_proto::retry::v1::EnqueueRequest {
        operation_type: op.into(),
        payload_json: payload.into(),
        ..Default::default()
    }
}

/// Subscribes (core NATS) to the lifecycle events of this harness's namespace.
pub async fn lifecycle_events(h: &Harness, kind: &str) -> async_nats::Subscriber {
    h.bus
        .client()
        .subscribe(format!("{}.haven.retry.events.{kind}", h.ns))
        .await
        .unwrap()
}

/// The lifecycle events of `kind` ("resolved" or "failed") JetStream holds for this
/// harness's namespace, as (message id, event), oldest first. Read from the stream, so an
/// event published while nobody listened (or across a NATS restart) is there too.
pub async fn stored_events(
    h: &Harness,
    kind: &str,
) -> Vec<(String, haven_proto::events::v1::RetryLifecycle)> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt;
    let stream = h
        .bus
        .jetstream()
        .get_stream(h.bus.namespace().name(haven_retry_client::EVENTS_STREAM))
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: h
                .bus
                .namespace()
                .subject(&format!("haven.retry.events.{kind}")),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(msg) = batch.next().await {
            let msg = msg.unwrap();
            got += 1;
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push((id, prost::Message::decode(msg.payload.as_ref()).unwrap()));
        }
        if got == 0 {
            return out;
        }
    }
}

/// How many stored events of `kind` are about `item`.
pub async fn events_about(h: &Harness, kind: &str, item: &str) -> usize {
    stored_events(h, kind)
        .await
        .iter()
        .filter(|(_, e)| e.item.as_ref().is_some_and(|i| i.id == item))
        .count()
}

/// A retry replica as a real process (so that it can be SIGKILLed), on this harness's
/// database and bus.
pub fn spawn_replica(h: &Harness, worker: &str, lease: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_haven-retry"))
        .env("HAVEN_DATABASE_URL", &h.db.url)
        .env("HAVEN_NATS_URL", &h.nats_url)
        .env("HAVEN_NATS_PREFIX", &h.ns)
        .env("HAVEN_JWT_SECRET", JWT_SECRET)
        .env("HAVEN_RETRY_ADDR", "127.0.0.1:0")
        .env("HAVEN_RETRY_METRICS_ADDR", "127.0.0.1:0")
        .env("HAVEN_RETRY_WORKER_ID", worker)
        .env("HAVEN_RETRY_LEASE", lease)
        .env("HAVEN_RETRY_BACKOFF_BASE", "20ms")
        .env("HAVEN_RETRY_BACKOFF_CAP", "100ms")
        .env("HAVEN_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// An item's status and attempts, read from the table.
pub async fn row(h: &Harness, id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM retry.retry_items WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

/// `n` items of `op` for `tenant`, due an hour ago, written straight to the table (fast), then
/// the dispatchers are woken as the service's own enqueue does.
pub async fn backlog(h: &Harness, tenant: Uuid, op: &str, n: i32) {
    sqlx::query(
        "INSERT INTO retry.retry_items (id, tenant_id, operation_type, next_retry_at)
         SELECT gen_random_uuid(), $1, $2, now() - interval '1 hour' + g * interval '1 millisecond'
         FROM generate_series(1, $3) g",
    )
    .bind(tenant)
    .bind(op)
    .bind(n)
    .execute(&h.db.pool)
    .await
    .unwrap();
    // As the service's own enqueue does: wake the dispatchers.
    sqlx::query("SELECT pg_notify('haven_retry_due', '')")
        .execute(&h.db.pool)
        .await
        .unwrap();
}

/// The maintained counts (folded and not yet folded) agree with the items themselves, per
/// tenant, operation type and status, in one snapshot.
pub async fn assert_counts_match(h: &Harness) {
    let mismatched: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "WITH kept AS (
             SELECT tenant_id, operation_type, status, sum(n)::bigint AS n, sum(attempts)::bigint AS a
             FROM (SELECT tenant_id, operation_type, status, n, attempts FROM retry.item_counts
                   UNION ALL
                   SELECT tenant_id, operation_type, status, n, attempts FROM retry.item_count_deltas) c
             GROUP BY 1, 2, 3
         ), truth AS (
             SELECT tenant_id, operation_type, status, count(*) AS n, sum(attempts)::bigint AS a
             FROM retry.retry_items GROUP BY 1, 2, 3
         )
         SELECT coalesce(k.tenant_id, t.tenant_id)::text, coalesce(k.operation_type, t.operation_type),
                coalesce(k.status, t.status), coalesce(k.n, 0), coalesce(t.n, 0)
         FROM kept k FULL JOIN truth t USING (tenant_id, operation_type, status)
         WHERE coalesce(k.n, 0) <> coalesce(t.n, 0) OR coalesce(k.a, 0) <> coalesce(t.a, 0)",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert!(
        mismatched.is_empty(),
        "maintained counts differ (tenant, type, status, kept, actual): {mismatched:?}"
    );
}
