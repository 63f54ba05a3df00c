//! The HTTP edge of Haven: authenticates users, turns REST calls into gRPC calls, streams
//! exports as file downloads and ingests provider webhooks.

mod config;
mod cors;
mod error;
mod errors;
mod export;
mod integrations;
mod json;
mod objects;
pub mod openapi;
mod pages;
mod reports;
mod schedules;
mod statistics;
mod upstream;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use haven_telemetry::{MetricsLayer, TraceContextLayer};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use config::Config;
pub use error::ApiError;
pub use haven_bus::NatsArgs;
pub use webhooks::{LazyBus, MAX_BODY as WEBHOOK_MAX_BODY};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid upstream URL {url}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("invalid HAVEN_APP_URL {url}: {reason}")]
    AppUrl { url: String, reason: String },
    #[error("invalid origin {origin:?} in HAVEN_CORS_ORIGINS: {reason}")]
    CorsOrigin { origin: String, reason: String },
    #[error(transparent)]
    Auth(#[from] haven_auth::AuthError),
    #[error(transparent)]
    Bus(#[from] haven_bus::BusError),
    #[error(transparent)]
    Objects(#[from] haven_objects::ObjectsError),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The gRPC services behind the gateway.
#[derive(Clone)]
pub struct Upstreams {
    pub integrations: Channel,
    pub retry: Channel,
    pub export: Channel,
}

impl Upstreams {
    /// Channels connect lazily and reconnect by themselves: the gateway starts (and answers
    /// `/readyz` with 503) while its upstreams are still coming up.
    pub fn connect_lazy(config: &Config) -> Result<Self, GatewayError> {
        Ok(Upstreams {
            integrations: channel(&config.integrations_url)?,
            retry: channel(&config.retry_url)?,
            export: channel(&config.export_url)?,
        })
    }

    fn named(&self) -> [(&'static str, Channel); 3] {
        [
            ("integrations", self.integrations.clone()),
            ("retry", self.retry.clone()),
            ("export", self.export.clone()),
        ]
    }
}

/// Bytes one upstream call may have in flight towards the gateway, and all calls together.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

fn channel(url: &str) -> Result<Channel, GatewayError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| GatewayError::Upstream {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(2))
        // HTTP/2's default 64 KiB window would make the export service stop for a window
        // update inside every chunk of a download; a chunk is up to about 150 KB.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub upstreams: Upstreams,
    pub ready_timeout: Duration,
    /// Where OAuth callbacks send the browser back to.
    pub app_url: String,
    pub webhooks: webhooks::Webhooks,
    /// Serves signed links to the file store's objects.
    pub objects: haven_objects::ObjectStorage,
    /// The statistics cron route's secret and credential; `None` disables the route.
    pub cron: Option<statistics::Cron>,
}

/// The gateway's routes. `/healthz`, `/readyz`, `/metrics`, the console's files
/// (`/console/`) and the API's documentation (`/api/openapi.json`, `/api/docs`) are public;
/// everything else under `/api` needs a bearer token, except what a third party calls without
/// one: the Shopify webhook (authenticated by its HMAC) and the OAuth start and callback (by
/// their single-use ticket and state).
pub fn router(config: &Config, upstreams: Upstreams, bus: LazyBus) -> Result<Router, GatewayError> {
    let verifier = config.auth.verifier()?;
    url::Url::parse(&config.app_url).map_err(|e| GatewayError::AppUrl {
        url: config.app_url.clone(),
        reason: e.to_string(),
    })?;
    let state = Arc::new(AppState {
        upstreams,
        ready_timeout: config.ready_timeout,
        app_url: config.app_url.clone(),
        webhooks: webhooks::Webhooks {
            shopify_secret: config.shopify_client_secret.clone(),
            read_timeout: config.webhook_read_timeout,
            bus,
        },
        objects: haven_objects::ObjectStorage::open(&config.objects)?,
        cron: match &config.cron_secret {
            Some(secret) => Some(statistics::Cron {
                secret: secret.clone(),
                credentials: haven_auth::ServiceCredentials::new(
                    &config.service_token,
                    &config.auth,
                    "haven-gateway",
                )?,
            }),
            None => None,
        },
    });
    let (router, api) = openapi::api_router(verifier).split_for_parts();
    let api = Arc::new(openapi::finish(api));
    let router = router
        .route(
            "/api/openapi.json",
            get(move || {
                let api = api.clone();
                async move { Json(api) }
            }),
        )
        .with_state(state)
        .merge(pages::routes())
        .merge(haven_telemetry::metrics_router())
        // zstd or gzip when the client accepts them, streamed frame by frame (a download is
        // never buffered whole); the fastest level, since a download's bottleneck should be
        // the link, not our CPU.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::compression::CompressionLevel::Fastest),
        )
        .layer(MetricsLayer::new("http"))
        .layer(TraceContextLayer::new("http"));
    // Outermost, so a preflight is answered before authentication asks for a token.
    Ok(match cors::layer(&config.cors_origins)? {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

/// Runs the gateway on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to the grace period.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let token = haven_server::token_for(shutdown);
    let upstreams = Upstreams::connect_lazy(&config)?;
    let bus = LazyBus::spawn(&config.nats, token.clone())?;
    let app = router(&config, upstreams, bus)?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let drain = token.clone();
    // No Nagle: a download's headers and first small chunk must not wait for a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        drain.cancelled().await;
        tracing::info!("shutting down: draining in-flight requests");
    });
    let grace = config.shutdown_grace;
    tokio::select! {
        result = server => result?,
        _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; ending requests still in flight");
        }
    }
    Ok(())
}

/// Liveness: the process answers.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process answers", body = Object)))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: every upstream reports SERVING within the timeout. NATS is reported but does
/// not count: only webhook ingestion needs it, and Shopify retries those.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Every upstream serves", body = Object),
        (status = 503, description = "An upstream does not serve yet; each one's state is listed", body = Object)))]
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let checks = state.upstreams.named().map(|(name, channel)| {
        let timeout = state.ready_timeout;
        async move {
            let mut client = HealthClient::new(channel);
            let call = client.check(HealthCheckRequest {
                service: String::new(),
            });
            let status = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(res)) => match ServingStatus::try_from(res.into_inner().status) {
                    Ok(ServingStatus::Serving) => "SERVING".to_owned(),
                    Ok(other) => other.as_str_name().to_owned(),
                    Err(_) => "UNKNOWN".to_owned(),
                },
                Ok(Err(status)) => format!("unreachable: {}", status.message()),
                Err(_) => "timeout".to_owned(),
            };
            (name, status)
        }
    });
    let results = futures::future::join_all(checks).await;
    let ready = results.iter().all(|(_, s)| s == "SERVING");
    let upstreams: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(n, s)| (n.to_owned(), serde_json::Value::String(s)))
        .collect();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let nats = if state.webhooks.bus.is_connected() {
        "connected"
    } else {
        "disconnected"
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "upstreams": upstreams,
        "nats": nats,
    });
    (code, Json(body))
}
