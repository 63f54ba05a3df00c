//! What every Haven gRPC service runs the same way: health and reflection, the auth,
//! tracing and metrics layers, readiness that follows the service's dependencies, a
//! `/metrics` endpoint, and a shutdown that drains in-flight calls.

mod base;
pub mod pagination;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use haven_auth::{AuthLayer, GrpcRejection, Verifier};
use haven_telemetry::{MetricsLayer, TraceContextLayer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;

pub use base::{Base, CommonArgs, ServiceSpec, StartError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Paths served without a token: probes and tooling must work unauthenticated.
pub const PUBLIC_GRPC_PATHS: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// `InvalidArgument` for one bad field: the message reads `field: description` for people,
/// and a `google.rpc.BadRequest` field violation carries the field as data, so the gateway
/// (or any client) can name the field in its own terms without parsing the message.
pub fn invalid_argument(field: &str, description: impl std::fmt::Display) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let description = description.to_string();
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() { tracing::info!("SIGINT received") }
        }
    }
}

/// A cancellation token that fires when `shutdown` resolves, for handing one shutdown to
/// several tasks.
pub fn token_for(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => fire.cancel(),
            _ = fire.cancelled() => {}
        }
    });
    token
}

/// Re-checks a dependency every `every` and reports whether it answers.
pub fn poll_readiness<F, Fut>(
    every: Duration,
    token: CancellationToken,
    check: F,
) -> watch::Receiver<bool>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let ok = check().await;
            if *tx.borrow() != ok {
                tracing::warn!(ready = ok, "dependency readiness changed");
            }
            tx.send_replace(ok);
        }
    });
    rx
}

/// A gRPC server being assembled.
pub struct GrpcServer {
    service: &'static str,
    routes: Routes,
    names: Vec<&'static str>,
    verifier: Verifier,
    readiness: Vec<watch::Receiver<bool>>,
    grace: Duration,
    optional_auth: Vec<&'static str>,
}

impl GrpcServer {
    /// `service` names this process in logs; `verifier` guards every non-public call.
    pub fn new(service: &'static str, verifier: Verifier) -> Self {
        GrpcServer {
            service,
            routes: Routes::default(),
            names: Vec::new(),
            verifier,
            readiness: Vec::new(),
            grace: Duration::from_secs(25),
            optional_auth: Vec::new(),
        }
    }

    /// Methods (full gRPC paths) callable without a token; a token sent anyway is verified.
    pub fn optional_auth(mut self, paths: &[&'static str]) -> Self {
        self.optional_auth.extend_from_slice(paths);
        self
    }

    /// Adds an API; health reports it by name.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Health answers NOT_SERVING while any of these is `false` (e.g. NATS disconnected).
    pub fn readiness(mut self, ready: watch::Receiver<bool>) -> Self {
        self.readiness.push(ready);
        self
    }

    /// How long in-flight calls may run after shutdown begins before they are cut off.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves until `token` is cancelled, then stops accepting, reports NOT_SERVING and
    /// drains in-flight calls for up to the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        token: CancellationToken,
    ) -> Result<(), ServerError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut names = self.names.clone();
        names.push("");
        set_all(&reporter, &names, ServingStatus::Serving).await;
        spawn_readiness_watch(
            reporter.clone(),
            names.clone(),
            self.readiness,
            token.clone(),
        );

        let reflection_v1 = reflection(&self.names).build_v1()?;
        let reflection_v1alpha = reflection(&self.names).build_v1alpha()?;
        let routes = self
            .routes
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let layers = ServiceBuilder::new()
            .layer(TraceContextLayer::new("grpc"))
            .layer(MetricsLayer::grpc(served_methods(&self.names)))
            .layer(
                AuthLayer::new(self.verifier, GrpcRejection)
                    .public(PUBLIC_GRPC_PATHS)
                    .optional(self.optional_auth),
            );

        let addr = listener.local_addr()?;
        tracing::info!(service = self.service, %addr, "gRPC server listening");
        let draining = CancellationToken::new();
        let signal = {
            let token = token.clone();
            let draining = draining.clone();
            let reporter = reporter.clone();
            async move {
                token.cancelled().await;
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                tracing::info!("shutting down: draining in-flight calls");
                draining.cancel();
            }
        };
        let server = tonic::transport::Server::builder()
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
        let service = self.service;
        let grace = self.grace;
        tokio::select! {
            result = server => {
                tracing::info!(service, "gRPC server stopped");
                Ok(result?)
            }
            _ = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(service, ?grace, "grace period over; ending calls still in flight");
                Ok(())
            }
        }
    }
}

/// Service names every server lists beside its own APIs.
pub const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every full method path this server answers: its own services' methods (from the
/// descriptor sets), health's and reflection's. The metrics layer labels only these.
fn served_methods(served: &[&'static str]) -> Vec<String> {
    use prost::Message as _;
    let mut methods: Vec<String> = ["v1", "v1alpha"]
        .iter()
        .map(|v| format!("/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"))
        .collect();
    for set in [
        haven_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if served.contains(&name.as_str()) || STANDARD_SERVICES.contains(&name.as_str()) {
                    methods.extend(
                        service
                            .method
                            .iter()
                            .map(|m| format!("/{name}/{}", m.name())),
                    );
                }
            }
        }
    }
    methods
}

/// Reflection over the whole descriptor set (so every message type resolves) that lists only
/// the services this server really serves: `grpcurl list` on one port must not offer another
/// service's API that would answer Unimplemented.
fn reflection(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(haven_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    served
        .iter()
        .chain(STANDARD_SERVICES.iter())
        .fold(builder, |b, name| b.with_service_name(*name))
}

async fn set_all(
    reporter: &tonic_health::server::HealthReporter,
    names: &[&str],
    status: ServingStatus,
) {
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

fn spawn_readiness_watch(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    inputs: Vec<watch::Receiver<bool>>,
    token: CancellationToken,
) {
    if inputs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut inputs = inputs;
        let mut last = true;
        loop {
            let ready = inputs.iter_mut().all(|rx| *rx.borrow_and_update());
            if ready != last && !token.is_cancelled() {
                let status = if ready {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                tracing::info!(?status, "health changed");
                set_all(&reporter, &names, status).await;
                last = ready;
            }
            let changed =
                futures::future::select_all(inputs.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                _ = token.cancelled() => return,
                (result, _, _) = changed => if result.is_err() { return },
            }
        }
    });
}

/// Serves an axum router (e.g. `/metrics`) until `token` is cancelled.
pub async fn serve_http(
    router: axum::Router,
    listener: TcpListener,
    token: CancellationToken,
) -> Result<(), ServerError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await?;
    Ok(())
}

/// Binds the Prometheus endpoint and serves it in the background.
pub async fn spawn_metrics(
    addr: &str,
    token: CancellationToken,
) -> Result<std::net::SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve_http(haven_telemetry::metrics_router(), listener, token).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(bound)
}
