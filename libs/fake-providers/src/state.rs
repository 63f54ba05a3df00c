//! The fakes' shared, mutable world: codes, tokens, webhooks, keys, Shopify catalogues and
//! injected failures.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde_json::json;

use crate::shopify_graphql::GraphqlWorld;
use crate::{FakeConfig, FakeRoute};

/// A pending Shopify authorization code.
pub(crate) struct ShopifyCode {
    pub shop: String,
    pub scopes: Vec<String>,
}

/// A pending Pinterest authorization code.
pub(crate) struct PinterestCode {
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub challenge: Option<String>,
}

/// A live access token.
pub(crate) struct AccessGrant {
    pub provider: &'static str,
    /// Shopify tokens belong to one shop.
    pub shop: Option<String>,
    pub scopes: Vec<String>,
    /// `None`: a non-expiring token (Shopify without `expiring=1`).
    pub expires_at: Option<Instant>,
}

/// A live refresh token.
pub(crate) struct RefreshGrant {
    pub provider: &'static str,
    pub shop: Option<String>,
    pub scopes: Vec<String>,
    /// Pinterest continuous refresh (rotating); Shopify's always rotate.
    pub rotating: bool,
}

/// A Shopify webhook subscription.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub id: u64,
    pub topic: String,
    pub address: String,
}

pub(crate) struct World {
    pub base_url: String,
    pub config: FakeConfig,
    pub token_delay: Duration,
    pub failures: HashMap<FakeRoute, (u16, u32)>,
    pub shopify_codes: HashMap<String, ShopifyCode>,
    pub pinterest_codes: HashMap<String, PinterestCode>,
    pub access: HashMap<String, AccessGrant>,
    pub refresh: HashMap<String, RefreshGrant>,
    pub issued_access: Vec<String>,
    pub issued_refresh: Vec<String>,
    pub refresh_calls: HashMap<&'static str, u32>,
    pub revoked: HashSet<&'static str>,
    pub webhooks: HashMap<String, Vec<Webhook>>,
    pub next_webhook_id: u64,
    pub api_keys: HashMap<String, HashSet<String>>,
    pub resend_send_only: HashSet<String>,
    /// Emails Resend accepted, in order.
    pub resend_emails: Vec<crate::SentEmail>,
    /// Idempotency-Key → (email id, the first request's body).
    pub resend_idempotency: HashMap<String, (String, Vec<u8>)>,
    /// Shopify catalogues, query-cost buckets and CDN counters.
    pub shopify_graphql: GraphqlWorld,
    /// The Pinterest account's boards, in Pinterest's order.
    pub pinterest_boards: Vec<crate::FakeBoard>,
}

/// Cheaply cloneable handle on the world, shared by the server and [`crate::FakeProviders`].
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<World>>);

impl Shared {
    pub fn new(config: FakeConfig, base_url: String) -> Self {
        Shared(Arc::new(Mutex::new(World {
            base_url,
            config,
            token_delay: Duration::ZERO,
            failures: HashMap::new(),
            shopify_codes: HashMap::new(),
            pinterest_codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            issued_access: Vec::new(),
            issued_refresh: Vec::new(),
            refresh_calls: HashMap::new(),
            revoked: HashSet::new(),
            webhooks: HashMap::new(),
            next_webhook_id: 1_000_000_001,
            api_keys: HashMap::new(),
            resend_send_only: HashSet::new(),
            resend_emails: Vec::new(),
            resend_idempotency: HashMap::new(),
            shopify_graphql: GraphqlWorld::default(),
            pinterest_boards: crate::pinterest::default_boards(),
        })))
    }

    /// Locks the world. A panic in one handler must not wedge every later test call, so a
    /// poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// If a failure was injected for `route`, consumes one and returns its response.
    pub fn injected(&self, route: FakeRoute) -> Option<Response> {
        let mut world = self.lock();
        let (status, left) = world.failures.get_mut(&route)?;
        let status = *status;
        *left = left.saturating_sub(1);
        if *left == 0 {
            world.failures.remove(&route);
        }
        drop(world);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            axum::Json(json!({
                "errors": format!("fake: injected {status}"),
                "message": format!("fake: injected {status}"),
            })),
        )
            .into_response();
        if status == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Some(response)
    }

    /// Sleeps for the configured token-endpoint delay (outside the lock).
    pub async fn token_delay(&self) {
        let delay = self.lock().token_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    pub fn key_valid(&self, provider: &str, key: &str) -> bool {
        self.lock()
            .api_keys
            .get(provider)
            .is_some_and(|keys| keys.contains(key))
    }
}

impl World {
    /// Issues an access token (and, when `refresh` is given, a refresh token).
    pub fn issue(
        &mut self,
        provider: &'static str,
        shop: Option<String>,
        scopes: Vec<String>,
        expiring: bool,
        refresh: Option<bool>,
    ) -> (String, Option<String>) {
        let prefix = match provider {
            "shopify" => ("shpat_fake_", "shprt_fake_"),
            _ => ("pina_fake_", "pinr_fake_"),
        };
        let access = format!("{}{}", prefix.0, random_hex(20));
        let expires_at = expiring.then(|| Instant::now() + self.config.access_token_ttl);
        self.access.insert(
            access.clone(),
            AccessGrant {
                provider,
                shop: shop.clone(),
                scopes: scopes.clone(),
                expires_at,
            },
        );
        self.issued_access.push(access.clone());
        let refresh_token = refresh.map(|rotating| {
            let token = format!("{}{}", prefix.1, random_hex(20));
            self.refresh.insert(
                token.clone(),
                RefreshGrant {
                    provider,
                    shop,
                    scopes,
                    rotating,
                },
            );
            self.issued_refresh.push(token.clone());
            token
        });
        (access, refresh_token)
    }

    /// The scopes of a live access token for `provider` (and `shop`, for Shopify).
    pub fn check_access(
        &self,
        provider: &str,
        token: &str,
        shop: Option<&str>,
    ) -> Option<Vec<String>> {
        let grant = self.access.get(token)?;
        let live = grant.expires_at.is_none_or(|at| Instant::now() < at);
        (grant.provider == provider && grant.shop.as_deref() == shop && live)
            .then(|| grant.scopes.clone())
    }

    pub fn count_refresh(&mut self, provider: &'static str) {
        *self.refresh_calls.entry(provider).or_insert(0) += 1;
    }
}

/// `n` random bytes as hex: unguessable codes and tokens.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
