//! Fake Shopify: authorization-code grant with expiring offline tokens, shop.json,
//! access_scopes.json and the REST webhooks resource, all under `/shopify/{shop}`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use haven_providers::shopify::{sign_callback, validate_shop_domain};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::FakeRoute;
use crate::state::{Shared, ShopifyCode, Webhook, json_response, random_hex};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/shopify/{shop}/admin/oauth/authorize", get(authorize))
        .route(
            "/shopify/{shop}/admin/oauth/access_token",
            post(access_token),
        )
        .route(
            "/shopify/{shop}/admin/oauth/access_scopes.json",
            get(access_scopes),
        )
        .route(
            "/shopify/{shop}/admin/api/{version}/shop.json",
            get(shop_json),
        )
        .route(
            "/shopify/{shop}/admin/api/{version}/webhooks.json",
            get(list_webhooks).post(create_webhook),
        )
        .route(
            "/shopify/{shop}/admin/api/{version}/webhooks/{file}",
            delete(delete_webhook),
        )
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, body.to_owned()).into_response()
}

/// Plays the merchant approving the install: redirects straight back with a signed callback.
async fn authorize(
    State(shared): State<Shared>,
    Path(shop): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyAuthorize) {
        return r;
    }
    let Ok(shop) = validate_shop_domain(&shop) else {
        return text(StatusCode::NOT_FOUND, "There's no store at this address.");
    };
    let mut world = shared.lock();
    if q.get("client_id") != Some(&world.config.shopify_client_id) {
        return text(
            StatusCode::BAD_REQUEST,
            "Oauth error invalid_request: The client_id is invalid",
        );
    }
    let Some(mut redirect) = q.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Oauth error invalid_request: The redirect_uri is missing or invalid",
        );
    };
    let scopes: Vec<String> = q
        .get("scope")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let code = random_hex(16);
    world.shopify_codes.insert(
        code.clone(),
        ShopifyCode {
            shop: shop.clone(),
            scopes,
        },
    );
    let store = shop.trim_end_matches(".myshopify.com");
    let host = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("admin.shopify.com/store/{store}"));
    let mut params = vec![
        ("code".to_owned(), code),
        ("host".to_owned(), host),
        ("shop".to_owned(), shop),
        (
            "timestamp".to_owned(),
            chrono::Utc::now().timestamp().to_string(),
        ),
    ];
    if let Some(state) = q.get("state") {
        params.push(("state".to_owned(), state.clone()));
    }
    let hmac = sign_callback(&params, &world.config.shopify_client_secret);
    drop(world);
    {
        let mut pairs = redirect.query_pairs_mut();
        for (k, v) in &params {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("hmac", &hmac);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// Reads a token request body, JSON (as Shopify's library sends) or form-encoded.
fn body_fields(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return HashMap::new();
        };
        map.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// `POST /admin/oauth/access_token`: code exchange (single-use codes) and refresh (rotating).
async fn access_token(
    State(shared): State<Shared>,
    Path(shop): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.token_delay().await;
    if let Some(r) = shared.injected(FakeRoute::ShopifyToken) {
        return r;
    }
    let fields = body_fields(&headers, &body);
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let mut world = shared.lock();
    if field("client_id") != world.config.shopify_client_id
        || field("client_secret") != world.config.shopify_client_secret.expose_secret()
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let ttl = world.config.access_token_ttl.as_secs();
    let refresh_ttl: u64 = 90 * 24 * 3600;

    if field("grant_type") == "refresh_token" {
        world.count_refresh("shopify");
        if world.revoked.contains("shopify") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token has been revoked",
            );
        }
        let token = field("refresh_token").to_owned();
        let grant = match world.refresh.get(&token) {
            Some(g) if g.provider == "shopify" && g.shop.as_deref() == Some(shop.as_str()) => {
                world.refresh.remove(&token)
            }
            _ => None,
        };
        let Some(grant) = grant else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token is invalid, expired or already used",
            );
        };
        let scope = grant.scopes.join(",");
        let (access, refresh) = world.issue("shopify", grant.shop, grant.scopes, true, Some(true));
        return expiring_token(access, refresh, &scope, ttl, refresh_ttl);
    }

    let code = world
        .shopify_codes
        .remove(field("code"))
        .filter(|c| c.shop == shop);
    let Some(code) = code else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The authorization code was not found or was already used",
        );
    };
    let scope = code.scopes.join(",");
    if field("expiring") == "1" {
        let (access, refresh) = world.issue("shopify", Some(shop), code.scopes, true, Some(true));
        expiring_token(access, refresh, &scope, ttl, refresh_ttl)
    } else {
        let (access, _) = world.issue("shopify", Some(shop), code.scopes, false, None);
        json_response(
            StatusCode::OK,
            json!({"access_token": access, "scope": scope}),
        )
    }
}

