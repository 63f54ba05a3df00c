//! Local fake provider servers for tests and the dev stack.
//!
//! One axum server on 127.0.0.1 serves every provider under its own path prefix, following
//! each provider's documented requests and responses closely enough that the real
//! `haven-providers` clients work against it unchanged:
//!
//! | provider        | client base                         |
//! |-----------------|-------------------------------------|
//! | Shopify         | `{base}/shopify/{shop}` (template)  |
//! | Shopify GraphQL | `POST {base}/shopify/{shop}/admin/api/{version}/graphql.json`: the products catalogue query, cost-throttled |
//! | Shopify CDN     | `GET {base}/shopify-cdn/{shop}/files/{media_id}.{ext}`: the catalogue's images |
//! | Pinterest       | `{base}/pinterest/v5`, consent page `{base}/pinterest/oauth/` |
//! | Klaviyo         | `{base}/klaviyo`                    |
//! | Dynamic Mockups | `{base}/dynamic-mockups/api/v1`     |
//! | Resend          | `{base}/resend` (domains, send email with attachments and `Idempotency-Key`) |
//! | Sky Pilot       | `{base}/sky-pilot`                  |
//!
//! The fakes are stateful: codes are single-use, refresh tokens rotate, webhooks persist per
//! shop. The consent pages approve at once (a 302 back to the app), so OAuth can be clicked
//! through offline. Tests steer them with [`FakeProviders::fail_next`],
//! [`FakeProviders::set_token_delay`] and [`FakeProviders::revoke_refresh_tokens`]; the
//! Shopify catalogue with [`FakeProviders::set_shopify_catalog`],
//! [`FakeProviders::set_shopify_graphql_limits`] and [`FakeProviders::fail_image_next`].

mod keys;
mod pinterest;
mod shopify;
mod shopify_graphql;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::state::Shared;

pub use crate::shopify_graphql::{
    FakeCatalog, FakeMedia, FakeMediaKind, FakeProduct, FakeVariant, GraphqlStats,
};

/// App credentials the fakes accept, and token lifetime.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub shopify_client_id: String,
    pub shopify_client_secret: SecretString,
    pub pinterest_client_id: String,
    pub pinterest_client_secret: SecretString,
    /// Lifetime of issued access tokens (Shopify's expiring tokens last an hour).
    pub access_token_ttl: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            shopify_client_id: "fake-shopify-client-id".into(),
            shopify_client_secret: SecretString::from("fake-shopify-client-secret"),
            pinterest_client_id: "fake-pinterest-client-id".into(),
            pinterest_client_secret: SecretString::from("fake-pinterest-client-secret"),
            access_token_ttl: Duration::from_secs(3600),
        }
    }
}

/// An endpoint that [`FakeProviders::fail_next`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeRoute {
    ShopifyAuthorize,
    /// Code exchange and refresh.
    ShopifyToken,
    ShopifyShop,
    ShopifyAccessScopes,
    ShopifyCreateWebhook,
    ShopifyListWebhooks,
    ShopifyDeleteWebhook,
    /// The GraphQL Admin endpoint (catalogue query).
    ShopifyGraphql,
    /// Every CDN image; [`FakeProviders::fail_image_next`] targets one.
    ShopifyImage,
    PinterestAuthorize,
    /// Code exchange and refresh.
    PinterestToken,
    PinterestUserAccount,
    PinterestBoards,
    KlaviyoAccounts,
    KlaviyoLists,
    DynamicMockupsMockups,
    ResendDomains,
    /// Send Email.
    ResendEmails,
    SkyPilotAccount,
}

/// A board of the fake Pinterest account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBoard {
    pub id: String,
    pub name: String,
    pub pin_count: i64,
}

/// An email the fake Resend accepted, as a test reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// (filename, decoded bytes).
    pub attachments: Vec<(String, Vec<u8>)>,
    pub idempotency_key: Option<String>,
}

