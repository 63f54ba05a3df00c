//! Shopify's product catalogue (products, variants, images) over the GraphQL Admin API, paced
//! by the calculated query cost so a full listing waits for points instead of being throttled,
//! and image downloads streamed from the CDN.
//!
//! Docs: <https://shopify.dev/docs/api/admin-graphql/latest/queries/products> and
//! <https://shopify.dev/docs/api/usage/limits#graphql-admin-api-rate-limits>.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haven_shopify::ShopDomain;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http;
use crate::{HttpSettings, ProviderError};

const PROVIDER: &str = "shopify";

/// The one catalogue query. Nested connections report `hasNextPage` so a product with more
/// variants or media than a page holds is flagged, never silently cut short.
pub const PRODUCTS_QUERY: &str = "query HavenCatalogProducts($first: Int!, $after: String, \
$query: String, $variants: Int!, $media: Int!, $variantMedia: Int!) {
  products(first: $first, after: $after, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      legacyResourceId
      title
      handle
      variants(first: $variants) {
        pageInfo { hasNextPage }
        nodes {
          id
          legacyResourceId
          title
          sku
          price
          media(first: $variantMedia) {
            pageInfo { hasNextPage }
            nodes { ... on MediaImage { id mimeType image { url } } }
          }
        }
      }
      media(first: $media) {
        pageInfo { hasNextPage }
        nodes { ... on MediaImage { id mimeType image { url } } }
      }
    }
  }
}";

/// Shopify refuses any single query whose requested cost exceeds this (`MAX_COST_EXCEEDED`),
/// whatever the bucket holds.
pub const MAX_QUERY_COST: u32 = 1000;
/// The largest `first` Shopify accepts on a connection.
pub const MAX_PAGE_SIZE: u32 = 250;
/// How many THROTTLED answers in a row a page may get before we give up.
const MAX_THROTTLED_ATTEMPTS: u32 = 10;
/// Retries of one page after 429, 5xx, Shopify's 200 `INTERNAL_SERVER_ERROR` or a transport
/// failure.
const MAX_RETRIES: u32 = 3;
/// Longest we honour a Retry-After, so a bogus header cannot park the job for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Wait after a THROTTLED answer that carried no throttle status to compute one from.
const THROTTLED_FALLBACK_WAIT: Duration = Duration::from_secs(1);
/// Least wait after a THROTTLED answer, so a bucket that disagrees with itself is not hammered.
const THROTTLED_MIN_WAIT: Duration = Duration::from_millis(100);
/// Default whole-download deadline for one image; large originals outlast the API timeout.
pub const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Page sizes of [`PRODUCTS_QUERY`].
///
/// Nested connections multiply the requested cost (products × variants × variant media), so
/// the sizes must keep [`CatalogPageSizes::requested_cost`] within [`MAX_QUERY_COST`]. The
/// bucket is refunded what was not returned, so throughput follows the catalogue's real size,
/// not these maxima.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CatalogPageSizes {
    /// `first` of `products`.
    pub products: u32,
    /// `first` of each product's `variants`; more are flagged by
    /// [`CatalogProduct::variants_truncated`].
    pub variants: u32,
    /// `first` of each product's `media`.
    pub media: u32,
    /// `first` of each variant's `media` (usually zero or one image).
    pub variant_media: u32,
}

impl Default for CatalogPageSizes {
    /// Requested cost 711, leaving headroom under [`MAX_QUERY_COST`].
    fn default() -> Self {
        CatalogPageSizes {
            products: 4,
            variants: 25,
            media: 10,
            variant_media: 1,
        }
    }
}

impl CatalogPageSizes {
    /// The requested cost Shopify computes for [`PRODUCTS_QUERY`] with these sizes: an object
    /// costs 1, a scalar 0, a connection 2 plus `first` times its node (plus its `pageInfo`
    /// object), and an interface the dearest of its selections (here `MediaImage` and its
    /// `image`). Used until Shopify has reported the real figure.
    pub fn requested_cost(&self) -> u32 {
        const OBJECT: u64 = 1;
        let connection = |first: u32, node: u64| 2 + u64::from(first) * node + OBJECT;
        let image = OBJECT + OBJECT;
        let variant = OBJECT + connection(self.variant_media, image);
        let product = OBJECT + connection(self.variants, variant) + connection(self.media, image);
        u32::try_from(connection(self.products, product)).unwrap_or(u32::MAX)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("products", self.products),
            ("variants", self.variants),
            ("media", self.media),
            ("variant_media", self.variant_media),
        ] {
            if !(1..=MAX_PAGE_SIZE).contains(&value) {
                return Err(format!("page size `{name}` must be 1 to {MAX_PAGE_SIZE}"));
            }
        }
        let cost = self.requested_cost();
        if cost > MAX_QUERY_COST {
            return Err(format!(
                "page sizes request {cost} points; Shopify refuses queries over {MAX_QUERY_COST}"
            ));
        }
        Ok(())
    }
}

