//! Shopify: OAuth authorization-code grant with expiring offline tokens, callback and webhook
//! HMACs, and the Admin REST calls the integration needs.
//!
//! Docs: <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant>
//! and <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/offline-access-tokens>.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::http::{self, ErrorBody};
use crate::token::RawTokenResponse;
use crate::{HttpSettings, ProviderError, TokenSet};

const PROVIDER: &str = "shopify";

/// The production URL template: each shop is its own host.
pub const DEFAULT_URL_TEMPLATE: &str = "https://{shop}";
/// Same as [`DEFAULT_URL_TEMPLATE`]; every client module exports a `DEFAULT_BASE_URL`.
pub const DEFAULT_BASE_URL: &str = DEFAULT_URL_TEMPLATE;
/// A supported Admin API version (Shopify supports each for at least 12 months).
pub const DEFAULT_API_VERSION: &str = "2025-10";
/// How far a callback `timestamp` may be from now; the value Shopify's own library uses.
pub const CALLBACK_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(90);

/// The eight webhook topics the web app relies on, registered on connect.
pub const WEBHOOK_TOPICS: [&str; 8] = [
    "orders/create",
    "orders/updated",
    "checkouts/create",
    "checkouts/update",
    "customers/create",
    "customers/update",
    "products/update",
    "app/uninstalled",
];

/// The mandatory privacy compliance topics every public app must handle.
/// <https://shopify.dev/docs/apps/build/compliance/privacy-law-compliance>
pub const COMPLIANCE_TOPICS: [&str; 3] =
    ["customers/data_request", "customers/redact", "shop/redact"];

pub use haven_shopify::{ShopDomain, ShopDomainError, sign_callback, sign_webhook};

/// Validates a shop domain with [`ShopDomain::parse`], the workspace's one rule, and returns
/// it normalised.
pub fn validate_shop_domain(shop: &str) -> Result<String, ShopDomainError> {
    ShopDomain::parse(shop).map(ShopDomain::into_string)
}

/// Verifies a callback's `hmac` parameter in constant time ([`haven_shopify::verify_callback`]).
///
/// Checks the signature only; pair it with [`verify_callback_timestamp`] and the OAuth state.
pub fn verify_callback_hmac(query: &[(String, String)], client_secret: &SecretString) -> bool {
    haven_shopify::verify_callback(query, client_secret)
}

/// Whether the callback's `timestamp` (Unix seconds) is within `tolerance` of `now`, as
/// Shopify's library requires, so a captured callback URL cannot be replayed later.
pub fn verify_callback_timestamp(
    query: &[(String, String)],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> bool {
    let Some(ts) = query
        .iter()
        .find(|(k, _)| k == "timestamp")
        .and_then(|(_, v)| v.trim().parse::<i64>().ok())
    else {
        return false;
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    (now.timestamp() - ts).abs() <= tolerance
}

/// Verifies `X-Shopify-Hmac-Sha256` in constant time ([`haven_shopify::verify_webhook`]).
pub fn verify_webhook_hmac(body: &[u8], header_b64: &str, client_secret: &SecretString) -> bool {
    haven_shopify::verify_webhook(body, header_b64, client_secret).is_ok()
}

/// App credentials and where to reach Shopify.
#[derive(Debug, Clone)]
pub struct ShopifyConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    /// Access scopes requested at install, e.g. `read_products`.
    pub scopes: Vec<String>,
    /// Admin API version, e.g. `2025-10`.
    pub api_version: String,
    /// Base URL per shop; `{shop}` is replaced by the validated shop domain.
    /// Production: [`DEFAULT_URL_TEMPLATE`]; the fake: `http://127.0.0.1:P/shopify/{shop}`.
    pub url_template: String,
}

/// Shop metadata from `shop.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShopInfo {
    pub name: String,
    /// The shop's primary (possibly custom) domain.
    pub domain: String,
    pub myshopify_domain: String,
}

/// A webhook subscription as Shopify lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub topic: String,
    pub address: String,
}

/// Client for the OAuth and Admin REST endpoints of any shop.
#[derive(Debug, Clone)]
pub struct ShopifyClient {
    config: ShopifyConfig,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct CodeRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    code: &'a str,
    /// `1` asks for an expiring offline token with a refresh token.
    expiring: &'a str,
}

#[derive(Serialize)]
struct RefreshRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'a str,
    refresh_token: &'a str,
}

#[derive(Deserialize)]
struct ShopEnvelope {
    shop: ShopInfo,
}

#[derive(Deserialize)]
struct ScopesEnvelope {
    access_scopes: Vec<ScopeHandle>,
}

#[derive(Deserialize)]
struct ScopeHandle {
    handle: String,
}

