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
mod integrations;
mod limiter;
mod plan;
mod render;
mod rows;
pub mod schedule;
mod sql;
mod statistics;
mod statistics_api;

use std::future::Future;
use std::time::Duration;

use haven_bus::StreamSpec;
use haven_server::{Base, ServiceSpec, StartError};
use tokio::net::TcpListener;

pub use config::Config;
pub use plan::Limits;
pub use statistics::{
    CSV_HEADER as STATISTICS_CSV_HEADER, RETRY_OPERATION as STATISTICS_RETRY_OPERATION,
};

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
    let objects = haven_objects::ObjectStorage::open(&config.objects)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    tracing::info!(store = objects.describe(), "object storage");
    let catalog = haven_providers::shopify_catalog::ShopifyCatalogClient::new(
        &config.shopify_url_template,
        &config.shopify_api_version,
        &haven_providers::HttpSettings::default(),
    )
    .map_err(|e| ServeError::Config(format!("Shopify catalogue client: {e}")))?;
    let credentials = haven_auth::ServiceCredentials::new(
        &config.service_token,
        &config.common.auth,
        "haven-export",
    )
    .map_err(|e| ServeError::Config(e.to_string()))?;
    let integrations = integrations::Integrations::new(
        tonic::transport::Endpoint::from_shared(config.integrations_url.clone())
            .map_err(|e| ServeError::Config(format!("HAVEN_INTEGRATIONS_URL: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy(),
        credentials,
    );
    let statistics = statistics::Statistics::new(
        base.pool.clone(),
        base.bus.clone(),
        objects,
        catalog,
        integrations.clone(),
        statistics::Settings {
            concurrency: config.statistics_concurrency.max(1),
            lease: config.statistics_lease,
            scheduler: config.statistics_scheduler,
            tick: (config.statistics_lease / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(15)),
            link_ttl: config.statistics_link_ttl,
        },
        token.clone(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(statistics.clone().background());
    {
        let (statistics, bus, token) = (statistics.clone(), base.bus.clone(), token.clone());
        tasks.spawn(async move {
            let run = haven_retry_client::consume(
                &bus,
                statistics::RETRY_OPERATION,
                4,
                |dispatch| {
                    let statistics = statistics.clone();
                    async move { statistics.retry(dispatch).await }
                },
                token.cancelled(),
            );
            if let Err(e) = run.await {
                tracing::error!(error = %e, "statistics retry consumer stopped");
            }
        });
    }
    let tenants =
        limiter::TenantLimiter::new(config.max_concurrent_per_tenant, config.max_concurrent);
    let engine = engine::Engine {
        pool: base.pool.clone(),
        bus: base.bus.clone(),
        stall_timeout: config.stall_timeout,
    };
    let mail = schedule::mail::Mail {
        pool: base.pool.clone(),
        bus: base.bus.clone(),
        objects: statistics.objects().clone(),
        integrations,
        resend: haven_providers::resend::ResendClient::new(
            &config.resend_url,
            &haven_providers::HttpSettings::default(),
        )
        .map_err(|e| ServeError::Config(format!("HAVEN_RESEND_URL: {e}")))?,
        from: config.email_from.clone(),
        attachment_limit: config.email_attachment_limit,
    };
    {
        let (mail, bus, token) = (mail.clone(), base.bus.clone(), token.clone());
        tasks.spawn(async move {
            let run = haven_retry_client::consume(
                &bus,
                schedule::mail::DELIVER_OPERATION,
                4,
                |dispatch| {
                    let mail = mail.clone();
                    async move { mail.retry(dispatch).await }
                },
                token.cancelled(),
            );
            if let Err(e) = run.await {
                tracing::error!(error = %e, "scheduled-export delivery consumer stopped");
            }
        });
    }
    if config.scheduler {
        let runner = schedule::runner::Runner {
            mail,
            engine: engine.clone(),
            limits: limits.clone(),
            tenants: tenants.clone(),
            objects: statistics.objects().clone(),
            tick: config.scheduler_tick.max(Duration::from_millis(20)),
            lease: config.scheduler_lease.max(Duration::from_secs(1)),
            clock: config.clock.clone(),
            token: token.clone(),
        };
        tasks.spawn(runner.background());
    }
    let api = api::Api {
        engine,
        limits,
        tenants,
        statistics,
    };
    let result = base
        .grpc()
        .add_service(api::Routes::new(api))
        .serve(listener, token.clone())
        .await;
    token.cancel();
    while tasks.join_next().await.is_some() {}
    result.map_err(StartError::from)?;
    Ok(())
}