/// One page of products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductsPage {
    pub products: Vec<CatalogProduct>,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

/// A product with its first variants and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProduct {
    /// `gid://shopify/Product/N`.
    pub id: String,
    /// The numeric id REST and the admin use.
    pub legacy_id: u64,
    pub title: String,
    pub handle: String,
    pub variants: Vec<CatalogVariant>,
    /// The product's images in order; other media (video, 3D) is skipped.
    pub media: Vec<CatalogImage>,
    /// The product has more variants than [`CatalogPageSizes::variants`].
    pub variants_truncated: bool,
    /// The product has more media than [`CatalogPageSizes::media`].
    pub media_truncated: bool,
}

/// A product variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogVariant {
    /// `gid://shopify/ProductVariant/N`.
    pub id: String,
    pub legacy_id: u64,
    pub title: String,
    pub sku: Option<String>,
    /// Decimal amount in the shop's currency, as Shopify sends it (`"19.99"`).
    pub price: Option<String>,
    /// Images attached to this variant; empty when it shows the product's.
    pub media: Vec<CatalogImage>,
    /// The variant has more media than [`CatalogPageSizes::variant_media`].
    pub media_truncated: bool,
}

impl CatalogVariant {
    /// The images a shopper sees for this variant: its own, else the product's.
    pub fn images<'a>(&'a self, product: &'a CatalogProduct) -> &'a [CatalogImage] {
        if self.media.is_empty() {
            &product.media
        } else {
            &self.media
        }
    }
}

/// An image (`MediaImage`) ready to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogImage {
    /// `gid://shopify/MediaImage/N`.
    pub id: String,
    /// Public CDN URL; no token needed.
    pub url: String,
    pub mime_type: Option<String>,
}

/// A streamed image download.
pub struct ImageDownload {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// The body in chunks as they arrive; never buffered whole.
    pub body: BoxStream<'static, Result<Bytes, CatalogError>>,
}

impl std::fmt::Debug for ImageDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDownload")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Why a catalogue call failed. Messages never contain the access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A non-2xx status other than 401/403; 429 and 5xx only after the client's own retries.
    #[error("Shopify answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// Timeout, refused connection or a broken body.
    #[error("Shopify could not be reached: {0}")]
    Transport(String),
    /// 401/403: the token is revoked or the app uninstalled.
    #[error("Shopify refused the access token; the merchant must reconnect the shop")]
    TokenRefused,
    /// A GraphQL error, such as a missing `read_products` scope; the first message.
    #[error("Shopify rejected the catalogue query: {0}")]
    Graphql(String),
    /// Shopify's HTTP 200 `INTERNAL_SERVER_ERROR`, after the client's own retries.
    #[error("Shopify failed internally: {0}")]
    Internal(String),
    /// THROTTLED this many times in a row despite waiting as the bucket said.
    #[error("Shopify throttled the catalogue query {attempts} times in a row")]
    Throttled { attempts: u32 },
    /// The query costs more than the shop's bucket can ever hold; waiting would never end.
    #[error(
        "the catalogue query costs {cost} points but the shop's bucket holds {maximum}; \
         lower the page sizes"
    )]
    CostExceedsBucket { cost: u32, maximum: u32 },
    /// A 2xx whose body is not the documented shape, or an unusable image URL.
    #[error("Shopify sent an unexpected response: {0}")]
    Decode(String),
}

impl CatalogError {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            CatalogError::Http { status, .. } => *status == 429 || *status >= 500,
            CatalogError::Transport(_)
            | CatalogError::Internal(_)
            | CatalogError::Throttled { .. } => true,
            CatalogError::TokenRefused
            | CatalogError::Graphql(_)
            | CatalogError::CostExceedsBucket { .. }
            | CatalogError::Decode(_) => false,
        }
    }
}

/// The file extension for an image content type (`image/png; charset=binary` → `png`).
pub fn extension_for(content_type: &str) -> Option<&'static str> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        "image/avif" => Some("avif"),
        "image/svg+xml" => Some("svg"),
        _ => None,
    }
}

/// Client for the catalogue of any shop. Clones share the per-shop throttle state, so every
/// task talking to one shop paces against the same bucket.
#[derive(Debug, Clone)]
pub struct ShopifyCatalogClient {
    url_template: String,
    api_version: String,
    sizes: CatalogPageSizes,
    image_timeout: Duration,
    http: reqwest::Client,
    throttle: Arc<Mutex<Throttle>>,
}

