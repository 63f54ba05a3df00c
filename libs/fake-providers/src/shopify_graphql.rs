//! Fake Shopify GraphQL Admin API and CDN: the `products` catalogue query, charged against a
//! per-shop leaky bucket by calculated query cost as Shopify documents it, and the images the
//! catalogue points at, generated on request.
//!
//! It does not parse GraphQL: any query containing `products(` is answered from its variables
//! (`first`, `after`, `variants`, `media`, `variantMedia`) in the shape of the
//! `haven_providers::shopify_catalog` query.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::FakeRoute;
use crate::state::{Shared, json_response};

/// Shopify refuses queries whose requested cost exceeds this (`MAX_COST_EXCEEDED`).
const MAX_QUERY_COST: u32 = 1000;
/// The largest `first` Shopify accepts.
const MAX_PAGE_SIZE: u64 = 250;
/// Shopify's standard plan: bucket size and points restored per second.
const DEFAULT_MAXIMUM: f64 = 2000.0;
const DEFAULT_RESTORE_RATE: f64 = 100.0;
/// Image bodies go out in chunks of this many bytes (a multiple of 8, see `FakeMedia::chunk`).
const IMAGE_CHUNK: usize = 16 * 1024;
/// Ids of one catalogue: products, variants and media each get a third of the stride.
const ID_STRIDE: u64 = 10_000_000_000;
/// Seeds of the catalogues shops get when a test set none, clear of the seeds tests pick.
const DEFAULT_SEED_BASE: u64 = 900_000;
const RATE_LIMIT_DOCS: &str = "https://shopify.dev/api/usage/rate-limits";

/// A shop's products, as the fake serves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeCatalog {
    pub products: Vec<FakeProduct>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProduct {
    pub id: u64,
    pub title: String,
    pub variants: Vec<FakeVariant>,
    pub media: Vec<FakeMedia>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVariant {
    pub id: u64,
    pub title: String,
    pub sku: Option<String>,
    /// Decimal string, as Shopify's `Money` scalar.
    pub price: String,
    /// Media attached to the variant; Shopify also lists it among the product's media.
    pub media: Vec<FakeMedia>,
}

/// A media item; image bytes are generated from `id` and `size` when fetched, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeMedia {
    pub id: u64,
    pub kind: FakeMediaKind,
    /// Bytes served by the CDN (ignored for video).
    pub size: usize,
}

/// What a media item is; video comes back as `{}` from the `... on MediaImage` fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeMediaKind {
    Png,
    Jpeg,
    Video,
}

impl FakeMediaKind {
    /// The MIME type Shopify reports and the CDN serves.
    pub fn content_type(self) -> &'static str {
        match self {
            FakeMediaKind::Png => "image/png",
            FakeMediaKind::Jpeg => "image/jpeg",
            FakeMediaKind::Video => "video/mp4",
        }
    }

    /// The file extension of the CDN URL.
    pub fn extension(self) -> &'static str {
        match self {
            FakeMediaKind::Png => "png",
            FakeMediaKind::Jpeg => "jpg",
            FakeMediaKind::Video => "mp4",
        }
    }

    /// Whether the catalogue serves it as a `MediaImage`.
    pub fn is_image(self) -> bool {
        match self {
            FakeMediaKind::Png | FakeMediaKind::Jpeg => true,
            FakeMediaKind::Video => false,
        }
    }

    /// The format's signature, so the bytes sniff as the type they claim.
    fn magic(self) -> &'static [u8] {
        match self {
            FakeMediaKind::Png => b"\x89PNG\r\n\x1a\n",
            FakeMediaKind::Jpeg => b"\xff\xd8\xff\xe0",
            FakeMediaKind::Video => b"",
        }
    }
}

impl FakeMedia {
    /// The whole body the CDN serves, for tests to compare against.
    pub fn bytes(&self) -> Vec<u8> {
        self.chunk(0, self.size)
    }