#[derive(Deserialize)]
struct RawWebhook {
    id: serde_json::Value,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
struct WebhookEnvelope {
    webhook: RawWebhook,
}

#[derive(Deserialize)]
struct WebhooksEnvelope {
    webhooks: Vec<RawWebhook>,
}

fn id_string(provider: &'static str, id: &serde_json::Value) -> Result<String, ProviderError> {
    match id {
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ProviderError::Malformed {
            provider,
            message: "webhook has no id".into(),
        }),
    }
}

impl RawWebhook {
    fn into_webhook(self) -> Result<Webhook, ProviderError> {
        Ok(Webhook {
            id: id_string(PROVIDER, &self.id)?,
            topic: self.topic,
            address: self.address,
        })
    }
}

impl ShopifyClient {
    /// Builds the client; fails only if the template lacks `{shop}` or TLS cannot start.
    pub fn new(config: ShopifyConfig, http: &HttpSettings) -> Result<Self, ProviderError> {
        if !config.url_template.contains("{shop}") {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                status: 0,
                message: "url_template must contain `{shop}`".into(),
            });
        }
        http::normalize_base(
            PROVIDER,
            &config.url_template.replace("{shop}", "x.myshopify.com"),
        )?;
        Ok(ShopifyClient {
            http: http::build_client(PROVIDER, http)?,
            config,
        })
    }

    /// The base URL of a validated shop.
    fn base(&self, shop: &str) -> Result<String, ProviderError> {
        let shop = validate_shop_domain(shop).map_err(|e| ProviderError::Rejected {
            provider: PROVIDER,
            status: 400,
            message: e.to_string(),
        })?;
        Ok(self
            .config
            .url_template
            .replace("{shop}", &shop)
            .trim_end_matches('/')
            .to_owned())
    }

    fn admin(&self, shop: &str, path: &str) -> Result<String, ProviderError> {
        Ok(format!(
            "{}/admin/api/{}/{path}",
            self.base(shop)?,
            self.config.api_version
        ))
    }

    /// The install URL for an offline token: no `grant_options[]=per-user`, so the token
    /// belongs to the shop, not to the staff member who clicked install.
    ///
    /// Returns an empty string if `shop` fails [`validate_shop_domain`], so a caller that
    /// skipped validation can never redirect a user to a foreign host.
    /// <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant#step-3-ask-for-permission>
    pub fn authorize_url(&self, shop: &str, state: &str, redirect_uri: &str) -> String {
        let Ok(base) = self.base(shop) else {
            return String::new();
        };
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.config.client_id)
            .append_pair("scope", &self.config.scopes.join(","))
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .finish();
        format!("{base}/admin/oauth/authorize?{query}")
    }

    /// Exchanges an authorization code for an expiring offline token (`expiring=1`), which
    /// comes with a refresh token.
    /// <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/offline-access-tokens#expiring-offline-tokens>
    pub async fn exchange_code(&self, shop: &str, code: &str) -> Result<TokenSet, ProviderError> {
        let url = format!("{}/admin/oauth/access_token", self.base(shop)?);
        let body = CodeRequest {
            client_id: &self.config.client_id,
            client_secret: self.config.client_secret.expose_secret(),
            code,
            expiring: "1",
        };
        self.token_request(url, &body, None).await
    }

    /// Trades a refresh token for a new access token AND a new refresh token; the old refresh
    /// token stops working, so the caller must persist the returned one.
    /// <https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/offline-access-tokens#refresh-an-expiring-offline-access-token>
    pub async fn refresh(
        &self,
        shop: &str,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, ProviderError> {
        let url = format!("{}/admin/oauth/access_token", self.base(shop)?);
        let body = RefreshRequest {
            client_id: &self.config.client_id,
            client_secret: self.config.client_secret.expose_secret(),
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose_secret(),
        };
        self.token_request(url, &body, Some(refresh_token)).await
    }

    async fn token_request<B: Serialize>(
        &self,
        url: String,
        body: &B,
        previous_refresh: Option<&SecretString>,
    ) -> Result<TokenSet, ProviderError> {
        let mut secrets = vec![self.config.client_secret.expose_secret()];
        if let Some(r) = previous_refresh {
            secrets.push(r.expose_secret());
        }
        let request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        let response = http::execute(PROVIDER, request, ErrorBody::OAuth, &secrets).await?;
        let raw: RawTokenResponse = http::read_json(PROVIDER, response).await?;
        raw.into_token_set(PROVIDER, Utc::now(), previous_refresh)
    }

    fn get(&self, url: String, token: &SecretString) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .header("X-Shopify-Access-Token", token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Shop name and domains.
    /// <https://shopify.dev/docs/api/admin-rest/latest/resources/shop#get-shop>
    pub async fn shop(&self, shop: &str, token: &SecretString) -> Result<ShopInfo, ProviderError> {
        let request = self.get(self.admin(shop, "shop.json")?, token);
        let response =
            http::execute(PROVIDER, request, ErrorBody::Api, &[token.expose_secret()]).await?;
        let envelope: ShopEnvelope = http::read_json(PROVIDER, response).await?;
        Ok(envelope.shop)
    }

    /// The scopes the merchant actually granted (they can differ from those requested).
    /// Unversioned path, as Shopify documents it.
    /// <https://shopify.dev/docs/api/admin-rest/latest/resources/accessscope#get-admin-oauth-access-scopes-json>
    pub async fn access_scopes(
        &self,
        shop: &str,
        token: &SecretString,
    ) -> Result<Vec<String>, ProviderError> {
        let url = format!("{}/admin/oauth/access_scopes.json", self.base(shop)?);
        let request = self.get(url, token);
        let response =
            http::execute(PROVIDER, request, ErrorBody::Api, &[token.expose_secret()]).await?;
        let envelope: ScopesEnvelope = http::read_json(PROVIDER, response).await?;
        Ok(envelope
            .access_scopes
            .into_iter()
            .map(|s| s.handle)
            .collect())
    }

    /// Webhook subscriptions, optionally filtered by topic and address.
    /// <https://shopify.dev/docs/api/admin-rest/latest/resources/webhook#get-webhooks>
    pub async fn list_webhooks(
        &self,
        shop: &str,
        token: &SecretString,
        topic: Option<&str>,
        address: Option<&str>,
    ) -> Result<Vec<Webhook>, ProviderError> {
        let mut url = url::Url::parse(&self.admin(shop, "webhooks.json")?).map_err(|_| {
            ProviderError::Rejected {
                provider: PROVIDER,
                status: 0,
                message: "invalid webhooks URL".into(),
            }
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", "250");
            if let Some(t) = topic {
                q.append_pair("topic", t);
            }
            if let Some(a) = address {
                q.append_pair("address", a);
            }
        }
        let request = self.get(url.to_string(), token);
        let response =
            http::execute(PROVIDER, request, ErrorBody::Api, &[token.expose_secret()]).await?;
        let envelope: WebhooksEnvelope = http::read_json(PROVIDER, response).await?;
        envelope
            .webhooks
            .into_iter()
            .map(RawWebhook::into_webhook)
            .collect()
    }

    /// Subscribes `address` to `topic` and returns the subscription id.
    ///
    /// Idempotent: when Shopify answers 422 because the address is already subscribed to the
    /// topic, the existing subscription's id is returned, so a retried registration succeeds.
    /// <https://shopify.dev/docs/api/admin-rest/latest/resources/webhook#post-webhooks>
    pub async fn create_webhook(
        &self,
        shop: &str,
        token: &SecretString,
        topic: &str,
        address: &str,
    ) -> Result<String, ProviderError> {
        let body = serde_json::json!({
            "webhook": { "topic": topic, "address": address, "format": "json" }
        });
        let request = self
            .http
            .post(self.admin(shop, "webhooks.json")?)
            .header("X-Shopify-Access-Token", token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let response = http::send_raw(PROVIDER, request).await?;
        if response.status().is_success() {
            let envelope: WebhookEnvelope = http::read_json(PROVIDER, response).await?;
            return id_string(PROVIDER, &envelope.webhook.id);
        }
        let status = response.status();
        let err =
            http::error_from_response(PROVIDER, response, ErrorBody::Api, &[token.expose_secret()])
                .await;
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            return Err(err);
        }
        match self
            .list_webhooks(shop, token, Some(topic), Some(address))
            .await
        {
            Ok(existing) => existing
                .into_iter()
                .find(|w| w.topic == topic && w.address == address)
                .map(|w| w.id)
                .ok_or(err),
            // The lookup failing transiently is worth a retry; otherwise report the 422.
            Err(lookup) if lookup.is_retryable() => Err(lookup),
            Err(_) => Err(err),
        }
    }

    /// Removes a subscription; one that is already gone (404) counts as removed.
    /// <https://shopify.dev/docs/api/admin-rest/latest/resources/webhook#delete-webhooks-webhook-id>
    pub async fn delete_webhook(
        &self,
        shop: &str,
        token: &SecretString,
        id: &str,
    ) -> Result<(), ProviderError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                status: 400,
                message: "webhook id must be alphanumeric".into(),
            });
        }
        let request = self
            .http
            .delete(self.admin(shop, &format!("webhooks/{id}.json"))?)
            .header("X-Shopify-Access-Token", token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let response = http::send_raw(PROVIDER, request).await?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(
            http::error_from_response(PROVIDER, response, ErrorBody::Api, &[token.expose_secret()])
                .await,
        )
    }
}