impl ShopifyCatalogClient {
    /// `url_template` as in `ShopifyConfig`: `https://{shop}` in production. Fails only if the
    /// template lacks `{shop}`, the version is malformed or TLS cannot start.
    pub fn new(
        url_template: &str,
        api_version: &str,
        http: &HttpSettings,
    ) -> Result<Self, ProviderError> {
        if !url_template.contains("{shop}") {
            return Err(settings_error("url_template must contain `{shop}`"));
        }
        http::normalize_base(PROVIDER, &url_template.replace("{shop}", "x.myshopify.com"))?;
        let version_ok = !api_version.is_empty()
            && api_version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !version_ok {
            return Err(settings_error(
                "api_version must look like `2025-10` or `unstable`",
            ));
        }
        Ok(ShopifyCatalogClient {
            url_template: url_template.trim().trim_end_matches('/').to_owned(),
            api_version: api_version.to_owned(),
            sizes: CatalogPageSizes::default(),
            image_timeout: DEFAULT_IMAGE_TIMEOUT,
            http: http::build_client(PROVIDER, http)?,
            throttle: Arc::default(),
        })
    }

    /// Replaces the page sizes; refused when a size is out of range or the query would cost
    /// more than Shopify accepts.
    pub fn with_page_sizes(mut self, sizes: CatalogPageSizes) -> Result<Self, ProviderError> {
        sizes.validate().map_err(settings_error)?;
        self.sizes = sizes;
        Ok(self)
    }

    /// Replaces the whole-download deadline of [`Self::fetch_image`].
    pub fn with_image_timeout(mut self, timeout: Duration) -> Self {
        self.image_timeout = timeout;
        self
    }

    pub fn page_sizes(&self) -> CatalogPageSizes {
        self.sizes
    }

    fn endpoint(&self, shop: &ShopDomain) -> String {
        format!(
            "{}/admin/api/{}/graphql.json",
            self.url_template.replace("{shop}", shop.as_str()),
            self.api_version
        )
    }

    /// One page of products after `after` (from the start when `None`).
    ///
    /// Waits first until the shop's bucket (as last reported, restored since) covers the
    /// query's cost; a THROTTLED answer is waited out and retried, 429/5xx are retried with
    /// backoff.
    pub async fn products_page(
        &self,
        shop: &ShopDomain,
        token: &SecretString,
        after: Option<&str>,
    ) -> Result<ProductsPage, CatalogError> {
        self.query_page(shop, token, self.sizes.products, after, None)
            .await
    }

    /// One product by its numeric id (Shopify's search syntax `id:N` on the same query), or
    /// `None` when the shop has no such product.
    pub async fn product(
        &self,
        shop: &ShopDomain,
        token: &SecretString,
        legacy_id: u64,
    ) -> Result<Option<CatalogProduct>, CatalogError> {
        let filter = format!("id:{legacy_id}");
        let page = self.query_page(shop, token, 1, None, Some(&filter)).await?;
        Ok(page.products.into_iter().find(|p| p.legacy_id == legacy_id))
    }

