//! Shopify's wire rules, shared by the gateway and the integrations service without the
//! provider HTTP clients: what a shop domain is ([`ShopDomain`]) and how Shopify signs OAuth
//! callbacks and webhooks ([`sign_callback`], [`verify_callback`], [`sign_webhook`],
//! [`verify_webhook`]). Signatures are compared in constant time.

mod demo;
mod webhook;

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use demo::CatalogShape;
pub use webhook::{ShopField, WebhookBodyError, signed_shop};

type HmacSha256 = Hmac<Sha256>;

/// Longest shop name accepted before `.myshopify.com` (Shopify's are far shorter).
pub const MAX_SHOP_NAME_LEN: usize = 100;

/// A shop's `name.myshopify.com` domain: lowercase, `^[a-z0-9][a-z0-9-]*\.myshopify\.com$`.
///
/// It ends up as the host we send the client secret and authorization code to, so anything
/// that could point elsewhere (scheme, path, port, userinfo, another domain) is refused. The
/// only way to build one is [`ShopDomain::parse`], which trims and lowercases first, as
/// Shopify's own app library does, but is stricter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShopDomain(String);

/// Why a shop domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopDomainError {
    #[error("shop domain is empty")]
    Empty,
    #[error("shop domain must be a bare `name.myshopify.com` host, not a URL")]
    NotBareHost,
    #[error("shop domain must be `name.myshopify.com` (letters, digits and hyphens)")]
    NotMyshopify,
    #[error("shop domain is longer than {MAX_SHOP_NAME_LEN} characters before .myshopify.com")]
    TooLong,
}

