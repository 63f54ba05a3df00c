//! The durable retry queue for failed operations: enqueue (gRPC and NATS), exponential
//! backoff with full jitter, concurrency-safe claiming, dispatch of due work over NATS,
//! outcomes, dead letters and the error-management API.

mod admission;
mod api;
mod backoff;
mod config;
mod consumers;
mod dispatcher;
mod events;
mod housekeeping;
mod machine;
mod model;
mod store;
mod validate;
mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use haven_proto::retry::v1::retry_service_server::RetryServiceServer;
use haven_server::{Base, ServiceSpec, StartError};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use backoff::{Backoff, BackoffPolicy};
pub use config::Config;

/// The schema this service owns.
pub const SCHEMA: &str = "retry";

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("configuration: {0}")]
    Config(String),
}

/// The longest [`Config::claim_ahead`]: enough to cover a slow claim, short enough that an
/// item claimed early is not long out of other replicas' reach (or past a cancel).
const MAX_CLAIM_AHEAD: Duration = Duration::from_secs(1);

/// Runs the service on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RetryError> {
    let backoff = config.backoff_policy().map_err(RetryError::Config)?;
    if config.claim_batch < 1 {
        return Err(RetryError::Config(
            "HAVEN_RETRY_CLAIM_BATCH must be at least 1".into(),
        ));
    }
    if config.lease.is_zero() || config.lease > haven_retry_client::MAX_LEASE {
        return Err(RetryError::Config(format!(
            "HAVEN_RETRY_LEASE must be above 0 and at most {:?} (owners' consumers wait that long for an ack)",
            haven_retry_client::MAX_LEASE
        )));
    }
    if config.claim_ahead > MAX_CLAIM_AHEAD {
        return Err(RetryError::Config(format!(
            "HAVEN_RETRY_CLAIM_AHEAD must be at most {MAX_CLAIM_AHEAD:?}: an item claimed ahead waits in one replica's memory until due"
        )));
    }
    let types = admission::OperationTypes::parse(&config.operation_types)
        .map_err(|e| RetryError::Config(format!("HAVEN_RETRY_OPERATION_TYPES: {e}")))?;
    let token = haven_server::token_for(shutdown);
    let spec = ServiceSpec {
        name: "haven-retry",
        schema: SCHEMA,
        migrator: sqlx::migrate!(),
        streams: haven_retry_client::streams(),
    };
    let base = Base::start(spec, &config.common, &config.metrics_addr, token.clone()).await?;
    let store = store::Store {
        pool: base.pool.clone(),
        lease: config.lease,
        backoff,
        outbox: Arc::new(Notify::new()),
    };
    let relay = events::Relay {
        pool: base.pool.clone(),
        bus: base.bus.clone(),
        wake: store.outbox.clone(),
    };
    let relaying = tokio::spawn(relay.run(token.clone()));
    let admission = Arc::new(admission::Admission::new(
        store.clone(),
        types,
        config.max_pending_per_tenant,
    ));
    let wake = Arc::new(Notify::new());
    let window = Arc::new(window::Window::new(
        config.max_in_flight,
        config.claim_batch,
        config.lease,
    ));
    let enqueue = consumers::enqueue_batcher(store.clone());
    let results = consumers::result_batcher(store.clone(), wake.clone(), window.clone());
    consumers::spawn(
        base.bus.clone(),
        enqueue.clone(),
        admission.clone(),
        results,
        token.clone(),
    );

    let worker_id = config.worker_id();
    tracing::info!(%worker_id, lease = ?config.lease, "retry dispatcher starting");
    let dispatcher = dispatcher::Dispatcher {
        store: store.clone(),
        bus: base.bus.clone(),
        worker_id,
        batch: config.claim_batch,
        ahead: config.claim_ahead,
        window,
        max_in_flight_per_tenant: config.max_in_flight_per_tenant,
        wake,
    };
    let dispatching = tokio::spawn(dispatcher.run(token.clone()));
    tokio::spawn(housekeeping::fold_counts(store.clone(), token.clone()));
    if !config.retention.is_zero() {
        tokio::spawn(housekeeping::retention(
            store.clone(),
            config.retention,
            token.clone(),
        ));
    }

    let api = api::Api {
        store,
        enqueue,
        admission,
    };
    base.grpc()
        .add_service(RetryServiceServer::new(api))
        .serve(listener, token)
        .await
        .map_err(StartError::from)?;
    let _ = dispatching.await;
    let _ = relaying.await;
    Ok(())
}