    async fn query_page(
        &self,
        shop: &ShopDomain,
        token: &SecretString,
        first: u32,
        after: Option<&str>,
        filter: Option<&str>,
    ) -> Result<ProductsPage, CatalogError> {
        let url = self.endpoint(shop);
        let body = json!({
            "query": PRODUCTS_QUERY,
            "variables": {
                "first": first,
                "after": after,
                "query": filter,
                "variants": self.sizes.variants,
                "media": self.sizes.media,
                "variantMedia": self.sizes.variant_media,
            },
        });
        let mut throttled = 0u32;
        let mut failures = 0u32;
        loop {
            let attempt = {
                let reservation = self.reserve(shop).await?;
                self.send(&url, shop, token, &body, &reservation).await
            };
            match attempt {
                Attempt::Page(page) => return Ok(page),
                Attempt::Fail(error) => return Err(error),
                Attempt::Throttled(wait) => {
                    throttled += 1;
                    if throttled >= MAX_THROTTLED_ATTEMPTS {
                        return Err(CatalogError::Throttled {
                            attempts: throttled,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry { error, retry_after } => {
                    failures += 1;
                    if failures > MAX_RETRIES {
                        return Err(error);
                    }
                    tokio::time::sleep(retry_delay(failures, retry_after)).await;
                }
            }
        }
    }

    /// Every product of the shop, following cursors to the end with one page in memory at a
    /// time. The stream ends after the first error.
    pub fn products<'a>(
        &'a self,
        shop: &'a ShopDomain,
        token: &'a SecretString,
    ) -> BoxStream<'a, Result<CatalogProduct, CatalogError>> {
        let start = Pager {
            cursor: None,
            buffered: Vec::new().into_iter(),
            more: true,
        };
        stream::unfold(Some(start), move |pager| async move {
            let mut pager = pager?;
            loop {
                if let Some(product) = pager.buffered.next() {
                    return Some((Ok(product), Some(pager)));
                }
                if !pager.more {
                    return None;
                }
                let page = match self
                    .products_page(shop, token, pager.cursor.as_deref())
                    .await
                {
                    Ok(page) => page,
                    Err(error) => return Some((Err(error), None)),
                };
                if page.has_next_page {
                    match page.end_cursor {
                        Some(next) if pager.cursor.as_deref() != Some(next.as_str()) => {
                            pager.cursor = Some(next);
                        }
                        // A cursor that does not advance would page forever.
                        _ => {
                            let error =
                                CatalogError::Decode("hasNextPage without a new endCursor".into());
                            return Some((Err(error), None));
                        }
                    }
                } else {
                    pager.more = false;
                }
                pager.buffered = page.products.into_iter();
            }
        })
        .boxed()
    }

    /// Starts downloading a CDN image (public: no token is sent).
    pub async fn fetch_image(&self, url: &str) -> Result<ImageDownload, CatalogError> {
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                CatalogError::Decode("image URL is not an absolute http(s) URL".into())
            })?;
        let response = self
            .http
            .get(parsed)
            .timeout(self.image_timeout)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(CatalogError::Http {
                status: status.as_u16(),
                message: status_text(status),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_length = response.content_length();
        let body = response
            .bytes_stream()
            .map_err(|e| transport_error(&e))
            .boxed();
        Ok(ImageDownload {
            content_type,
            content_length,
            body,
        })
    }

    fn throttle(&self) -> MutexGuard<'_, Throttle> {
        // The state is plain numbers; a panic elsewhere cannot leave it unusable.
        self.throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the shop's bucket covers the query's expected cost, then holds that cost
    /// until the answer is in, so concurrent callers do not spend the same points.
    async fn reserve<'a>(&'a self, shop: &'a ShopDomain) -> Result<Reservation<'a>, CatalogError> {
        loop {
            let wait = {
                let mut throttle = self.throttle();
                let cost = throttle
                    .requested
                    .get(&self.sizes)
                    .copied()
                    .unwrap_or_else(|| f64::from(self.sizes.requested_cost()));
                let state = throttle.shops.entry(shop.clone()).or_default();
                let now = Instant::now();
                match state.bucket.map(|b| b.wait_for(state.in_flight, cost, now)) {
                    // Nothing known yet: Shopify's first answer tells us.
                    None | Some(Wait::Ready) => {
                        state.in_flight += cost;
                        return Ok(Reservation {
                            throttle: &self.throttle,
                            shop,
                            cost,
                            sent: now,
                        });
                    }
                    Some(Wait::For(wait)) => wait,
                    Some(Wait::Never { maximum }) => {
                        return Err(CatalogError::CostExceedsBucket {
                            cost: points(cost),
                            maximum: points(maximum),
                        });
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Records the cost report every answer carries, errors included. A report on a query sent
    /// before the one the bucket last came from is older news and is ignored.
    fn observe(&self, shop: &ShopDomain, cost: &QueryCost, sent: Instant) {
        let mut throttle = self.throttle();
        if let Some(requested) = cost.requested_query_cost.filter(|c| c.is_finite()) {
            throttle.requested.insert(self.sizes, requested);
        }
        if let Some(status) = &cost.throttle_status {
            let state = throttle.shops.entry(shop.clone()).or_default();
            if state.bucket.is_none_or(|b| b.sent <= sent) {
                state.bucket = Some(Bucket::from_status(status, Instant::now(), sent));
            }
        }
    }

    async fn send(
        &self,
        url: &str,
        shop: &ShopDomain,
        token: &SecretString,
        body: &Value,
        reservation: &Reservation<'_>,
    ) -> Attempt {
        let request = self
            .http
            .post(url)
            .header("X-Shopify-Access-Token", token.expose_secret())
            .header(ACCEPT, "application/json")
            .json(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::retry(transport_error(&e), None),
        };
        let status = response.status();
        let retry_after = http::parse_retry_after(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Attempt::retry(transport_error(&e), None),
        };
        let mut envelope = serde_json::from_slice::<Envelope>(&bytes).ok();
        let cost = envelope
            .as_mut()
            .and_then(|e| e.extensions.take())
            .and_then(|e| e.cost);
        if let Some(cost) = &cost {
            self.observe(shop, cost, reservation.sent);
        }
        let secrets = [token.expose_secret()];

        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Attempt::Fail(CatalogError::TokenRefused);
        }
        if !status.is_success() {
            let message = envelope
                .as_ref()
                .and_then(|e| e.errors.as_ref())
                .and_then(first_error)
                .map(|(_, m)| http::tidy(&m, &secrets))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| status_text(status));
            let error = CatalogError::Http {
                status: status.as_u16(),
                message,
            };
            return if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Attempt::retry(error, retry_after)
            } else {
                Attempt::Fail(error)
            };
        }
        let Some(envelope) = envelope else {
            return Attempt::Fail(CatalogError::Decode(
                "body is not the documented GraphQL JSON".into(),
            ));
        };
        if let Some((code, message)) = envelope.errors.as_ref().and_then(first_error) {
            let message = http::tidy(&message, &secrets);
            return match code.as_deref().map(ErrorCode::parse) {
                Some(ErrorCode::Throttled) => {
                    let requested = cost
                        .as_ref()
                        .and_then(|c| c.requested_query_cost)
                        .unwrap_or(reservation.cost);
                    match cost.as_ref().and_then(|c| c.throttle_status.as_ref()) {
                        // No amount of waiting fills a bucket smaller than the query.
                        Some(s) if requested > s.maximum_available => {
                            Attempt::Fail(CatalogError::CostExceedsBucket {
                                cost: points(requested),
                                maximum: points(s.maximum_available),
                            })
                        }
                        Some(s) => Attempt::Throttled(throttled_wait(requested, s)),
                        None => Attempt::Throttled(THROTTLED_FALLBACK_WAIT),
                    }
                }
                Some(ErrorCode::InternalServerError) => {
                    Attempt::retry(CatalogError::Internal(message), None)
                }
                Some(ErrorCode::Other) | None => Attempt::Fail(CatalogError::Graphql(message)),
            };
        }
        let data = envelope.data.unwrap_or(Value::Null);
        match serde_json::from_value::<ProductsData>(data) {
            Ok(data) => Attempt::Page(data.products.into_page()),
            Err(e) => Attempt::Fail(CatalogError::Decode(http::tidy(
                &format!("products are not the documented shape: {e}"),
                &secrets,
            ))),
        }
    }
}

fn settings_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        provider: PROVIDER,
        status: 0,
        message: message.into(),
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Describes a transport failure without the URL the error's own Display names.
fn transport_error(err: &reqwest::Error) -> CatalogError {
    let message = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    CatalogError::Transport(message.into())
}

/// Rounds a cost for an error message.
fn points(cost: f64) -> u32 {
    // Saturating float-to-int cast; costs are small non-negative numbers.
    cost.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The wait before retrying after 429/5xx: Retry-After when given, else exponential from
/// half a second.
fn retry_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait.min(MAX_RETRY_AFTER),
        None => Duration::from_millis(500) * 2u32.pow(failures.saturating_sub(1).min(4)),
    }
}

/// How long a THROTTLED query must wait: until the bucket has restored its requested cost,
/// `(requested - currentlyAvailable) / restoreRate` seconds, as Shopify documents.
fn throttled_wait(requested: f64, status: &ThrottleStatus) -> Duration {
    if status.restore_rate.is_nan() || status.restore_rate <= 0.0 || !requested.is_finite() {
        return THROTTLED_FALLBACK_WAIT;
    }
    let missing = (requested - status.currently_available).max(0.0);
    Duration::from_secs_f64(missing / status.restore_rate)
        .clamp(THROTTLED_MIN_WAIT, MAX_RETRY_AFTER)
}

/// Per-shop pacing state; one per client, shared by its clones.
#[derive(Debug, Default)]
struct Throttle {
    shops: HashMap<ShopDomain, ShopThrottle>,
    /// The last `requestedQueryCost` Shopify reported per page sizes (clones may differ).
    requested: HashMap<CatalogPageSizes, f64>,
}

#[derive(Debug, Default)]
struct ShopThrottle {
    /// `None` until Shopify has reported the bucket.
    bucket: Option<Bucket>,
    /// Points held by queries sent but not yet answered.
    in_flight: f64,
}

/// Holds a query's expected cost against the shop's bucket until dropped, also when the
/// caller abandons the request midway.
struct Reservation<'a> {
    throttle: &'a Mutex<Throttle>,
    shop: &'a ShopDomain,
    cost: f64,
    sent: Instant,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut throttle = self
            .throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(state) = throttle.shops.get_mut(self.shop) {
            state.in_flight = (state.in_flight - self.cost).max(0.0);
        }
    }
}

/// Shopify's leaky bucket as last reported, projected forward by its restore rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    maximum: f64,
    available: f64,
    restore_rate: f64,
    /// When the report arrived.
    at: Instant,
    /// When the query it answered was sent.
    sent: Instant,
}

