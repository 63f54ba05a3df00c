//! Sky Pilot (digital downloads for Shopify) API key validation.
//!
//! Sky Pilot publishes no server-side REST API for merchants' keys: its only documented JSON
//! endpoints are storefront ones (`/apps/downloads/...` on the shop, customer-scoped,
//! <https://app.loopedin.io/sky-pilot/kb/aboutadditional-features/storefront-api>). This
//! client therefore uses a plausible, conventional shape, `GET {base}/v1/account` with
//! `Authorization: Bearer <key>`, which the fake implements; point `base_url` at the real
//! endpoint once Sky Pilot documents one.

use secrecy::{ExposeSecret, SecretString};

use crate::http::{self, ErrorBody};
use crate::{HttpSettings, ProviderError};

const PROVIDER: &str = "sky_pilot";

/// Assumed production API base (undocumented; see the module docs).
pub const DEFAULT_BASE_URL: &str = "https://api.skypilotapp.com";

/// Client for Sky Pilot's (assumed) key-validation call.
#[derive(Debug, Clone)]
pub struct SkyPilotClient {
    base: String,
    http: reqwest::Client,
}

impl SkyPilotClient {
    /// `base_url` is [`DEFAULT_BASE_URL`] in production.
    pub fn new(base_url: &str, http: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(SkyPilotClient {
            base: http::normalize_base(PROVIDER, base_url)?,
            http: http::build_client(PROVIDER, http)?,
        })
    }

    /// Validates the key: any 2xx from the account endpoint means the key is accepted.
    pub async fn validate(&self, key: &SecretString) -> Result<(), ProviderError> {
        let request = self
            .http
            .get(format!("{}/v1/account", self.base))
            .bearer_auth(key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        http::execute(PROVIDER, request, ErrorBody::Api, &[key.expose_secret()]).await?;
        Ok(())
    }
}
