//! Shared request plumbing: client construction, status classification and safe messages.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::{HttpSettings, ProviderError};

/// Longest provider message we keep; enough to act on, too short to smuggle a payload.
const MAX_MESSAGE_CHARS: usize = 300;

/// How to read an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorBody {
    /// An OAuth token endpoint: its bodies can hold tokens, so only `error` and
    /// `error_description` are kept.
    OAuth,
    /// An ordinary API endpoint: a human message is kept, scrubbed of the credential sent.
    Api,
}

/// Builds the HTTP client every provider client uses.
///
/// Redirects are not followed: a provider that redirects an authenticated call is
/// misconfigured, and following it could hand our credential to another host.
pub(crate) fn build_client(
    provider: &'static str,
    http: &HttpSettings,
) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(http.timeout)
        .connect_timeout(http.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("haven-providers/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|_| ProviderError::Unavailable {
            provider,
            status: None,
            message: "could not initialise the HTTP client (TLS setup failed)".into(),
        })
}

/// Checks that `base` is an absolute http(s) URL and returns it without a trailing slash.
pub(crate) fn normalize_base(provider: &'static str, base: &str) -> Result<String, ProviderError> {
    let trimmed = base.trim().trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(trimmed.to_owned())
        }
        _ => Err(ProviderError::Rejected {
            provider,
            status: 0,
            message: format!("invalid base URL `{trimmed}`"),
        }),
    }
}

/// Sends the request, then turns any non-2xx status into a [`ProviderError`].
///
/// `secrets` are the credentials the request carried; they are scrubbed from any message.
pub(crate) async fn execute(
    provider: &'static str,
    request: RequestBuilder,
    kind: ErrorBody,
    secrets: &[&str],
) -> Result<Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(error_from_response(provider, response, kind, secrets).await)
}

/// Sends the request and returns the response whatever its status; transport errors still
/// become [`ProviderError::Unavailable`]. For callers that treat some statuses specially.
pub(crate) async fn send_raw(
    provider: &'static str,
    request: RequestBuilder,
) -> Result<Response, ProviderError> {
    request
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))
}

/// Reads a failed response and classifies it.
pub(crate) async fn error_from_response(
    provider: &'static str,
    response: Response,
    kind: ErrorBody,
    secrets: &[&str],
) -> ProviderError {
    let status = response.status();
    let retry_after = parse_retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    classify(provider, status, retry_after, &body, kind, secrets)
}

/// Maps a status and body to an error.
pub(crate) fn classify(
    provider: &'static str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    kind: ErrorBody,
    secrets: &[&str],
) -> ProviderError {
    let message = match kind {
        ErrorBody::OAuth => oauth_message(body, secrets),
        ErrorBody::Api => api_message(body, secrets),
    }
    .unwrap_or_else(|| {
        format!(
            "HTTP {}{}",
            status.as_u16(),
            status
                .canonical_reason()
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )
    });
    match status.as_u16() {
        401 | 403 => ProviderError::Unauthorized { provider, message },
        429 => ProviderError::RateLimited {
            provider,
            retry_after,
        },
        500..=599 => ProviderError::Unavailable {
            provider,
            status: Some(status.as_u16()),
            message,
        },
        s => ProviderError::Rejected {
            provider,
            status: s,
            message,
        },
    }
}

/// A transport failure: timeout, refused connection, broken body.
pub(crate) fn transport_error(provider: &'static str, err: &reqwest::Error) -> ProviderError {
    // The error's own Display names the URL; we describe the failure instead.
    let message = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    ProviderError::Unavailable {
        provider,
        status: err.status().map(|s| s.as_u16()),
        message: message.into(),
    }
}

/// Reads a 2xx body as JSON.
///
/// serde's own messages can quote the offending value (a token, say), so only the error
/// category and position are reported.
pub(crate) async fn read_json<T: DeserializeOwned>(
    provider: &'static str,
    response: Response,
) -> Result<T, ProviderError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    parse_json(provider, &bytes)
}

