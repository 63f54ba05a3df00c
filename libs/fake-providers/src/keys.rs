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
use crate::state::{Shared, json_response, random_hex};

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
        .route("/resend/emails", axum::routing::post(resend_send))
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

/// Resend's Send Email: a valid key (sending-only keys too), `from`, `to` and `subject`
/// required, attachments as base64. An `Idempotency-Key` seen before with the same body
/// answers the first email's id and sends nothing; with another body it is 409, as Resend
/// documents.
async fn resend_send(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use base64::Engine as _;
    if let Some(r) = shared.injected(FakeRoute::ResendEmails) {
        return r;
    }
    let key = bearer(&headers);
    {
        let world = shared.lock();
        if key.is_empty()
            || !(world.resend_send_only.contains(key)
                || world
                    .api_keys
                    .get("resend")
                    .is_some_and(|k| k.contains(key)))
        {
            return resend_error(
                StatusCode::FORBIDDEN,
                "invalid_api_key",
                "API key is invalid",
            );
        }
    }
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return resend_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "The body is not JSON.",
        );
    };
    let text = |k: &str| parsed.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let to: Vec<String> = match parsed.get("to") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let (Some(from), Some(subject)) = (text("from"), text("subject")) else {
        return resend_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_required_field",
            "`from` and `subject` are required.",
        );
    };
    if to.is_empty() {
        return resend_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_required_field",
            "`to` is required.",
        );
    }
    let mut attachments = Vec::new();
    for a in parsed
        .get("attachments")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let filename = a
            .get("filename")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let Some(content) = a
            .get("content")
            .and_then(|v| v.as_str())
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        else {
            return resend_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "An attachment's content is not base64.",
            );
        };
        attachments.push((filename, content));
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut world = shared.lock();
    if let Some(k) = &idempotency_key
        && let Some((id, first_body)) = world.resend_idempotency.get(k)
    {
        if *first_body != body.to_vec() {
            return resend_error(
                StatusCode::CONFLICT,
                "invalid_idempotent_request",
                "Same idempotency key used with a different request payload.",
            );
        }
        return json_response(StatusCode::OK, json!({ "id": id }));
    }
    let id = random_hex(16);
    if let Some(k) = &idempotency_key {
        world
            .resend_idempotency
            .insert(k.clone(), (id.clone(), body.to_vec()));
    }
    world.resend_emails.push(crate::SentEmail {
        id: id.clone(),
        from,
        to,
        subject,
        text: text("text").unwrap_or_default(),
        html: text("html"),
        attachments,
        idempotency_key,
    });
    json_response(StatusCode::OK, json!({ "id": id }))
}
