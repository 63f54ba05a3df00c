//! Tenant connections to Shopify, Pinterest, Klaviyo, Dynamic Mockups, Resend and Sky Pilot:
//! OAuth and API keys, the encrypted credential vault, token lifecycle, webhooks and setup
//! progress.

mod api;
mod config;
mod convert;
mod core;
mod error;
mod events;
mod machine;
mod metadata;
mod oauth;
pub mod registry;
mod rotate;
mod store;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use haven_bus::{ConsumerSpec, Delivery, Outcome, StreamSpec};
use haven_proto::events::v1::ShopifyWebhook;
use haven_proto::integrations::v1::integrations_service_server::IntegrationsServiceServer;
use haven_server::{Base, ServiceSpec, StartError};
use tokio::net::TcpListener;

pub use config::{Config, ProviderArgs};
pub use error::Error;
pub use oauth::STATE_TTL;
pub use rotate::{RotateReport, rotate};
pub use webhooks::{OP_DEREGISTER_WEBHOOKS, OP_REFRESH_TOKEN, OP_REGISTER_WEBHOOK, topics};

/// The schema this service owns.
pub const SCHEMA: &str = "integrations";

/// Full gRPC path of CompleteOAuth, which the browser's callback reaches without our token.
const COMPLETE_OAUTH_PATH: &str = "/haven.integrations.v1.IntegrationsService/CompleteOAuth";
/// Opened by a browser through the gateway's start link: its single-use ticket authenticates it.
const START_OAUTH_PATH: &str = "/haven.integrations.v1.IntegrationsService/StartOAuth";

/// The streams this service writes to or reads from, ensured at start-up.
pub fn streams() -> Vec<StreamSpec> {
    let mut streams = vec![
        StreamSpec {
            name: "INTEGRATIONS_EVENTS",
            subjects: vec!["haven.integrations.events.>"],
            work_queue: false,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        },
        haven_bus::webhooks_stream(),
    ];
    streams.extend(haven_retry_client::streams());
    streams
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("provider client: {0}")]
    Provider(#[from] haven_providers::ProviderError),
    #[error(transparent)]
    Server(#[from] haven_server::ServerError),
}

/// Runs the service on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = haven_server::token_for(shutdown);
    let spec = ServiceSpec {
        name: "haven-integrations",
        schema: SCHEMA,
        migrator: sqlx::migrate!(),
        streams: streams(),
    };
    let providers = core::Providers::new(&config)?;
    let base = Base::start(spec, &config.common, &config.metrics_addr, token.clone()).await?;
    let core = Arc::new(core::Core {
        pool: base.pool.clone(),
        bus: base.bus.clone(),
        ring: config.vault.keys.clone(),
        providers,
        public_url: config.public_url.clone(),
        refresh_lead: config.refresh_lead,
    });
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (core, token) = (core.clone(), token.clone());
        let interval = config.refresh_interval;
        tasks.spawn(async move { core.run_refresher(interval, token).await });
    }
    spawn_op(
        &mut tasks,
        &core,
        &token,
        OP_REGISTER_WEBHOOK,
        |c, d| async move { c.handle_register(d).await },
    );
    spawn_op(
        &mut tasks,
        &core,
        &token,
        OP_DEREGISTER_WEBHOOKS,
        |c, d| async move { c.handle_deregister(d).await },
    );
    spawn_op(
        &mut tasks,
        &core,
        &token,
        OP_REFRESH_TOKEN,
        |c, d| async move { c.handle_refresh(d).await },
    );
    {
        let (core, token) = (core.clone(), token.clone());
        tasks.spawn(async move {
            let spec = ConsumerSpec::new("WEBHOOKS", "integrations_shopify_app_uninstalled")
                .filter("haven.webhooks.shopify.app.uninstalled")
                .concurrency(4);
            let handler = |d: Delivery<ShopifyWebhook>| {
                let core = core.clone();
                async move {
                    match core.handle_shopify_webhook(d.message).await {
                        Ok(()) => Outcome::Ack,
                        Err(Error::InvalidArgument(m)) => {
                            tracing::warn!(error = %m, "malformed webhook dropped");
                            Outcome::Term
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "webhook handling failed; will retry");
                            Outcome::Retry(None)
                        }
                    }
                }
            };
            if let Err(e) = core.bus.consume(spec, handler, token.cancelled()).await {
                tracing::error!(error = %e, "webhook consumer stopped");
            }
        });
    }
    let result = base
        .grpc()
        .optional_auth(&[COMPLETE_OAUTH_PATH, START_OAUTH_PATH])
        .add_service(IntegrationsServiceServer::new(api::Api::new(core)))
        .serve(listener, token.clone())
        .await;
    token.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(result?)
}

/// Consumes the retry queue's dispatches of `operation` until shutdown.
fn spawn_op<F, Fut>(
    tasks: &mut tokio::task::JoinSet<()>,
    core: &Arc<core::Core>,
    token: &tokio_util::sync::CancellationToken,
    operation: &'static str,
    handler: F,
) where
    F: Fn(Arc<core::Core>, haven_proto::events::v1::RetryDispatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), haven_retry_client::HandlerError>> + Send + 'static,
{
    let (core, token) = (core.clone(), token.clone());
    tasks.spawn(async move {
        let bus = core.bus.clone();
        let run = haven_retry_client::consume(
            &bus,
            operation,
            4,
            |d| handler(core.clone(), d),
            token.cancelled(),
        );
        if let Err(e) = run.await {
            tracing::error!(%operation, error = %e, "retry operation consumer stopped");
        }
    });
}