/// Handle on a running fake server; the server stops when this is dropped.
pub struct FakeProviders {
    shared: Shared,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviders")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// API-key provider names as callers spell them (`dynamic-mockups` or `dynamic_mockups`).
fn normalize_provider(provider: &str) -> String {
    provider.trim().to_ascii_lowercase().replace('-', "_")
}

impl FakeProviders {
    /// Starts on an ephemeral port of 127.0.0.1 (for tests).
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` (for the dev stack's fixed port).
    pub async fn start_on(addr: SocketAddr, config: FakeConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(config, format!("http://{addr}"));
        let app = axum::Router::new()
            .merge(shopify::routes())
            .merge(shopify_graphql::routes())
            .merge(pinterest::routes())
            .merge(keys::routes())
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            // A fake that stops serving shows up as connection errors in the test using it.
            let _ = server.await;
        });
        Ok(FakeProviders {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the server and waits (briefly) for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// For `ShopifyConfig::url_template`.
    pub fn shopify_url_template(&self) -> String {
        format!("{}/shopify/{{shop}}", self.base_url())
    }

    /// For `PinterestConfig::api_base`.
    pub fn pinterest_api_base(&self) -> String {
        format!("{}/pinterest/v5", self.base_url())
    }

    /// For `PinterestConfig::authorize_url`.
    pub fn pinterest_authorize_url(&self) -> String {
        format!("{}/pinterest/oauth/", self.base_url())
    }

    /// For `KlaviyoClient::new`.
    pub fn klaviyo_base(&self) -> String {
        format!("{}/klaviyo", self.base_url())
    }

    /// For `DynamicMockupsClient::new`.
    pub fn dynamic_mockups_base(&self) -> String {
        format!("{}/dynamic-mockups/api/v1", self.base_url())
    }

    /// For `ResendClient::new`.
    pub fn resend_base(&self) -> String {
        format!("{}/resend", self.base_url())
    }

    /// For `SkyPilotClient::new`.
    pub fn sky_pilot_base(&self) -> String {
        format!("{}/sky-pilot", self.base_url())
    }

    /// Replaces the Pinterest account's boards (Pinterest's order is the list's).
    pub fn set_pinterest_boards(&self, boards: Vec<FakeBoard>) {
        self.shared.lock().pinterest_boards = boards;
    }

    /// Registers a valid key for `klaviyo`, `dynamic_mockups`, `resend` or `sky_pilot`.
    pub fn add_api_key(&self, provider: &str, key: &str) {
        self.shared
            .lock()
            .api_keys
            .entry(normalize_provider(provider))
            .or_default()
            .insert(key.to_owned());
    }

    /// Registers a Resend key with "Sending access" only: List Domains answers it with
    /// 401 `restricted_api_key`, as Resend does.
    pub fn add_resend_send_only_key(&self, key: &str) {
        self.shared.lock().resend_send_only.insert(key.to_owned());
    }

    /// Makes the next `times` requests to `route` fail with `status` (429s carry
    /// `Retry-After: 1`), after which the route behaves normally again.
    pub fn fail_next(&self, route: FakeRoute, status: u16, times: u32) {
        let mut world = self.shared.lock();
        if times == 0 {
            world.failures.remove(&route);
        } else {
            world.failures.insert(route, (status, times));
        }
    }

    /// Every email the fake Resend accepted (a repeated idempotent request is not listed twice).
    pub fn resend_emails(&self) -> Vec<SentEmail> {
        self.shared.lock().resend_emails.clone()
    }

    /// Delays every token and refresh response, so racing refreshers overlap.
    pub fn set_token_delay(&self, delay: Duration) {
        self.shared.lock().token_delay = delay;
    }

    /// How many refresh-grant requests `shopify` or `pinterest` received (failed ones too).
    pub fn refresh_calls(&self, provider: &str) -> u32 {
        let provider = normalize_provider(provider);
        self.shared
            .lock()
            .refresh_calls
            .iter()
            .find(|(p, _)| **p == provider)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// From now on every refresh for `provider` answers 400 `invalid_grant`, as when the
    /// merchant uninstalls the app or revokes access.
    pub fn revoke_refresh_tokens(&self, provider: &str) {
        let provider: &'static str = match normalize_provider(provider).as_str() {
            "shopify" => "shopify",
            "pinterest" => "pinterest",
            _ => return,
        };
        let mut world = self.shared.lock();
        world.revoked.insert(provider);
        world.refresh.retain(|_, g| g.provider != provider);
    }

    /// The shop's webhook subscriptions as `(id, topic, address)`.
    pub fn shopify_webhooks(&self, shop: &str) -> Vec<(String, String, String)> {
        self.shared
            .lock()
            .webhooks
            .get(shop)
            .into_iter()
            .flatten()
            .map(|w| (w.id.to_string(), w.topic.clone(), w.address.clone()))
            .collect()
    }

    /// Replaces the products the GraphQL endpoint lists for `shop` (a shop with none set gets
    /// a small generated catalogue on first use). Bucket and counters are kept.
    pub fn set_shopify_catalog(&self, shop: &str, catalog: FakeCatalog) {
        self.shared
            .lock()
            .shopify_graphql
            .set_catalog(shop, catalog);
    }

    /// Bucket size and restore rate (points per second) of every shop's query-cost bucket;
    /// Shopify's standard plan, 2000 and 100, by default. New buckets start full.
    pub fn set_shopify_graphql_limits(&self, maximum: f64, restore_rate: f64) {
        self.shared
            .lock()
            .shopify_graphql
            .set_limits(maximum, restore_rate);
    }

    /// Empties the shop's bucket now, so the next query is THROTTLED.
    pub fn drain_shopify_graphql_bucket(&self, shop: &str) {
        self.shared.lock().shopify_graphql.drain(shop);
    }

    /// What the GraphQL endpoint did for `shop`.
    pub fn shopify_graphql_stats(&self, shop: &str) -> GraphqlStats {
        self.shared.lock().shopify_graphql.stats(shop)
    }

    /// How many times the CDN served the image (successfully; injected failures not counted).
    pub fn shopify_image_fetches(&self, media_id: u64) -> u32 {
        self.shared.lock().shopify_graphql.image_fetches(media_id)
    }

    /// Images served by the CDN in all.
    pub fn shopify_image_fetches_total(&self) -> u64 {
        self.shared.lock().shopify_graphql.image_fetches_total()
    }

    /// Makes the next `times` fetches of one image fail with `status` (429s carry
    /// `Retry-After: 1`); other images are unaffected.
    pub fn fail_image_next(&self, media_id: u64, status: u16, times: u32) {
        self.shared
            .lock()
            .shopify_graphql
            .fail_image(media_id, status, times);
    }

    /// Every access token ever issued, so tests can grep dumps and logs for secret bytes.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_access.clone()
    }

    /// Every refresh token ever issued, for the same greps.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_refresh.clone()
    }

    /// Makes every live access token of `provider` expire now, so calls with it get 401.
    pub fn expire_access_tokens(&self, provider: &str) {
        let provider = normalize_provider(provider);
        let now = std::time::Instant::now();
        for grant in self.shared.lock().access.values_mut() {
            if grant.provider == provider {
                grant.expires_at = Some(now);
            }
        }
    }
}

impl Drop for FakeProviders {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
