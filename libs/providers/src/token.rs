//! The token set an OAuth exchange or refresh yields.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::ProviderError;

/// Tokens from a code exchange or a refresh.
///
/// Every token is a [`SecretString`], so `Debug` redacts each of them.
#[derive(Clone, Debug)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// For rotating providers (Shopify expiring offline tokens, Pinterest continuous refresh)
    /// this is the NEW refresh token; the one that was sent is dead and must be replaced.
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

/// The fields Shopify and Pinterest token endpoints share (RFC 6749 §5.1 plus their extras).
///
/// No `Debug`: it holds raw tokens.
#[derive(Deserialize)]
pub(crate) struct RawTokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    expires_in: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    refresh_token_expires_in: Option<i64>,
    /// Pinterest: absolute Unix seconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    refresh_token_expires_at: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

impl RawTokenResponse {
    /// Converts into a [`TokenSet`]; `previous_refresh` is kept when the provider did not
    /// rotate (returned no refresh token).
    pub(crate) fn into_token_set(
        self,
        provider: &'static str,
        now: DateTime<Utc>,
        previous_refresh: Option<&SecretString>,
    ) -> Result<TokenSet, ProviderError> {
        if self.access_token.trim().is_empty() {
            return Err(ProviderError::Malformed {
                provider,
                message: "token response has an empty access_token".into(),
            });
        }
        let after = |secs: Option<i64>| {
            secs.filter(|s| *s > 0)
                .map(|s| now + chrono::Duration::seconds(s))
        };
        let refresh_token = match self.refresh_token.filter(|t| !t.is_empty()) {
            Some(t) => Some(SecretString::from(t)),
            None => previous_refresh.cloned(),
        };
        let refresh_token_expires_at = after(self.refresh_token_expires_in).or_else(|| {
            self.refresh_token_expires_at
                .and_then(|at| DateTime::from_timestamp(at, 0))
        });
        Ok(TokenSet {
            access_token: SecretString::from(self.access_token),
            refresh_token,
            expires_at: after(self.expires_in),
            refresh_token_expires_at,
            scopes: split_scopes(self.scope.as_deref().unwrap_or_default()),
        })
    }
}

/// Splits a scope string: Shopify separates with commas, Pinterest (and RFC 6749) with spaces.
pub(crate) fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Accepts a number or a numeric string; some generated Pinterest examples quote integers.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Int(i64),
        Float(f64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        Some(NumOrStr::Int(i)) => Some(i),
        Some(NumOrStr::Float(f)) if f.is_finite() => Some(f as i64),
        Some(NumOrStr::Str(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn token_set_debug_is_redacted_and_rotation_kept() {
        let raw: RawTokenResponse = serde_json::from_str(
            r#"{"access_token":"shpat_live","scope":"read_products,write_orders","expires_in":"3600","refresh_token":"shprt_new","refresh_token_expires_in":7776000}"#,
        )
        .unwrap();
        let now = Utc::now();
        let set = raw
            .into_token_set("shopify", now, Some(&SecretString::from("old")))
            .unwrap();
        assert_eq!(
            set.refresh_token.as_ref().unwrap().expose_secret(),
            "shprt_new"
        );
        assert_eq!(set.expires_at, Some(now + chrono::Duration::seconds(3600)));
        assert_eq!(set.scopes, vec!["read_products", "write_orders"]);
        let dbg = format!("{set:?}");
        assert!(
            !dbg.contains("shpat_live") && !dbg.contains("shprt_new"),
            "{dbg}"
        );

        let raw: RawTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","scope":"boards:read pins:read"}"#)
                .unwrap();
        let set = raw
            .into_token_set("pinterest", now, Some(&SecretString::from("old")))
            .unwrap();
        assert_eq!(set.refresh_token.unwrap().expose_secret(), "old");
        assert_eq!(set.expires_at, None);
        assert_eq!(set.scopes, vec!["boards:read", "pins:read"]);
    }
}
