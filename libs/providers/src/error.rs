use std::time::Duration;

/// OAuth `error` codes that mean the grant itself is dead: only the user reconnecting helps.
const GRANT_REFUSED_CODES: [&str; 3] = ["invalid_grant", "invalid_token", "unauthorized_client"];

/// Why a provider call failed, classified by what the caller should do next.
///
/// Messages never contain a token, key or secret. For OAuth token endpoints the message of a
/// `Rejected` is the provider's `error` code, followed by `: error_description` when present,
/// so [`ProviderError::is_grant_refused`] can tell a dead grant from a bad request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 401/403: the provider refused the credential.
    #[error("{provider} refused the credential: {message}")]
    Unauthorized {
        provider: &'static str,
        message: String,
    },
    /// 429: too many requests; `retry_after` comes from the Retry-After header.
    #[error("{provider} rate limited the request{}", fmt_retry_after(.retry_after))]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    /// 5xx, timeout or connection failure: the provider may be fine a moment later.
    #[error("{provider} is unavailable{}: {message}", fmt_status(.status))]
    Unavailable {
        provider: &'static str,
        status: Option<u16>,
        message: String,
    },
    /// Any other 4xx (or a request this client refuses to send, such as a bad shop domain).
    #[error("{provider} rejected the request (HTTP {status}): {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// A 2xx whose body is not what the provider documents.
    #[error("{provider} sent an unexpected response: {message}")]
    Malformed {
        provider: &'static str,
        message: String,
    },
}

fn fmt_retry_after(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {} ms)", d.as_millis()),
        None => String::new(),
    }
}

fn fmt_status(status: &Option<u16>) -> String {
    match status {
        Some(s) => format!(" (HTTP {s})"),
        None => String::new(),
    }
}

impl ProviderError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Unavailable { .. }
        )
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            ProviderError::Unauthorized { .. }
            | ProviderError::Unavailable { .. }
            | ProviderError::Rejected { .. }
            | ProviderError::Malformed { .. } => None,
        }
    }

    /// Whether the credential or grant is dead, so the user must reconnect: a 401/403, or an
    /// OAuth error such as `invalid_grant` (revoked or already-rotated refresh token).
    pub fn is_grant_refused(&self) -> bool {
        match self {
            ProviderError::Unauthorized { .. } => true,
            ProviderError::Rejected { message, .. } => {
                let code = message.split(':').next().unwrap_or_default().trim();
                GRANT_REFUSED_CODES.contains(&code)
            }
            ProviderError::RateLimited { .. }
            | ProviderError::Unavailable { .. }
            | ProviderError::Malformed { .. } => false,
        }
    }

    /// The provider this error is about.
    pub fn provider(&self) -> &'static str {
        match self {
            ProviderError::Unauthorized { provider, .. }
            | ProviderError::RateLimited { provider, .. }
            | ProviderError::Unavailable { provider, .. }
            | ProviderError::Rejected { provider, .. }
            | ProviderError::Malformed { provider, .. } => provider,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let rl = ProviderError::RateLimited {
            provider: "shopify",
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(rl.is_retryable());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(2)));
        assert!(!rl.is_grant_refused());
        assert_eq!(
            rl.to_string(),
            "shopify rate limited the request (retry after 2000 ms)"
        );

        let down = ProviderError::Unavailable {
            provider: "pinterest",
            status: Some(503),
            message: "service unavailable".into(),
        };
        assert!(down.is_retryable());
        assert_eq!(
            down.to_string(),
            "pinterest is unavailable (HTTP 503): service unavailable"
        );

        let grant = ProviderError::Rejected {
            provider: "shopify",
            status: 400,
            message: "invalid_grant: refresh token revoked".into(),
        };
        assert!(grant.is_grant_refused());
        assert!(!grant.is_retryable());

        let bad = ProviderError::Rejected {
            provider: "shopify",
            status: 400,
            message: "invalid_request".into(),
        };
        assert!(!bad.is_grant_refused());

        let unauth = ProviderError::Unauthorized {
            provider: "klaviyo",
            message: "bad key".into(),
        };
        assert!(unauth.is_grant_refused());
        assert_eq!(unauth.provider(), "klaviyo");
    }
}