/// Whether a query can be sent now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wait {
    Ready,
    For(Duration),
    /// The cost exceeds the bucket's size.
    Never {
        maximum: f64,
    },
}

impl Bucket {
    fn from_status(status: &ThrottleStatus, at: Instant, sent: Instant) -> Bucket {
        Bucket {
            maximum: status.maximum_available,
            available: status.currently_available,
            restore_rate: status.restore_rate,
            at,
            sent,
        }
    }

    /// Points available at `now`: the reported figure plus what has leaked back, capped.
    fn available_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.available + self.restore_rate.max(0.0) * elapsed).min(self.maximum)
    }

    /// When `cost` more points are free, with `in_flight` points already promised to
    /// queries awaiting their answer.
    fn wait_for(&self, in_flight: f64, cost: f64, now: Instant) -> Wait {
        if cost > self.maximum {
            return Wait::Never {
                maximum: self.maximum,
            };
        }
        let missing = cost + in_flight - self.available_at(now);
        if missing <= 0.0 {
            return Wait::Ready;
        }
        if self.restore_rate.is_nan() || self.restore_rate <= 0.0 {
            return Wait::For(THROTTLED_FALLBACK_WAIT);
        }
        // A hair extra so float rounding never wakes us a moment too early.
        Wait::For(Duration::from_secs_f64(missing / self.restore_rate) + Duration::from_millis(1))
    }
}