    /// `len` bytes from `offset`: the format signature, then a splitmix64 stream keyed by id,
    /// so any chunk can be made without the ones before it.
    fn chunk(&self, offset: usize, len: usize) -> Vec<u8> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset));
        let mut i = offset;
        while i < end {
            let word = splitmix64(self.id ^ (i as u64 / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let from = i % 8;
            let take = (8 - from).min(end - i);
            out.extend_from_slice(&word.to_le_bytes()[from..from + take]);
            i += take;
        }
        for (j, b) in self.kind.magic().iter().enumerate() {
            if let Some(slot) = j.checked_sub(offset).and_then(|k| out.get_mut(k)) {
                *slot = *b;
            }
        }
        out
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FakeCatalog {
    /// `products` products with `variants_per_product` variants and `images_per_product`
    /// images each (PNG and JPEG alternating, 2–8 KB). Variant `i` has image `i` of its product
    /// attached when there is one; later variants show the product's images.
    ///
    /// Ids derive from `seed`, so catalogues with different seeds (below 10^8, say a shop
    /// number) never share an id.
    pub fn generate(
        products: usize,
        variants_per_product: usize,
        images_per_product: usize,
        seed: u64,
    ) -> FakeCatalog {
        let base = seed.wrapping_add(1).wrapping_mul(ID_STRIDE);
        let third = ID_STRIDE / 3;
        let products = (0..products)
            .map(|p| {
                let id = base + 1 + p as u64;
                let media: Vec<FakeMedia> = (0..images_per_product)
                    .map(|m| {
                        let id = base + 2 * third + 1 + (p * images_per_product + m) as u64;
                        FakeMedia {
                            id,
                            kind: if m % 2 == 0 {
                                FakeMediaKind::Png
                            } else {
                                FakeMediaKind::Jpeg
                            },
                            size: 2_000 + (id % 7) as usize * 1_000,
                        }
                    })
                    .collect();
                let variants = (0..variants_per_product)
                    .map(|v| {
                        let id = base + third + 1 + (p * variants_per_product + v) as u64;
                        FakeVariant {
                            id,
                            title: format!("Option {}", v + 1),
                            sku: Some(format!("SKU-{}-{}", p + 1, v + 1)),
                            price: format!("{}.{:02}", 10 + p % 90, (v * 25) % 100),
                            media: media.get(v).copied().into_iter().collect(),
                        }
                    })
                    .collect();
                FakeProduct {
                    id,
                    title: format!("Fake Product {}", p + 1),
                    variants,
                    media,
                }
            })
            .collect();
        FakeCatalog { products }
    }

    /// The catalogue of a demo shape: its product and variant ids (so seeded events are about
    /// these products), `images_per_product` images each, attached as [`FakeCatalog::generate`]
    /// attaches them.
    pub fn shaped(shape: &haven_shopify::CatalogShape, images_per_product: usize) -> FakeCatalog {
        let products = usize::try_from(shape.products).unwrap_or(0);
        let variants = usize::try_from(shape.variants_per_product).unwrap_or(0);
        // Media ids from the shop's name, so two demo shops never share one.
        let seed = shape
            .shop_domain
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 100_000;
        let mut catalog = FakeCatalog::generate(products, variants, images_per_product, seed);
        for (p, product) in catalog.products.iter_mut().enumerate() {
            product.id = shape.product_id(p as u64);
            for (v, variant) in product.variants.iter_mut().enumerate() {
                variant.id = shape.variant_id(p as u64, v as u64);
            }
        }
        catalog
    }

    pub fn variant_count(&self) -> usize {
        self.products.iter().map(|p| p.variants.len()).sum()
    }

    /// Distinct images (variant media is also product media, as in Shopify).
    pub fn image_count(&self) -> usize {
        self.media_index()
            .values()
            .filter(|m| m.kind.is_image())
            .count()
    }

    fn media_index(&self) -> HashMap<u64, FakeMedia> {
        let mut index = HashMap::new();
        for product in &self.products {
            let variant_media = product.variants.iter().flat_map(|v| &v.media);
            for media in product.media.iter().chain(variant_media) {
                index.insert(media.id, *media);
            }
        }
        index
    }
}

/// What the GraphQL endpoint did for one shop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GraphqlStats {
    /// Queries executed (and charged).
    pub queries: u32,
    /// Queries answered THROTTLED (not charged).
    pub throttled: u32,
    /// The lowest the bucket fell right after charging a query's requested cost, before the
    /// refund; below zero would mean it was overdrawn. `None` before the first query.
    pub min_available_after_charge: Option<f64>,
}

/// The fake's GraphQL and CDN state, kept in [`crate::state::World`].
pub(crate) struct GraphqlWorld {
    maximum: f64,
    restore_rate: f64,
    shops: HashMap<String, ShopState>,
    next_default_seed: u64,
    image_failures: HashMap<u64, (u16, u32)>,
    image_fetches: HashMap<u64, u32>,
    image_fetches_total: u64,
}

struct ShopState {
    catalog: Arc<FakeCatalog>,
    media: HashMap<u64, FakeMedia>,
    /// Points available as of `at`.
    available: f64,
    at: Instant,
    stats: GraphqlStats,
}

impl ShopState {
    /// Leaks back what has been restored since the last update.
    fn restore(&mut self, maximum: f64, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + rate * elapsed).min(maximum);
        self.at = now;
    }
}