/// An expiring offline token as Shopify documents it, with its refresh token.
fn expiring_token(
    access: String,
    refresh: Option<String>,
    scope: &str,
    ttl: u64,
    refresh_ttl: u64,
) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "access_token": access,
            "scope": scope,
            "expires_in": ttl,
            "refresh_token": refresh,
            "refresh_token_expires_in": refresh_ttl,
        }),
    )
}

/// Checks `X-Shopify-Access-Token`; `Err` is Shopify's 401.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    shop: &str,
) -> Result<Vec<String>, Box<Response>> {
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    shared
        .lock()
        .check_access("shopify", token, Some(shop))
        .ok_or_else(|| {
            Box::new(json_response(
                StatusCode::UNAUTHORIZED,
                json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
            ))
        })
}

async fn access_scopes(
    State(shared): State<Shared>,
    Path(shop): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyAccessScopes) {
        return r;
    }
    match authenticate(&shared, &headers, &shop) {
        Ok(scopes) => json_response(
            StatusCode::OK,
            json!({"access_scopes": scopes.iter().map(|s| json!({"handle": s})).collect::<Vec<_>>()}),
        ),
        Err(r) => *r,
    }
}

/// "cool-store" -> "Cool Store".
fn shop_name(shop: &str) -> String {
    shop.trim_end_matches(".myshopify.com")
        .split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn shop_json(
    State(shared): State<Shared>,
    Path((shop, _version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyShop) {
        return r;
    }
    if let Err(r) = authenticate(&shared, &headers, &shop) {
        return *r;
    }
    let id = shop.bytes().fold(548_380_009u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % 10_000_000_000;
    json_response(
        StatusCode::OK,
        json!({"shop": {
            "id": id,
            "name": shop_name(&shop),
            "email": format!("owner@{shop}"),
            "domain": shop,
            "myshopify_domain": shop,
            "currency": "USD",
            "iana_timezone": "UTC",
            "plan_name": "basic",
        }}),
    )
}

fn webhook_json(w: &Webhook, version: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    json!({
        "id": w.id,
        "topic": w.topic,
        "address": w.address,
        "format": "json",
        "created_at": now,
        "updated_at": now,
        "fields": [],
        "metafield_namespaces": [],
        "api_version": version,
    })
}

async fn list_webhooks(
    State(shared): State<Shared>,
    Path((shop, version)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyListWebhooks) {
        return r;
    }
    if let Err(r) = authenticate(&shared, &headers, &shop) {
        return *r;
    }
    let world = shared.lock();
    let hooks: Vec<Value> = world
        .webhooks
        .get(&shop)
        .into_iter()
        .flatten()
        .filter(|w| q.get("topic").is_none_or(|t| *t == w.topic))
        .filter(|w| q.get("address").is_none_or(|a| *a == w.address))
        .map(|w| webhook_json(w, &version))
        .collect();
    json_response(StatusCode::OK, json!({"webhooks": hooks}))
}

fn valid_topic(topic: &str) -> bool {
    let mut parts = topic.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

async fn create_webhook(
    State(shared): State<Shared>,
    Path((shop, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyCreateWebhook) {
        return r;
    }
    if let Err(r) = authenticate(&shared, &headers, &shop) {
        return *r;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hook = &parsed["webhook"];
    let topic = hook["topic"].as_str().unwrap_or_default().to_owned();
    let address = hook["address"].as_str().unwrap_or_default().to_owned();
    if !valid_topic(&topic) {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": {"topic": ["Invalid topic specified."]}}),
        );
    }
    if !url::Url::parse(&address).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": {"address": ["is invalid"]}}),
        );
    }
    let mut world = shared.lock();
    let duplicate = world.webhooks.get(&shop).is_some_and(|hooks| {
        hooks
            .iter()
            .any(|w| w.topic == topic && w.address == address)
    });
    if duplicate {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": {"address": ["for this topic has already been taken"]}}),
        );
    }
    let id = world.next_webhook_id;
    world.next_webhook_id += 1;
    let hook = Webhook { id, topic, address };
    let body = json!({"webhook": webhook_json(&hook, &version)});
    world.webhooks.entry(shop).or_default().push(hook);
    json_response(StatusCode::CREATED, body)
}

async fn delete_webhook(
    State(shared): State<Shared>,
    Path((shop, _version, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ShopifyDeleteWebhook) {
        return r;
    }
    if let Err(r) = authenticate(&shared, &headers, &shop) {
        return *r;
    }
    let id = file
        .strip_suffix(".json")
        .and_then(|id| id.parse::<u64>().ok());
    let mut world = shared.lock();
    let hooks = world.webhooks.entry(shop).or_default();
    let before = hooks.len();
    hooks.retain(|w| Some(w.id) != id);
    if hooks.len() == before {
        return json_response(StatusCode::NOT_FOUND, json!({"errors": "Not Found"}));
    }
    json_response(StatusCode::OK, json!({}))
}