/// The GraphQL error codes the client treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorCode {
    Throttled,
    InternalServerError,
    Other,
}

impl ErrorCode {
    fn parse(code: &str) -> ErrorCode {
        match code {
            "THROTTLED" => ErrorCode::Throttled,
            "INTERNAL_SERVER_ERROR" => ErrorCode::InternalServerError,
            _ => ErrorCode::Other,
        }
    }
}

/// The first error's `extensions.code` and message, from `errors` as a list or a string.
fn first_error(errors: &Value) -> Option<(Option<String>, String)> {
    match errors {
        Value::String(message) => Some((None, message.clone())),
        Value::Array(items) => {
            let first = items.first()?;
            let code = first
                .pointer("/extensions/code")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let message = first
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("GraphQL error without a message")
                .to_owned();
            Some((code, message))
        }
        Value::Object(_) => Some((None, errors.to_string())),
        _ => None,
    }
}

enum Attempt {
    Page(ProductsPage),
    /// THROTTLED; wait this long, then try again.
    Throttled(Duration),
    Retry {
        error: CatalogError,
        retry_after: Option<Duration>,
    },
    Fail(CatalogError),
}

impl Attempt {
    fn retry(error: CatalogError, retry_after: Option<Duration>) -> Attempt {
        Attempt::Retry { error, retry_after }
    }
}