impl Default for GraphqlWorld {
    fn default() -> Self {
        GraphqlWorld {
            maximum: DEFAULT_MAXIMUM,
            restore_rate: DEFAULT_RESTORE_RATE,
            shops: HashMap::new(),
            next_default_seed: DEFAULT_SEED_BASE,
            image_failures: HashMap::new(),
            image_fetches: HashMap::new(),
            image_fetches_total: 0,
        }
    }
}

impl GraphqlWorld {
    /// The shop's state; a shop nobody configured gets a small generated catalogue, so the
    /// dev stack has something to list, and a full bucket.
    fn shop(&mut self, shop: &str) -> &mut ShopState {
        let maximum = self.maximum;
        let seed = &mut self.next_default_seed;
        self.shops.entry(shop.to_owned()).or_insert_with(|| {
            let catalog = FakeCatalog::generate(12, 2, 2, *seed);
            *seed += 1;
            ShopState {
                media: catalog.media_index(),
                catalog: Arc::new(catalog),
                available: maximum,
                at: Instant::now(),
                stats: GraphqlStats::default(),
            }
        })
    }

    pub fn set_catalog(&mut self, shop: &str, catalog: FakeCatalog) {
        let state = self.shop(shop);
        state.media = catalog.media_index();
        state.catalog = Arc::new(catalog);
    }

    pub fn set_limits(&mut self, maximum: f64, restore_rate: f64) {
        let now = Instant::now();
        let (old_maximum, old_rate) = (self.maximum, self.restore_rate);
        self.maximum = maximum;
        self.restore_rate = restore_rate;
        for state in self.shops.values_mut() {
            state.restore(old_maximum, old_rate, now);
            state.available = state.available.min(maximum);
        }
    }

    pub fn drain(&mut self, shop: &str) {
        let state = self.shop(shop);
        state.available = 0.0;
        state.at = Instant::now();
    }

    pub fn stats(&self, shop: &str) -> GraphqlStats {
        self.shops.get(shop).map(|s| s.stats).unwrap_or_default()
    }

    pub fn fail_image(&mut self, media_id: u64, status: u16, times: u32) {
        if times == 0 {
            self.image_failures.remove(&media_id);
        } else {
            self.image_failures.insert(media_id, (status, times));
        }
    }

    pub fn image_fetches(&self, media_id: u64) -> u32 {
        self.image_fetches.get(&media_id).copied().unwrap_or(0)
    }

    pub fn image_fetches_total(&self) -> u64 {
        self.image_fetches_total
    }

    /// The shop's bucket as `extensions.cost.throttleStatus` reports it.
    fn throttle_status(&self, shop: &str) -> Value {
        let available = self.shops.get(shop).map_or(self.maximum, |s| s.available);
        json!({
            "maximumAvailable": self.maximum,
            // Whole points, rounded down: a client is never told of points it does not have.
            "currentlyAvailable": available.max(0.0).floor(),
            "restoreRate": self.restore_rate,
        })
    }
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/shopify/{shop}/admin/api/{version}/graphql.json",
            post(graphql),
        )
        .route("/shopify-cdn/{shop}/files/{file}", get(image))
}

/// The variables the catalogue query sends.
struct Variables {
    first: u64,
    after: Option<String>,
    /// Shopify's search syntax; the fake understands `id:N` only.
    query: Option<String>,
    variants: u64,
    media: u64,
    variant_media: u64,
}

