//! W3C trace context across process boundaries: extract it from incoming requests and
//! messages, inject it into outgoing ones.

use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads trace headers from an HTTP header map.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace headers into an HTTP header map.
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes trace headers into outgoing gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The trace context carried by `extractor`.
pub fn extract_context(extractor: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(extractor))
}

/// Injects `span`'s trace context.
pub fn inject_context(span: &tracing::Span, injector: &mut dyn Injector) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, injector));
}

/// Injects the current span's trace context.
pub fn inject_current(injector: &mut dyn Injector) {
    inject_context(&tracing::Span::current(), injector);
}

/// Makes `span` a child of the trace carried by `extractor`, if any.
pub fn set_parent_from(span: &tracing::Span, extractor: &dyn Extractor) {
    // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
    let _ = span.set_parent(extract_context(extractor));
}

/// Opens a span per request, parented to the caller's `traceparent`.
#[derive(Clone, Copy, Debug)]
pub struct TraceContextLayer {
    kind: &'static str,
}

impl TraceContextLayer {
    /// `kind` names the protocol in the span (`grpc` or `http`).
    pub fn new(kind: &'static str) -> Self {
        TraceContextLayer { kind }
    }
}

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService {
            inner,
            kind: self.kind,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
    kind: &'static str,
}

impl<S, B> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "request",
            otel.name = %req.uri().path(),
            otel.kind = "server",
            protocol = self.kind,
            method = %req.method(),
            path = %req.uri().path(),
        );
        set_parent_from(&span, &HeaderExtractor(req.headers()));
        let _entered = span.enter();
        self.inner.call(req).in_current_span()
    }
}
