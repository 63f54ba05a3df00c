//! Cross-origin access for web apps served from another origin (`HAVEN_CORS_ORIGINS`).
//!
//! Only the listed origins may call the API from a browser; without a list the browser's
//! same-origin rule stands. Credentials (cookies) are never allowed cross-origin: the API
//! takes a bearer token, which a page sends explicitly.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::GatewayError;

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The CORS layer for a comma-separated list of origins; `None` for an empty list.
pub fn layer(origins: &str) -> Result<Option<CorsLayer>, GatewayError> {
    let origins = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(origin)
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("traceparent"),
            ])
            // What a page reads from a download: its file name, its export and its limit.
            .expose_headers([
                header::CONTENT_DISPOSITION,
                HeaderName::from_static("x-export-id"),
                HeaderName::from_static("x-export-limit"),
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

/// One origin, exactly as a browser sends it: `scheme://host[:port]`, nothing more.
fn origin(text: &str) -> Result<HeaderValue, GatewayError> {
    let bad = |reason: &str| GatewayError::CorsOrigin {
        origin: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    let serialized = url.origin().ascii_serialization();
    if serialized != text.trim_end_matches('/') {
        return Err(bad(&format!(
            "an origin has no path, query or user; did you mean {serialized}?"
        )));
    }
    HeaderValue::from_str(&serialized).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_an_empty_list_is_same_origin_only() {
        assert!(layer("").unwrap().is_none());
        assert!(layer(" , ").unwrap().is_none());
        assert!(
            layer("http://localhost:3000, https://app.example.com")
                .unwrap()
                .is_some()
        );
        for bad in [
            "localhost:3000",
            "ftp://example.com",
            "https://app.example.com/dashboard",
            "*",
        ] {
            let err = layer(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
