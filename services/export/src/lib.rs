//! Data exports: the catalogue of export types, typed and rendered row streams, the billing
//! usage export and brand reports, export history and scheduled exports.

mod api;
mod billing;
mod brand;
mod catalog;
mod config;
mod engine;
mod error;
mod history;
mod limiter;
mod plan;
mod render;
mod sql;

use std::future::Future;
use std::time::Duration;

use haven_bus::StreamSpec;
use haven_proto::export::v1::export_service_server::ExportServiceServer;
use haven_server::{Base, ServiceSpec, StartError};
use tokio::net::TcpListener;

pub use config::Config;
pub use plan::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("configuration: {0}")]
    Config(String),
}

/// The schema this service owns.
pub const SCHEMA: &str = "exports";

/// The streams this service owns.
pub fn streams() -> Vec<StreamSpec> {
    vec![StreamSpec {
        name: "EXPORTS_EVENTS",
        subjects: vec!["haven.exports.events.>"],
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
) -> Result<(), ServeError> {
    let limits = Limits::parse(&config.max_records)
        .map_err(|e| ServeError::Config(format!("HAVEN_EXPORT_MAX_RECORDS: {e}")))?;
    let pool_size = config.common.db.max_connections as usize;
    if config.max_concurrent == 0 || config.max_concurrent >= pool_size {
        return Err(ServeError::Config(format!(
            "HAVEN_EXPORT_MAX_CONCURRENT ({}) must be at least 1 and below the database pool size ({pool_size}): history and every other call need connections too",
            config.max_concurrent
        )));
    }
    if config.stall_timeout.is_zero() {
        return Err(ServeError::Config(
            "HAVEN_EXPORT_STALL_TIMEOUT must be above zero".into(),
        ));
    }
    let token = haven_server::token_for(shutdown);
    let spec = ServiceSpec {
        name: "haven-export",
        schema: SCHEMA,
        migrator: sqlx::migrate!(),
        streams: streams(),
    };
    let base = Base::start(spec, &config.common, &config.metrics_addr, token.clone()).await?;
    // The export service reads the platform's `app` data; it keeps that schema current.
    haven_appdata::migrate(&base.pool)
        .await
        .map_err(StartError::from)?;
    let engine = engine::Engine {
        pool: base.pool.clone(),
        bus: base.bus.clone(),
        stall_timeout: config.stall_timeout,
    };
    let api = api::Api {
        engine,
        limits,
        tenants: limiter::TenantLimiter::new(
            config.max_concurrent_per_tenant,
            config.max_concurrent,
        ),
    };
    base.grpc()
        .add_service(ExportServiceServer::new(api))
        .serve(listener, token)
        .await
        .map_err(StartError::from)?;
    Ok(())
}
