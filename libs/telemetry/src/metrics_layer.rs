//! Request counts and latencies for every gRPC and HTTP server.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Counts requests (`haven_requests_total`) and times them to response headers
/// (`haven_request_duration_seconds`), labelled by protocol, route and status. The status
/// is the gRPC status when it is in the headers (errors and trailers-only responses),
/// otherwise the HTTP status.
///
/// Routes are labels only when they are known: an HTTP route's matched template, a gRPC
/// method this server serves. Anything else is `unmatched` / `unknown`, so a caller sending
/// made-up paths (before any authentication) cannot add series.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    protocol: &'static str,
    known: Arc<HashSet<String>>,
}

impl MetricsLayer {
    /// For an axum router: routes are labelled by their matched template.
    pub fn new(protocol: &'static str) -> Self {
        MetricsLayer {
            protocol,
            known: Arc::default(),
        }
    }

    /// For a gRPC server answering `methods` (full paths, `/package.Service/Method`).
    pub fn grpc(methods: impl IntoIterator<Item = String>) -> Self {
        MetricsLayer {
            protocol: "grpc",
            known: Arc::new(methods.into_iter().collect()),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            protocol: self.protocol,
            known: self.known.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    protocol: &'static str,
    known: Arc<HashSet<String>>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Matched route templates and served methods keep label cardinality bounded.
        let path = req.uri().path();
        let route = match req.extensions().get::<axum::extract::MatchedPath>() {
            Some(matched) => matched.as_str().to_owned(),
            None if self.known.contains(path) => path.to_owned(),
            None if self.protocol == "grpc" => "unknown".to_owned(),
            None => "unmatched".to_owned(),
        };
        let protocol = self.protocol;
        let started = Instant::now();
        let future = self.inner.call(req);
        Box::pin(async move {
            let result = future.await;
            let status = match &result {
                Ok(res) => res
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_else(|| res.status().as_u16().to_string()),
                Err(_) => "error".to_owned(),
            };
            let labels = [
                ("protocol", protocol.to_owned()),
                ("route", route),
                ("status", status),
            ];
            metrics::counter!("haven_requests_total", &labels).increment(1);
            metrics::histogram!("haven_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}