/// See [`read_json`].
pub(crate) fn parse_json<T: DeserializeOwned>(
    provider: &'static str,
    bytes: &[u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes).map_err(|e| ProviderError::Malformed {
        provider,
        message: format!(
            "body is not the documented JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// Parses Retry-After: delay-seconds (integer, or Shopify's fractional form) or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = date.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// `error[: error_description]` from an OAuth error body; nothing else survives.
fn oauth_message(body: &[u8], secrets: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?.as_str()?;
    if !is_oauth_code(error) {
        return None;
    }
    match value.get("error_description").and_then(|d| d.as_str()) {
        Some(desc) if !desc.trim().is_empty() => Some(format!("{error}: {}", tidy(desc, secrets))),
        _ => Some(error.to_owned()),
    }
}

/// OAuth error codes are short ASCII identifiers; anything else is not echoed.
fn is_oauth_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A human message from a JSON error body, whatever the provider's shape.
fn api_message(body: &[u8], secrets: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = message_of(&value)?;
    let text = tidy(&text, secrets);
    (!text.is_empty()).then_some(text)
}

fn message_of(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(message_of),
        Value::Object(map) => {
            // Resend/Pinterest/Dynamic Mockups: message; Klaviyo: errors[].detail/title;
            // Shopify: errors as a string or as {field: [messages]}.
            for key in ["message", "detail", "title", "error_description"] {
                if let Some(Value::String(s)) = map.get(key) {
                    return Some(s.clone());
                }
            }
            for key in ["errors", "error"] {
                match map.get(key) {
                    Some(Value::Object(fields)) => {
                        let joined: Vec<String> = fields
                            .iter()
                            .filter_map(|(field, v)| message_of(v).map(|m| format!("{field} {m}")))
                            .collect();
                        if !joined.is_empty() {
                            return Some(joined.join("; "));
                        }
                    }
                    Some(v) => {
                        if let Some(m) = message_of(v) {
                            return Some(m);
                        }
                    }
                    None => {}
                }
            }
            None
        }
        _ => None,
    }
}

/// Scrubs the credentials out of `text` and bounds its length.
pub(crate) fn tidy(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if secret.len() >= 4 {
            out = out.replace(secret, "[redacted]");
        }
    }
    let out: String = out
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&headers("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&headers("2.0")),
            Some(Duration::from_secs(2))
        );
        let past = parse_retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(past, Some(Duration::ZERO));
        let future = (Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&headers(&future)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(parse_retry_after(&headers("soon")), None);
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn oauth_bodies_keep_only_error_fields() {
        let body = br#"{"error":"invalid_grant","error_description":"token tok_123456 revoked","access_token":"leak"}"#;
        let e = classify(
            "shopify",
            StatusCode::BAD_REQUEST,
            None,
            body,
            ErrorBody::OAuth,
            &["tok_123456"],
        );
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("leak") && !text.contains("tok_123456"),
            "{text}"
        );
        assert!(e.is_grant_refused());

        // No OAuth error code: nothing of the body is echoed.
        let e = classify(
            "pinterest",
            StatusCode::BAD_REQUEST,
            None,
            br#"{"access_token":"leak"}"#,
            ErrorBody::OAuth,
            &[],
        );
        assert!(!e.to_string().contains("leak"));
    }

    #[test]
    fn api_messages_from_various_shapes() {
        let m = |b: &[u8]| api_message(b, &["key_abcdef"]);
        assert_eq!(m(br#"{"message":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(
            m(br#"{"errors":[{"detail":"bad key key_abcdef"}]}"#).as_deref(),
            Some("bad key [redacted]")
        );
        assert_eq!(
            m(br#"{"errors":{"address":["for this topic has already been taken"]}}"#).as_deref(),
            Some("address for this topic has already been taken")
        );
        assert_eq!(m(b"<html>oops</html>"), None);
    }
}
