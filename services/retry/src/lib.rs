//! The durable retry queue for failed operations: enqueue, backoff, dispatch over NATS, outcomes, dead letters and the error-management API.

mod config;

use std::future::Future;
use std::time::Duration;

use haven_bus::StreamSpec;
use haven_server::{Base, ServiceSpec, StartError};
use tokio::net::TcpListener;

pub use config::Config;

/// The schema this service owns.
pub const SCHEMA: &str = "retry";

/// The streams this service owns.
pub fn streams() -> Vec<StreamSpec> {
    vec![StreamSpec {
        name: "RETRY_EVENTS",
        subjects: vec!["haven.retry.events.>"],
        work_queue: false,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
    }]
}

/// Runs the service on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let token = haven_server::token_for(shutdown);
    let spec = ServiceSpec {
        name: "haven-retry",
        schema: SCHEMA,
        migrator: sqlx::migrate!(),
        streams: streams(),
    };
    let base = Base::start(spec, &config.common, &config.metrics_addr, token.clone()).await?;
    base.grpc().serve(listener, token).await?;
    Ok(())
}
