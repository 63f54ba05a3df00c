//! Fake API-key providers: Klaviyo (`/klaviyo`), Dynamic Mockups (`/dynamic-mockups`),
//! Resend (`/resend`) and Sky Pilot (`/sky-pilot`), each with its own auth convention.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use crate::FakeRoute;
use crate::state::{Shared, json_response};

/// Lists every fake Klaviyo account has.
const KLAVIYO_LISTS: [&str; 3] = ["Newsletter", "VIP Customers", "Abandoned Checkout"];
/// Klaviyo pages lists; the fake uses a small page so clients must follow `links.next`.
const KLAVIYO_PAGE: usize = 2;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/klaviyo/api/accounts/", get(klaviyo_accounts))
        .route("/klaviyo/api/accounts", get(klaviyo_accounts))
        .route("/klaviyo/api/lists/", get(klaviyo_lists))
        .route("/klaviyo/api/lists", get(klaviyo_lists))
        .route("/dynamic-mockups/api/v1/mockups", get(dynamic_mockups))
        .route("/resend/domains", get(resend_domains))
        .route("/sky-pilot/v1/account", get(sky_pilot_account))
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> &str {
    header_str(headers, header::AUTHORIZATION)
        .strip_prefix("Bearer ")
        .unwrap_or_default()
}

fn klaviyo_error(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    json_response(
        status,
        json!({"errors": [{
            "id": crate::state::random_hex(16),
            "status": status.as_u16(),
            "code": code,
            "title": title,
            "detail": detail,
            "source": {"pointer": "/data/"},
        }]}),
    )
}

/// Klaviyo's checks: a dated `revision` header and `Authorization: Klaviyo-API-Key <key>`.
/// `Some` is the refusal to send.
fn klaviyo_refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    if header_str(headers, "revision").is_empty() {
        return Some(klaviyo_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Invalid input.",
            "The revision header is required.",
        ));
    }
    let key = header_str(headers, header::AUTHORIZATION)
        .strip_prefix("Klaviyo-API-Key ")
        .unwrap_or_default();
    if key.is_empty() {
        return Some(klaviyo_error(
            StatusCode::UNAUTHORIZED,
            "not_authenticated",
            "Authentication credentials were not provided.",
            "Missing or invalid private key.",
        ));
    }
    if !shared.key_valid("klaviyo", key) {
        return Some(klaviyo_error(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "Incorrect authentication credentials.",
            "Incorrect authentication credentials.",
        ));
    }
    None
}

async fn klaviyo_accounts(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = shared.injected(FakeRoute::KlaviyoAccounts) {
        return r;
    }
    if let Some(r) = klaviyo_refusal(&shared, &headers) {
        return r;
    }
    let base = shared.lock().base_url.clone();
    json_response(
        StatusCode::OK,
        json!({
            "data": [{
                "type": "account",
                "id": "FakeAcct1",
                "attributes": {
                    "contact_information": {
                        "default_sender_name": "Haven Hold",
                        "default_sender_email": "hello@havenhold.test",
                        "website_url": "https://havenhold.test",
                        "organization_name": "Haven Hold",
                    },
                    "industry": "Home",
                    "timezone": "UTC",
                    "preferred_currency": "USD",
                    "public_api_key": "FakeAcct1",
                    "locale": "en-US",
                },
                "links": {"self": format!("{base}/klaviyo/api/accounts/FakeAcct1/")},
            }],
            "links": {"self": format!("{base}/klaviyo/api/accounts/"), "next": null, "prev": null},
        }),
    )
}

async fn klaviyo_lists(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::KlaviyoLists) {
        return r;
    }
    if let Some(r) = klaviyo_refusal(&shared, &headers) {
        return r;
    }
    let start: usize = match q.get("page[cursor]").map(|c| c.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return klaviyo_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "Invalid input.",
                "Invalid page cursor.",
            );
        }
    };
    let end = (start + KLAVIYO_PAGE).min(KLAVIYO_LISTS.len());
    let base = shared.lock().base_url.clone();
    let data: Vec<Value> = KLAVIYO_LISTS
        .iter()
        .enumerate()
        .skip(start)
        .take(end.saturating_sub(start))
        .map(|(i, name)| {
            json!({
                "type": "list",
                "id": format!("LiSt{i:02}"),
                "attributes": {"name": name, "opt_in_process": "single_opt_in"},
            })
        })
        .collect();
    let next = (end < KLAVIYO_LISTS.len())
        .then(|| format!("{base}/klaviyo/api/lists/?page%5Bcursor%5D={end}"));
    json_response(
        StatusCode::OK,
        json!({"data": data, "links": {"self": format!("{base}/klaviyo/api/lists/"), "next": next, "prev": null}}),
    )
}

async fn dynamic_mockups(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = shared.injected(FakeRoute::DynamicMockupsMockups) {
        return r;
    }
    let key = header_str(&headers, "x-api-key");
    if !shared.key_valid("dynamic_mockups", key) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"success": false, "message": "Unauthenticated."}),
        );
    }
    json_response(
        StatusCode::OK,
        json!({
            "data": [{
                "uuid": "89fbfcb5-e8c0-4e48-bc94-b7e289734cbc",
                "name": "Framed Poster",
                "thumbnail": "https://dynamicmockups.test/thumb.jpg",
                "smart_objects": [],
                "text_layers": [],
                "collections": [],
                "thumbnails": [],
            }],
            "success": true,
            "message": "",
        }),
    )
}

fn resend_error(status: StatusCode, name: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"statusCode": status.as_u16(), "message": message, "name": name}),
    )
}

async fn resend_domains(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = shared.injected(FakeRoute::ResendDomains) {
        return r;
    }
    let key = bearer(&headers);
    if key.is_empty() {
        return resend_error(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Missing API key in the authorization header.",
        );
    }
    if shared.lock().resend_send_only.contains(key) {
        return resend_error(
            StatusCode::UNAUTHORIZED,
            "restricted_api_key",
            "This API key is restricted to only send emails",
        );
    }
    if !shared.key_valid("resend", key) {
        return resend_error(
            StatusCode::FORBIDDEN,
            "invalid_api_key",
            "API key is invalid",
        );
    }
    json_response(
        StatusCode::OK,
        json!({
            "object": "list",
            "has_more": false,
            "data": [{
                "id": "4dd369bc-aa82-4ff3-97de-514ae3000ee0",
                "name": "mail.havenhold.test",
                "status": "verified",
                "created_at": "2024-01-01 00:00:00.000000+00",
                "region": "us-east-1",
                "capabilities": {"sending": "enabled", "receiving": "disabled"},
            }],
        }),
    )
}

async fn sky_pilot_account(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = shared.injected(FakeRoute::SkyPilotAccount) {
        return r;
    }
    if !shared.key_valid("sky_pilot", bearer(&headers)) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Unauthenticated."}),
        );
    }
    json_response(
        StatusCode::OK,
        json!({"shop": "havenhold.myshopify.com", "plan": "pro"}),
    )
}
