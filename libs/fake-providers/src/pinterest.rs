//! Fake Pinterest: the consent page, `POST /v5/oauth/token` (Basic auth, form body, PKCE when a
//! challenge was sent, continuous refresh), `/v5/user_account` and bookmark-paginated
//! `/v5/boards`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use haven_providers::pkce;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::FakeRoute;
use crate::state::{PinterestCode, Shared, json_response, random_hex};

/// Boards the fake account starts with.
const BOARD_COUNT: usize = 12;
/// The fake serves at most this many boards per page (Pinterest may return fewer than asked
/// than the 250 it allows), so clients must follow `bookmark` to see them all.
const MAX_PAGE: usize = 100;

/// The account's boards until a test sets others.
pub(crate) fn default_boards() -> Vec<crate::FakeBoard> {
    (0..BOARD_COUNT)
        .map(|i| crate::FakeBoard {
            id: format!("54917615{:04}", i + 1),
            name: format!("Board {}", i + 1),
            pin_count: (i * 3) as i64,
        })
        .collect()
}
/// Continuous refresh tokens last 60 days.
const REFRESH_TTL_SECS: i64 = 60 * 24 * 3600;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/pinterest/oauth/", get(authorize))
        .route("/pinterest/oauth", get(authorize))
        .route("/pinterest/v5/oauth/token", post(token))
        .route("/pinterest/v5/user_account", get(user_account))
        .route("/pinterest/v5/boards", get(boards))
}

fn error(status: StatusCode, code: u16, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

/// Plays the user clicking "Give access": redirects back with `code` and `state`.
async fn authorize(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::PinterestAuthorize) {
        return r;
    }
    let mut world = shared.lock();
    if q.get("client_id") != Some(&world.config.pinterest_client_id) {
        return (StatusCode::BAD_REQUEST, "invalid client_id").into_response();
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return (StatusCode::BAD_REQUEST, "response_type must be code").into_response();
    }
    let Some(redirect_uri) = q.get("redirect_uri").cloned() else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is required").into_response();
    };
    let Ok(mut redirect) = url::Url::parse(&redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is invalid").into_response();
    };
    let challenge = q.get("code_challenge").cloned();
    if challenge.is_some() && q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return (
            StatusCode::BAD_REQUEST,
            "code_challenge_method must be S256",
        )
            .into_response();
    }
    let scopes = q
        .get("scope")
        .map(|s| {
            s.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let code = random_hex(20);
    world.pinterest_codes.insert(
        code.clone(),
        PinterestCode {
            redirect_uri,
            scopes,
            challenge,
        },
    );
    drop(world);
    {
        let mut pairs = redirect.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = q.get("state") {
            pairs.append_pair("state", state);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// `client_id:client_secret` from a Basic Authorization header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// A token response as Pinterest documents it; `refresh` is present when one was issued.
fn token_body(
    access: String,
    refresh: Option<String>,
    ttl: u64,
    scope: &str,
    refresh_expires_at: i64,
    response_type: &str,
) -> Response {
    let mut body = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": ttl,
        "scope": scope,
        "response_type": response_type,
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
        body["refresh_token_expires_in"] = json!(REFRESH_TTL_SECS);
        body["refresh_token_expires_at"] = json!(refresh_expires_at);
    }
    json_response(StatusCode::OK, body)
}

fn grant_error(description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"code": 1, "message": description, "error": "invalid_grant", "error_description": description}),
    )
}