impl Variables {
    fn parse(variables: &Value) -> Result<Variables, String> {
        let size = |name: &str| -> Result<Option<u64>, String> {
            match variables.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= MAX_PAGE_SIZE => Ok(Some(n)),
                    _ => Err(format!(
                        "Variable ${name} of type Int! was provided invalid value \
                         (at most {MAX_PAGE_SIZE})"
                    )),
                },
            }
        };
        let required = |name: &str| -> Result<u64, String> {
            size(name)?
                .ok_or_else(|| format!("Variable ${name} of type Int! was provided invalid value"))
        };
        let media = required("media")?;
        Ok(Variables {
            first: required("first")?,
            after: match variables.get("after") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err("Variable $after of type String was provided invalid value".into());
                }
            },
            query: match variables.get("query") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err("Variable $query of type String was provided invalid value".into());
                }
            },
            variants: required("variants")?,
            media,
            variant_media: size("variantMedia")?.unwrap_or(media),
        })
    }

    /// Shopify's requested cost: an object 1, a scalar 0, a connection 2 plus `first` times
    /// its node (plus its `pageInfo` object), an interface its dearest selection (a
    /// `MediaImage` and its `image`).
    fn requested_cost(&self) -> u32 {
        let connection = |first: u64, node: u64| 2 + first * node + 1;
        let image = 2;
        let variant = 1 + connection(self.variant_media, image);
        let product = 1 + connection(self.variants, variant) + connection(self.media, image);
        u32::try_from(connection(self.first, product)).unwrap_or(u32::MAX)
    }
}

fn encode_cursor(index: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("fake-products:{index}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("fake-products:")?
        .parse()
        .ok()
}

/// A GraphQL error answer (HTTP 200, as Shopify sends them).
fn graphql_error(message: &str, code: &str, cost: Option<Value>) -> Response {
    let mut body = json!({
        "errors": [{"message": message, "extensions": {"code": code}}],
    });
    if let Some(cost) = cost {
        body["extensions"] = json!({"cost": cost});
    }
    json_response(StatusCode::OK, body)
}

/// `POST /admin/api/{version}/graphql.json`: the products catalogue query.
async fn graphql(
    State(shared): State<Shared>,
    Path((shop, _version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyGraphql) {
        return r;
    }
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if shared
        .lock()
        .check_access("shopify", token, Some(&shop))
        .is_none()
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"errors": {"query": "Required parameter missing or invalid"}}),
        );
    };
    if !query.contains("products(") {
        return graphql_error(
            "fake: only the products catalogue query is supported",
            "BAD_REQUEST",
            None,
        );
    }
    let vars = match Variables::parse(request.get("variables").unwrap_or(&Value::Null)) {
        Ok(vars) => vars,
        Err(message) => return graphql_error(&message, "INVALID_VARIABLE", None),
    };
    let start = match vars.after.as_deref().map(decode_cursor) {
        None => 0,
        Some(Some(last)) => last + 1,
        Some(None) => {
            return graphql_error(
                "Invalid cursor for current pagination sort.",
                "BAD_REQUEST",
                None,
            );
        }
    };
    let requested = vars.requested_cost();

    let (catalog, cdn) = {
        let mut guard = shared.lock();
        let world = &mut *guard;
        let cdn = format!("{}/shopify-cdn/{shop}/files", world.base_url);
        let graphql = &mut world.shopify_graphql;
        let (maximum, rate) = (graphql.maximum, graphql.restore_rate);
        let state = graphql.shop(&shop);
        state.restore(maximum, rate, Instant::now());
        let charged = state.available - f64::from(requested);
        if requested > MAX_QUERY_COST || charged < 0.0 {
            let over = requested > MAX_QUERY_COST;
            if !over {
                state.stats.throttled += 1;
            }
            let cost = json!({
                "requestedQueryCost": requested,
                "actualQueryCost": null,
                "throttleStatus": graphql.throttle_status(&shop),
            });
            drop(guard);
            return if over {
                let message = format!(
                    "Query cost is {requested}, which exceeds the single query max cost limit \
                     ({MAX_QUERY_COST})."
                );
                graphql_error(&message, "MAX_COST_EXCEEDED", Some(cost))
            } else {
                throttled(cost)
            };
        }
        state.available = charged;
        state.stats.queries += 1;
        state.stats.min_available_after_charge = Some(
            state
                .stats
                .min_available_after_charge
                .map_or(charged, |min| min.min(charged)),
        );
        (Arc::clone(&state.catalog), cdn)
    };

    let (products, actual) = match vars.query.as_deref() {
        None => render_products(&catalog.products, &vars, start, &cdn),
        Some(filter) => {
            let id = filter
                .strip_prefix("id:")
                .and_then(|id| id.trim().parse::<u64>().ok());
            let matching: Vec<FakeProduct> = catalog
                .products
                .iter()
                .filter(|p| Some(p.id) == id)
                .cloned()
                .collect();
            render_products(&matching, &vars, start, &cdn)
        }
    };

    let throttle_status = {
        let mut guard = shared.lock();
        let graphql = &mut guard.shopify_graphql;
        let (maximum, rate) = (graphql.maximum, graphql.restore_rate);
        let state = graphql.shop(&shop);
        state.restore(maximum, rate, Instant::now());
        // Shopify refunds what the query was charged but did not use.
        state.available =
            (state.available + f64::from(requested.saturating_sub(actual))).min(maximum);
        graphql.throttle_status(&shop)
    };
    json_response(
        StatusCode::OK,
        json!({
            "data": {"products": products},
            "extensions": {"cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": throttle_status,
            }},
        }),
    )
}

