//! Klaviyo private API key validation.
//!
//! Auth: <https://developers.klaviyo.com/en/docs/authenticate_> (`Authorization: Klaviyo-API-Key
//! <key>` plus a dated `revision` header on every `/api` request).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::http::{self, ErrorBody};
use crate::{HttpSettings, ProviderError};

const PROVIDER: &str = "klaviyo";

/// Production API host.
pub const DEFAULT_BASE_URL: &str = "https://a.klaviyo.com";
/// The API revision we speak; Klaviyo keeps each revision for two years.
/// <https://developers.klaviyo.com/en/docs/api_versioning_and_deprecation_policy>
pub const REVISION: &str = "2026-01-15";
/// Stops a provider that keeps returning `links.next` from looping us forever.
const MAX_LIST_PAGES: usize = 1000;

/// What a valid key tells us about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlaviyoAccount {
    pub list_count: u32,
}

/// Client for Klaviyo's key-validation calls.
#[derive(Debug, Clone)]
pub struct KlaviyoClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

impl KlaviyoClient {
    /// `base_url` is [`DEFAULT_BASE_URL`] in production.
    pub fn new(base_url: &str, http: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(KlaviyoClient {
            base: http::normalize_base(PROVIDER, base_url)?,
            http: http::build_client(PROVIDER, http)?,
        })
    }

    fn get(&self, url: &str, key: &SecretString) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Klaviyo-API-Key {}", key.expose_secret()),
            )
            .header("revision", REVISION)
            .header(reqwest::header::ACCEPT, "application/vnd.api+json")
    }

    /// Validates a private key and counts the account's lists.
    ///
    /// `GET /api/accounts/` proves the key belongs to an account
    /// (<https://developers.klaviyo.com/en/reference/get_accounts>). A key scoped without
    /// `accounts:read` gets 403 there yet is a perfectly good key, so a 403 falls through to
    /// the lists call, which the integration needs anyway
    /// (<https://developers.klaviyo.com/en/reference/get_lists>): only a refusal there is final.
    pub async fn validate(&self, key: &SecretString) -> Result<KlaviyoAccount, ProviderError> {
        let secrets = [key.expose_secret()];
        let accounts_url = format!("{}/api/accounts/", self.base);
        let response = http::send_raw(PROVIDER, self.get(&accounts_url, key)).await?;
        let status = response.status();
        if !status.is_success() && status != reqwest::StatusCode::FORBIDDEN {
            return Err(
                http::error_from_response(PROVIDER, response, ErrorBody::Api, &secrets).await,
            );
        }
        if status.is_success() {
            let page: Page = http::read_json(PROVIDER, response).await?;
            if page.data.is_empty() {
                return Err(ProviderError::Malformed {
                    provider: PROVIDER,
                    message: "the key belongs to no account".into(),
                });
            }
        }

        let mut count: u32 = 0;
        let mut next = Some(format!("{}/api/lists/", self.base));
        for _ in 0..MAX_LIST_PAGES {
            let Some(url) = next.take() else {
                return Ok(KlaviyoAccount { list_count: count });
            };
            let response =
                http::execute(PROVIDER, self.get(&url, key), ErrorBody::Api, &secrets).await?;
            let page: Page = http::read_json(PROVIDER, response).await?;
            count = count.saturating_add(u32::try_from(page.data.len()).unwrap_or(u32::MAX));
            next = match page.links.and_then(|l| l.next).filter(|n| !n.is_empty()) {
                // The key goes wherever `next` points, so it must stay on Klaviyo's host.
                Some(n) if n.starts_with(&format!("{}/", self.base)) && n != url => Some(n),
                Some(_) => {
                    return Err(ProviderError::Malformed {
                        provider: PROVIDER,
                        message: "lists pagination link leaves the API host or repeats".into(),
                    });
                }
                None => None,
            };
        }
        Err(ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("lists pagination did not end after {MAX_LIST_PAGES} pages"),
        })
    }
}
