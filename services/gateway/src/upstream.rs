//! Calling the gRPC services on the user's behalf: their bearer token goes along (each
//! service verifies it again and scopes by its tenant), and so does the trace context.

use axum::http::HeaderMap;
use haven_telemetry::MetadataInjector;

/// A gRPC request carrying the caller's `authorization` and the current `traceparent`.
pub fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Ok(value) = value.parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    haven_telemetry::inject_current(&mut MetadataInjector(request.metadata_mut()));
    request
}