/// Shopify's THROTTLED answer: HTTP 200, nothing charged.
fn throttled(cost: Value) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "errors": [{
                "message": "Throttled",
                "extensions": {"code": "THROTTLED", "documentation": RATE_LIMIT_DOCS},
            }],
            "extensions": {"cost": cost},
        }),
    )
}

/// One page of products and its actual cost: what the requested cost would be had every
/// connection asked for exactly what it returned.
fn render_products(
    products: &[FakeProduct],
    vars: &Variables,
    start: usize,
    cdn: &str,
) -> (Value, u32) {
    let first = usize::try_from(vars.first).unwrap_or(usize::MAX);
    let end = start.saturating_add(first).min(products.len());
    let page = products.get(start..end).unwrap_or_default();
    let mut cost = 3;
    let nodes: Vec<Value> = page
        .iter()
        .map(|p| {
            let (node, c) = render_product(p, vars, cdn);
            cost += c;
            node
        })
        .collect();
    let end_cursor = (!page.is_empty()).then(|| encode_cursor(end - 1));
    let value = json!({
        "pageInfo": {"hasNextPage": end < products.len(), "endCursor": end_cursor},
        "nodes": nodes,
    });
    (value, cost)
}

fn render_product(product: &FakeProduct, vars: &Variables, cdn: &str) -> (Value, u32) {
    let (variants, variants_cost) = connection(&product.variants, vars.variants, |v| {
        let (media, media_cost) =
            connection(&v.media, vars.variant_media, |m| render_media(m, cdn));
        let node = json!({
            "id": format!("gid://shopify/ProductVariant/{}", v.id),
            "legacyResourceId": v.id.to_string(),
            "title": v.title,
            "sku": v.sku,
            "price": v.price,
            "media": media,
        });
        (node, 1 + media_cost)
    });
    let (media, media_cost) = connection(&product.media, vars.media, |m| render_media(m, cdn));
    let node = json!({
        "id": format!("gid://shopify/Product/{}", product.id),
        "legacyResourceId": product.id.to_string(),
        "title": product.title,
        "handle": handle(&product.title),
        "variants": variants,
        "media": media,
    });
    (node, 1 + variants_cost + media_cost)
}

/// A nested connection: its first `first` nodes, `hasNextPage`, and its actual cost.
fn connection<T>(items: &[T], first: u64, render: impl Fn(&T) -> (Value, u32)) -> (Value, u32) {
    let shown = usize::try_from(first)
        .unwrap_or(usize::MAX)
        .min(items.len());
    let mut cost = 3;
    let nodes: Vec<Value> = items[..shown]
        .iter()
        .map(|item| {
            let (node, c) = render(item);
            cost += c;
            node
        })
        .collect();
    let value = json!({
        "pageInfo": {"hasNextPage": items.len() > shown},
        "nodes": nodes,
    });
    (value, cost)
}

/// A `MediaImage` with its CDN URL; other media matches no fragment and is `{}`.
fn render_media(media: &FakeMedia, cdn: &str) -> (Value, u32) {
    if !media.kind.is_image() {
        return (json!({}), 1);
    }
    let node = json!({
        "id": format!("gid://shopify/MediaImage/{}", media.id),
        "mimeType": media.kind.content_type(),
        "image": {"url": format!("{cdn}/{}.{}?v=1", media.id, media.kind.extension())},
    });
    (node, 2)
}