impl ShopDomain {
    /// Checks and normalises a shop domain (trimmed, lowercased).
    pub fn parse(shop: &str) -> Result<ShopDomain, ShopDomainError> {
        let shop = shop.trim().to_ascii_lowercase();
        if shop.is_empty() {
            return Err(ShopDomainError::Empty);
        }
        if shop.contains([':', '/', '?', '#', '@', '\\']) || shop.contains(char::is_whitespace) {
            return Err(ShopDomainError::NotBareHost);
        }
        let Some(name) = shop.strip_suffix(".myshopify.com") else {
            return Err(ShopDomainError::NotMyshopify);
        };
        if name.len() > MAX_SHOP_NAME_LEN {
            return Err(ShopDomainError::TooLong);
        }
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if first_ok && rest_ok {
            Ok(ShopDomain(shop))
        } else {
            Err(ShopDomainError::NotMyshopify)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ShopDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ShopDomain {
    type Err = ShopDomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShopDomain::parse(s)
    }
}

impl AsRef<str> for ShopDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a webhook signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not base64")]
    NotBase64,
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &SecretString, message: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    mac.update(message);
    mac
}

/// Signs a webhook body the way Shopify does: base64 HMAC-SHA256 under the app's secret (for
/// the fake and for tests).
pub fn sign_webhook(body: &[u8], secret: &SecretString) -> String {
    BASE64.encode(mac(secret, body).finalize().into_bytes())
}

/// Verifies `X-Shopify-Hmac-Sha256`, the base64 HMAC-SHA256 of the raw body, in constant
/// time; a truncated tag is not a shorter valid one.
/// <https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-2-validate-the-origin-of-your-webhook-to-ensure-its-coming-from-shopify>
pub fn verify_webhook(
    body: &[u8],
    header_b64: &str,
    secret: &SecretString,
) -> Result<(), SignatureError> {
    let given = BASE64
        .decode(header_b64.trim())
        .map_err(|_| SignatureError::NotBase64)?;
    let expected = mac(secret, body).finalize().into_bytes();
    if given.len() == expected.len() && bool::from(given.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The message Shopify signs for a callback: every parameter except `hmac` and `signature`,
/// sorted by key, `key=value` pairs joined by `&`, with keys and values form-encoded the way
/// Shopify's library does (URLSearchParams, spaces as `%20`). `None` if a key repeats.
/// <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant#step-2-verify-the-installation-request>
fn callback_message(query: &[(String, String)]) -> Option<String> {
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let encode = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    Some(
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The hex HMAC-SHA256 Shopify puts in a callback's `hmac` parameter. Empty if `query`
/// repeats a key (such a query never verifies).
pub fn sign_callback(query: &[(String, String)], secret: &SecretString) -> String {
    callback_message(query)
        .map(|m| hex::encode(mac(secret, m.as_bytes()).finalize().into_bytes()))
        .unwrap_or_default()
}

/// Verifies a callback's single `hmac` parameter in constant time. Checks the signature
/// only; the caller checks the timestamp and the OAuth state.
pub fn verify_callback(query: &[(String, String)], secret: &SecretString) -> bool {
    let mut given = query.iter().filter(|(k, _)| k == "hmac");
    let (Some((_, given)), None) = (given.next(), given.next()) else {
        return false;
    };
    let Ok(given) = hex::decode(given.trim()) else {
        return false;
    };
    let Some(message) = callback_message(query) else {
        return false;
    };
    mac(secret, message.as_bytes()).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shop_domains_are_lowercased_myshopify_hosts() {
        assert_eq!(
            ShopDomain::parse(" Haven-Test.MyShopify.com ")
                .unwrap()
                .as_str(),
            "haven-test.myshopify.com"
        );
        for (bad, why) in [
            ("", ShopDomainError::Empty),
            ("https://x.myshopify.com", ShopDomainError::NotBareHost),
            ("x.myshopify.com/admin", ShopDomainError::NotBareHost),
            ("ha ven.myshopify.com", ShopDomainError::NotBareHost),
            ("evil.com", ShopDomainError::NotMyshopify),
            (".myshopify.com", ShopDomainError::NotMyshopify),
            ("-x.myshopify.com", ShopDomainError::NotMyshopify),
            ("a.b.myshopify.com", ShopDomainError::NotMyshopify),
            (
                "haven.myshopify.com.evil.com",
                ShopDomainError::NotMyshopify,
            ),
        ] {
            assert_eq!(ShopDomain::parse(bad), Err(why), "{bad:?}");
        }
        let long = format!("{}.myshopify.com", "a".repeat(MAX_SHOP_NAME_LEN + 1));
        assert_eq!(ShopDomain::parse(&long), Err(ShopDomainError::TooLong));
    }

    #[test]
    fn webhook_signatures_cover_the_exact_body() {
        let secret = SecretString::from("shpss_test");
        let body = br#"{"id":1}"#;
        let good = sign_webhook(body, &secret);
        assert_eq!(verify_webhook(body, &good, &secret), Ok(()));
        assert_eq!(
            verify_webhook(br#"{"id":2}"#, &good, &secret),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook(body, "not base64!", &secret),
            Err(SignatureError::NotBase64)
        );
        let short = BASE64.encode(&BASE64.decode(&good).unwrap()[..16]);
        assert_eq!(
            verify_webhook(body, &short, &secret),
            Err(SignatureError::Mismatch)
        );
        let other = SecretString::from("another");
        assert!(verify_webhook(body, &good, &other).is_err());
    }

    #[test]
    fn callbacks_verify_once_signed_and_not_when_repeated() {
        let secret = SecretString::from("hush");
        let mut q = vec![
            ("shop".to_owned(), "x.myshopify.com".to_owned()),
            ("code".to_owned(), "a b".to_owned()),
            ("timestamp".to_owned(), "1".to_owned()),
        ];
        let hmac = sign_callback(&q, &secret);
        q.push(("hmac".to_owned(), hmac.clone()));
        assert!(verify_callback(&q, &secret));
        assert!(!verify_callback(&q, &SecretString::from("other")));
        q.push(("hmac".to_owned(), hmac));
        assert!(!verify_callback(&q, &secret));
    }
}