async fn token(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    shared.token_delay().await;
    if let Some(r) = shared.injected(FakeRoute::PinterestToken) {
        return r;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut world = shared.lock();
    let authenticated = basic_credentials(&headers).is_some_and(|(id, secret)| {
        id == world.config.pinterest_client_id
            && secret == world.config.pinterest_client_secret.expose_secret()
    });
    if !authenticated {
        return error(StatusCode::UNAUTHORIZED, 2, "Authentication failed.");
    }
    let ttl = world.config.access_token_ttl.as_secs();
    let refresh_expires_at = chrono::Utc::now().timestamp() + REFRESH_TTL_SECS;
    match field("grant_type") {
        "authorization_code" => {
            let Some(code) = world.pinterest_codes.remove(field("code")) else {
                return grant_error("Invalid authorization code.");
            };
            if code.redirect_uri != field("redirect_uri") {
                return grant_error("redirect_uri does not match the authorization request.");
            }
            if let Some(challenge) = &code.challenge {
                let verifier = SecretString::from(field("code_verifier"));
                if verifier.expose_secret().is_empty()
                    || pkce::challenge_s256(&verifier) != *challenge
                {
                    return grant_error("code_verifier does not match the code_challenge.");
                }
            }
            let continuous = field("continuous_refresh") == "true";
            let scope = code.scopes.join(" ");
            let (access, refresh) =
                world.issue("pinterest", None, code.scopes, true, Some(continuous));
            token_body(
                access,
                refresh,
                ttl,
                &scope,
                refresh_expires_at,
                "authorization_code",
            )
        }
        "refresh_token" => {
            world.count_refresh("pinterest");
            if world.revoked.contains("pinterest") {
                return grant_error("Refresh token has been revoked.");
            }
            let old = field("refresh_token").to_owned();
            let Some(grant) = world
                .refresh
                .get(&old)
                .filter(|g| g.provider == "pinterest")
            else {
                return grant_error("Invalid refresh token.");
            };
            let (scopes, rotating) = (grant.scopes.clone(), grant.rotating);
            let scope = scopes.join(" ");
            if rotating {
                world.refresh.remove(&old);
                let (access, refresh) = world.issue("pinterest", None, scopes, true, Some(true));
                token_body(
                    access,
                    refresh,
                    ttl,
                    &scope,
                    refresh_expires_at,
                    "refresh_token",
                )
            } else {
                let (access, _) = world.issue("pinterest", None, scopes, true, None);
                token_body(access, None, ttl, &scope, 0, "refresh_token")
            }
        }
        _ => json_response(
            StatusCode::BAD_REQUEST,
            json!({"code": 1, "message": "Unsupported grant_type.", "error": "unsupported_grant_type"}),
        ),
    }
}

fn bearer_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    shared
        .lock()
        .check_access("pinterest", token, None)
        .is_some()
}

async fn user_account(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = shared.injected(FakeRoute::PinterestUserAccount) {
        return r;
    }
    if !bearer_ok(&shared, &headers) {
        return error(StatusCode::UNAUTHORIZED, 2, "Authentication failed.");
    }
    json_response(
        StatusCode::OK,
        json!({
            "account_type": "BUSINESS",
            "id": "2783136121146311751",
            "username": "havenhold",
            "business_name": "Haven Hold",
            "board_count": shared.lock().pinterest_boards.len(),
            "follower_count": 10,
            "following_count": 3,
            "monthly_views": 163,
            "pin_count": 339,
            "profile_image": "https://i.pinimg.com/fake.jpg",
            "website_url": "https://havenhold.test",
        }),
    )
}

async fn boards(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = shared.injected(FakeRoute::PinterestBoards) {
        return r;
    }
    if !bearer_ok(&shared, &headers) {
        return error(StatusCode::UNAUTHORIZED, 2, "Authentication failed.");
    }
    let page_size = match q.get("page_size").map(|s| s.parse::<usize>()) {
        None => 25,
        Some(Ok(n)) if (1..=250).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, 1, "page_size must be 1..250"),
    }
    .min(MAX_PAGE);
    let start = match q.get("bookmark") {
        None => 0,
        Some(b) => match URL_SAFE_NO_PAD
            .decode(b)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            }) {
            Some(n) => n,
            None => return error(StatusCode::BAD_REQUEST, 1, "Invalid bookmark."),
        },
    };
    let boards = shared.lock().pinterest_boards.clone();
    let start = start.min(boards.len());
    let end = (start + page_size).min(boards.len());
    let items: Vec<Value> = boards[start..end]
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "name": b.name,
                "description": "",
                "privacy": "PUBLIC",
                "pin_count": b.pin_count,
                "follower_count": 0,
                "owner": {"username": "havenhold"},
            })
        })
        .collect();
    let bookmark = (end < boards.len()).then(|| URL_SAFE_NO_PAD.encode(format!("offset:{end}")));
    json_response(
        StatusCode::OK,
        json!({"items": items, "bookmark": bookmark}),
    )
}