/// "Fake Product 1" -> "fake-product-1".
fn handle(title: &str) -> String {
    title
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// `GET /shopify-cdn/{shop}/files/{media_id}.{ext}`: the image's bytes, streamed.
async fn image(
    State(shared): State<Shared>,
    Path((shop, file)): Path<(String, String)>,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyImage) {
        return r;
    }
    let not_found = || (StatusCode::NOT_FOUND, "Not Found").into_response();
    let Some((id, ext)) = file.split_once('.') else {
        return not_found();
    };
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let media = {
        let mut world = shared.lock();
        let graphql = &mut world.shopify_graphql;
        let media = graphql
            .shops
            .get(&shop)
            .and_then(|s| s.media.get(&id))
            .copied()
            .filter(|m| m.kind.is_image() && m.kind.extension() == ext);
        let Some(media) = media else {
            return not_found();
        };
        if let Some((status, left)) = graphql.image_failures.get_mut(&id) {
            let status = *status;
            *left = left.saturating_sub(1);
            if *left == 0 {
                graphql.image_failures.remove(&id);
            }
            drop(world);
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (code, format!("fake: injected {status}")).into_response();
            if status == 429 {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return response;
        }
        *graphql.image_fetches.entry(id).or_insert(0) += 1;
        graphql.image_fetches_total += 1;
        media
    };
    let chunks = (0..media.size)
        .step_by(IMAGE_CHUNK)
        .map(move |offset| Ok::<_, Infallible>(Bytes::from(media.chunk(offset, IMAGE_CHUNK))));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, media.kind.content_type().to_owned()),
            (header::CONTENT_LENGTH, media.size.to_string()),
        ],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generated_ids_are_unique_and_disjoint_between_seeds() {
        let a = FakeCatalog::generate(50, 4, 3, 1);
        let b = FakeCatalog::generate(50, 4, 3, 2);
        let ids = |c: &FakeCatalog| {
            let mut ids: Vec<u64> = c.products.iter().map(|p| p.id).collect();
            ids.extend(
                c.products
                    .iter()
                    .flat_map(|p| p.variants.iter().map(|v| v.id)),
            );
            ids.extend(c.media_index().keys());
            ids
        };
        let mut all = ids(&a);
        all.extend(ids(&b));
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
        assert_eq!(a.variant_count(), 200);
        assert_eq!(a.image_count(), 150);
    }

    #[test]
    fn image_bytes_are_deterministic_chunkable_and_typed() {
        let media = FakeMedia {
            id: 42,
            kind: FakeMediaKind::Png,
            size: 40_000,
        };
        let whole = media.bytes();
        assert_eq!(whole.len(), 40_000);
        assert!(whole.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(whole, media.bytes());
        let mut joined = Vec::new();
        for offset in (0..media.size).step_by(IMAGE_CHUNK) {
            joined.extend(media.chunk(offset, IMAGE_CHUNK));
        }
        assert_eq!(joined, whole);
        assert_eq!(media.chunk(3, 10), whole[3..13]);
        let other = FakeMedia { id: 43, ..media };
        assert_ne!(other.bytes(), whole);
    }

    #[test]
    fn requested_cost_follows_shopify_formula() {
        let vars = Variables {
            first: 3,
            after: None,
            query: None,
            variants: 3,
            media: 2,
            variant_media: 1,
        };
        // variant 1 + (2 + 2 + 1) = 6; product 1 + (2 + 18 + 1) + (2 + 4 + 1) = 29;
        // products 2 + 87 + 1.
        assert_eq!(vars.requested_cost(), 90);
    }

    #[test]
    fn forty_thousand_variants_page_without_walking_the_catalogue() {
        let catalog = FakeCatalog::generate(10_000, 4, 2, 7);
        assert_eq!(catalog.variant_count(), 40_000);
        let vars = Variables {
            first: 25,
            after: None,
            query: None,
            variants: 10,
            media: 5,
            variant_media: 1,
        };
        let (page, actual) = render_products(&catalog.products, &vars, 9_990, "http://cdn");
        assert_eq!(page["nodes"].as_array().unwrap().len(), 10);
        assert_eq!(page["pageInfo"]["hasNextPage"], false);
        assert!(actual < vars.requested_cost());
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(17)), Some(17));
        assert_eq!(decode_cursor("nonsense"), None);
    }
}