struct Pager {
    cursor: Option<String>,
    buffered: std::vec::IntoIter<CatalogProduct>,
    more: bool,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Value>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

#[derive(Deserialize)]
struct Extensions {
    #[serde(default)]
    cost: Option<QueryCost>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryCost {
    #[serde(default)]
    requested_query_cost: Option<f64>,
    #[serde(default)]
    throttle_status: Option<ThrottleStatus>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThrottleStatus {
    maximum_available: f64,
    currently_available: f64,
    restore_rate: f64,
}

#[derive(Deserialize)]
struct ProductsData {
    products: Connection<RawProduct>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection<T> {
    #[serde(default)]
    page_info: Option<PageInfo>,
    nodes: Vec<T>,
}

impl<T> Connection<T> {
    fn has_next_page(&self) -> bool {
        self.page_info.as_ref().is_some_and(|p| p.has_next_page)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    #[serde(default)]
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProduct {
    id: String,
    #[serde(deserialize_with = "legacy_id")]
    legacy_resource_id: u64,
    title: String,
    handle: String,
    variants: Connection<RawVariant>,
    media: Connection<RawMedia>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVariant {
    id: String,
    #[serde(deserialize_with = "legacy_id")]
    legacy_resource_id: u64,
    title: String,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    price: Option<String>,
    media: Connection<RawMedia>,
}

/// A media node: only `MediaImage` selects fields, so other media arrives as `{}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMedia {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    image: Option<RawImage>,
}

#[derive(Deserialize)]
struct RawImage {
    #[serde(default)]
    url: Option<String>,
}

/// `UnsignedInt64`, which Shopify serialises as a string; a number is accepted too.
fn legacy_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom("legacyResourceId is not a number")),
    }
}

impl Connection<RawProduct> {
    fn into_page(self) -> ProductsPage {
        let (has_next_page, end_cursor) = match self.page_info {
            Some(info) => (info.has_next_page, info.end_cursor),
            None => (false, None),
        };
        ProductsPage {
            products: self
                .nodes
                .into_iter()
                .map(RawProduct::into_product)
                .collect(),
            end_cursor,
            has_next_page,
        }
    }
}

impl RawProduct {
    fn into_product(self) -> CatalogProduct {
        let variants_truncated = self.variants.has_next_page();
        let media_truncated = self.media.has_next_page();
        CatalogProduct {
            id: self.id,
            legacy_id: self.legacy_resource_id,
            title: self.title,
            handle: self.handle,
            variants: self
                .variants
                .nodes
                .into_iter()
                .map(RawVariant::into_variant)
                .collect(),
            media: images(self.media),
            variants_truncated,
            media_truncated,
        }
    }
}

impl RawVariant {
    fn into_variant(self) -> CatalogVariant {
        let media_truncated = self.media.has_next_page();
        CatalogVariant {
            id: self.id,
            legacy_id: self.legacy_resource_id,
            title: self.title,
            sku: self.sku.filter(|s| !s.is_empty()),
            price: self.price,
            media: images(self.media),
            media_truncated,
        }
    }
}

/// The images of a media connection; other media, and images still processing (no URL yet),
/// are skipped.
fn images(media: Connection<RawMedia>) -> Vec<CatalogImage> {
    media
        .nodes
        .into_iter()
        .filter_map(|m| {
            Some(CatalogImage {
                id: m.id?,
                url: m.image?.url?,
                mime_type: m.mime_type,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn status(maximum: f64, available: f64, rate: f64) -> ThrottleStatus {
        ThrottleStatus {
            maximum_available: maximum,
            currently_available: available,
            restore_rate: rate,
        }
    }

    #[test]
    fn bucket_restores_linearly_up_to_its_maximum() {
        let t0 = Instant::now();
        let bucket = Bucket::from_status(&status(2000.0, 100.0, 100.0), t0, t0);
        assert_eq!(bucket.available_at(t0), 100.0);
        assert_eq!(bucket.available_at(t0 + Duration::from_secs(3)), 400.0);
        assert_eq!(bucket.available_at(t0 + Duration::from_secs(60)), 2000.0);
        // A clock read before the report counts as no time passed.
        assert_eq!(bucket.available_at(t0 - Duration::from_secs(1)), 100.0);
    }

    #[test]
    fn bucket_wait_covers_the_missing_points_and_in_flight_queries() {
        let t0 = Instant::now();
        let bucket = Bucket::from_status(&status(1000.0, 200.0, 50.0), t0, t0);
        assert_eq!(bucket.wait_for(0.0, 200.0, t0), Wait::Ready);
        assert_eq!(bucket.wait_for(0.0, 150.0, t0), Wait::Ready);
        // 100 missing at 50/s: two seconds (plus the rounding hair).
        assert_eq!(
            bucket.wait_for(0.0, 300.0, t0),
            Wait::For(Duration::from_secs(2) + Duration::from_millis(1))
        );
        // The same one second later: one second.
        assert_eq!(
            bucket.wait_for(0.0, 300.0, t0 + Duration::from_secs(1)),
            Wait::For(Duration::from_secs(1) + Duration::from_millis(1))
        );
        assert_eq!(
            bucket.wait_for(0.0, 300.0, t0 + Duration::from_secs(2)),
            Wait::Ready
        );
        // Another query holding 100 points: 200 missing, four seconds.
        assert_eq!(
            bucket.wait_for(100.0, 300.0, t0),
            Wait::For(Duration::from_secs(4) + Duration::from_millis(1))
        );
        // More than the bucket can ever hold.
        assert_eq!(
            bucket.wait_for(0.0, 1001.0, t0),
            Wait::Never { maximum: 1000.0 }
        );
    }

    #[test]
    fn bucket_without_restore_rate_polls_instead_of_dividing_by_zero() {
        let t0 = Instant::now();
        let bucket = Bucket::from_status(&status(1000.0, 10.0, 0.0), t0, t0);
        assert_eq!(
            bucket.wait_for(0.0, 50.0, t0),
            Wait::For(THROTTLED_FALLBACK_WAIT)
        );
    }

    #[test]
    fn throttled_wait_is_the_documented_formula() {
        // (752 - 352) / 50 = 8 s.
        assert_eq!(
            throttled_wait(752.0, &status(1000.0, 352.0, 50.0)),
            Duration::from_secs(8)
        );
        assert_eq!(
            throttled_wait(752.0, &status(1000.0, 752.0, 50.0)),
            THROTTLED_MIN_WAIT
        );
        assert_eq!(
            throttled_wait(752.0, &status(1000.0, 0.0, 0.0)),
            THROTTLED_FALLBACK_WAIT
        );
        assert_eq!(
            throttled_wait(100_000.0, &status(1000.0, 0.0, 1.0)),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_delay_honours_retry_after_and_backs_off() {
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
        assert_eq!(retry_delay(1, None), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None), Duration::from_secs(1));
        assert_eq!(retry_delay(3, None), Duration::from_secs(2));
        assert_eq!(retry_delay(30, None), Duration::from_secs(8));
    }

    #[test]
    fn requested_cost_multiplies_nested_connections() {
        let one = CatalogPageSizes {
            products: 1,
            variants: 1,
            media: 1,
            variant_media: 1,
        };
        // image 2; variant 1 + (2 + 2 + 1) = 6; product 1 + (2 + 6 + 1) + (2 + 2 + 1) = 15;
        // products 2 + 15 + 1.
        assert_eq!(one.requested_cost(), 18);
        assert_eq!(CatalogPageSizes::default().requested_cost(), 711);
        assert!(CatalogPageSizes::default().validate().is_ok());
        let greedy = CatalogPageSizes {
            products: 25,
            variants: 100,
            media: 20,
            variant_media: 20,
        };
        assert!(greedy.requested_cost() > MAX_QUERY_COST);
        assert!(greedy.validate().is_err());
        let zero = CatalogPageSizes {
            products: 0,
            ..CatalogPageSizes::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn extensions_for_image_types() {
        for (content_type, ext) in [
            ("image/jpeg", Some("jpg")),
            ("IMAGE/JPEG", Some("jpg")),
            ("image/png; charset=binary", Some("png")),
            (" image/gif ", Some("gif")),
            ("image/webp", Some("webp")),
            ("image/avif", Some("avif")),
            ("image/svg+xml;charset=utf-8", Some("svg")),
            ("video/mp4", None),
            ("application/octet-stream", None),
            ("", None),
        ] {
            assert_eq!(extension_for(content_type), ext, "{content_type}");
        }
    }

    #[test]
    fn first_error_reads_code_and_message() {
        let errors = json!([{
            "message": "Throttled",
            "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev"}
        }]);
        assert_eq!(
            first_error(&errors),
            Some((Some("THROTTLED".into()), "Throttled".into()))
        );
        assert_eq!(
            first_error(&json!("[API] Invalid API key")),
            Some((None, "[API] Invalid API key".into()))
        );
        assert_eq!(first_error(&json!([])), None);
        assert_eq!(ErrorCode::parse("THROTTLED"), ErrorCode::Throttled);
        assert_eq!(ErrorCode::parse("ACCESS_DENIED"), ErrorCode::Other);
    }

    #[test]
    fn page_decodes_skipping_non_images_and_flagging_truncation() {
        let data = json!({"products": {
            "pageInfo": {"hasNextPage": true, "endCursor": "abc"},
            "nodes": [{
                "id": "gid://shopify/Product/1",
                "legacyResourceId": "1",
                "title": "Shirt",
                "handle": "shirt",
                "variants": {
                    "pageInfo": {"hasNextPage": true},
                    "nodes": [{
                        "id": "gid://shopify/ProductVariant/2",
                        "legacyResourceId": "2",
                        "title": "S",
                        "sku": "",
                        "price": "19.99",
                        "media": {"pageInfo": {"hasNextPage": false}, "nodes": []}
                    }]
                },
                "media": {
                    "pageInfo": {"hasNextPage": false},
                    "nodes": [
                        {},
                        {"id": "gid://shopify/MediaImage/3", "mimeType": "image/png",
                         "image": {"url": "https://cdn.example/3.png"}},
                        {"id": "gid://shopify/MediaImage/4", "mimeType": "image/png",
                         "image": null}
                    ]
                }
            }]
        }});
        let page = serde_json::from_value::<ProductsData>(data)
            .unwrap()
            .products
            .into_page();
        assert!(page.has_next_page);
        assert_eq!(page.end_cursor.as_deref(), Some("abc"));
        let product = &page.products[0];
        assert_eq!(product.legacy_id, 1);
        assert!(product.variants_truncated);
        assert!(!product.media_truncated);
        assert_eq!(product.media.len(), 1);
        assert_eq!(product.media[0].id, "gid://shopify/MediaImage/3");
        let variant = &product.variants[0];
        assert_eq!(variant.sku, None);
        assert_eq!(variant.price.as_deref(), Some("19.99"));
        // No media of its own: the product's.
        assert_eq!(variant.images(product), product.media.as_slice());
    }

    #[test]
    fn errors_never_show_the_token_and_classify() {
        assert!(
            CatalogError::Http {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !CatalogError::Http {
                status: 404,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(CatalogError::Throttled { attempts: 10 }.is_retryable());
        assert!(!CatalogError::TokenRefused.is_retryable());
        let tidied = http::tidy("bad token shpat_secret123", &["shpat_secret123"]);
        assert!(!tidied.contains("shpat_secret123"));
    }

    #[test]
    fn reports_on_older_queries_do_not_replace_newer_ones() {
        let client =
            ShopifyCatalogClient::new("https://{shop}", "2025-10", &HttpSettings::default())
                .unwrap();
        let shop = ShopDomain::parse("cool-store.myshopify.com").unwrap();
        let report = |available: f64| QueryCost {
            requested_query_cost: Some(90.0),
            throttle_status: Some(status(1000.0, available, 50.0)),
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        client.observe(&shop, &report(500.0), t1);
        client.observe(&shop, &report(900.0), t0);
        let available = |client: &ShopifyCatalogClient| {
            client.throttle().shops[&shop].bucket.unwrap().available
        };
        assert_eq!(available(&client), 500.0);
        client.observe(&shop, &report(300.0), t1 + Duration::from_millis(1));
        assert_eq!(available(&client), 300.0);
        assert_eq!(
            client
                .throttle()
                .requested
                .get(&CatalogPageSizes::default()),
            Some(&90.0)
        );
    }

    #[test]
    fn new_checks_template_and_version() {
        let http = HttpSettings::default();
        assert!(ShopifyCatalogClient::new("https://{shop}", "2025-10", &http).is_ok());
        assert!(ShopifyCatalogClient::new("https://example.com", "2025-10", &http).is_err());
        assert!(ShopifyCatalogClient::new("https://{shop}", "../x", &http).is_err());
        let client = ShopifyCatalogClient::new("https://{shop}/", "2025-10", &http).unwrap();
        let shop = ShopDomain::parse("cool-store.myshopify.com").unwrap();
        assert_eq!(
            client.endpoint(&shop),
            "https://cool-store.myshopify.com/admin/api/2025-10/graphql.json"
        );
    }
}
