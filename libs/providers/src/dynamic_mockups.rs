//! Dynamic Mockups API key validation.
//!
//! Auth: <https://docs.dynamicmockups.com/getting-started/how-can-i-get-my-api-key>
//! (`x-api-key` header, JSON `Accept`).

use secrecy::{ExposeSecret, SecretString};

use crate::http::{self, ErrorBody};
use crate::{HttpSettings, ProviderError};

const PROVIDER: &str = "dynamic_mockups";

/// Production API base.
pub const DEFAULT_BASE_URL: &str = "https://app.dynamicmockups.com/api/v1";

/// What a valid key tells us.
///
/// Dynamic Mockups documents no endpoint for credits or plan (they are shown only in its
/// dashboard), so both stay `None` unless the response happens to carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicMockupsAccount {
    pub credits_remaining: Option<i64>,
    pub plan: Option<String>,
}

/// Client for Dynamic Mockups' key-validation call.
#[derive(Debug, Clone)]
pub struct DynamicMockupsClient {
    base: String,
    http: reqwest::Client,
}

impl DynamicMockupsClient {
    /// `base_url` is [`DEFAULT_BASE_URL`] in production.
    pub fn new(base_url: &str, http: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(DynamicMockupsClient {
            base: http::normalize_base(PROVIDER, base_url)?,
            http: http::build_client(PROVIDER, http)?,
        })
    }

    /// Validates the key with the cheapest documented authenticated read, Get Mockups
    /// (renders cost credits; listing does not).
    /// <https://docs.dynamicmockups.com/api-reference/get-mockups-api>
    pub async fn validate(
        &self,
        key: &SecretString,
    ) -> Result<DynamicMockupsAccount, ProviderError> {
        let request = self
            .http
            .get(format!("{}/mockups", self.base))
            .header("x-api-key", key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let response =
            http::execute(PROVIDER, request, ErrorBody::Api, &[key.expose_secret()]).await?;
        let body: serde_json::Value = http::read_json(PROVIDER, response).await?;
        if body.get("data").is_none_or(|d| !d.is_array()) {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                message: "Get Mockups response has no `data` list".into(),
            });
        }
        Ok(DynamicMockupsAccount {
            credits_remaining: body.get("credits_remaining").and_then(|c| c.as_i64()),
            plan: body.get("plan").and_then(|p| p.as_str()).map(str::to_owned),
        })
    }
}
