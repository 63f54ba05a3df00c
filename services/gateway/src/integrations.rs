//! The integrations settings page and the setup wizard (README, "Integrations"), backed by the
//! integrations service:
//! - `GET /api/integrations`: every provider with the tenant's connection, by setup order;
//! - `GET /api/integrations/{provider}/install?shop=`: the one-time start link, as a 302 or,
//!   with `Accept: application/json`, as `{"authorize_url": …}` for a page to navigate to;
//! - `GET /api/integrations/{provider}/start?ticket=` (public): binds the attempt to this
//!   browser with an HttpOnly cookie and redirects to the provider's consent page;
//! - `GET /api/integrations/{provider}/callback` (public): a 302 back to the web app, only
//!   for the browser carrying the start link's cookie;
//! - `POST /api/integrations/{provider}/connect` `{apiKey}`; `DELETE /api/integrations/{provider}`;
//! - `GET /api/settings/setup-progress`, `PATCH /api/settings/setup-progress/{step}` `{status}`;
//! - `GET /api/integrations/pinterest/boards`, `GET /api/integrations/activity?limit=`.
//!
//! The callback is public because the browser arrives from the provider without our bearer
//! token; the single-use OAuth state the service checks is what authenticates it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_proto::integrations::v1 as pb;
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use haven_providers::Provider;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::json::{nonempty, time_str};
use crate::{ApiError, AppState, upstream};

/// Routes that need the caller's bearer token.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(disconnect))
        .routes(routes!(install))
        .routes(routes!(connect))
        .routes(routes!(setup_progress))
        .routes(routes!(update_setup_step))
        .routes(routes!(pinterest_boards))
        .routes(routes!(activity))
}

/// Routes a browser reaches without our token.
pub fn public_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(callback))
}

fn client(state: &AppState) -> IntegrationsServiceClient<Channel> {
    IntegrationsServiceClient::new(state.upstreams.integrations.clone())
}

/// The `{provider}` of a route, checked here so an unknown one never reaches the service.
pub fn parse_provider(key: &str) -> Result<Provider, ApiError> {
    Provider::parse(key).map_err(|e| ApiError::invalid("provider", e))
}

/// The web app's `IntegrationStatus` words; PENDING is its "connecting".
pub fn status_str(status: i32) -> &'static str {
    match pb::IntegrationStatus::try_from(status) {
        Ok(pb::IntegrationStatus::Pending) => "connecting",
        Ok(pb::IntegrationStatus::Connected) => "connected",
        Ok(pb::IntegrationStatus::Error) => "error",
        Ok(pb::IntegrationStatus::Expired) => "expired",
        Ok(pb::IntegrationStatus::Disconnected | pb::IntegrationStatus::Unspecified) | Err(_) => {
            "disconnected"
        }
    }
}

/// The web app's `authType` words, or `None` when the service did not say.
pub fn auth_type_str(auth_type: i32) -> Option<&'static str> {
    match pb::AuthType::try_from(auth_type) {
        Ok(pb::AuthType::Oauth) => Some("oauth"),
        Ok(pb::AuthType::ApiKey) => Some("api_key"),
        Ok(pb::AuthType::Unspecified) | Err(_) => None,
    }
}

/// Account details in the web app's `IntegrationMetadata` shapes (snake_case); `{}` when none
/// are known. Sky Pilot has no details beyond whether it is connected.
pub fn metadata_json(provider: &str, integration: Option<&pb::Integration>) -> Value {
    use pb::integration::Metadata;
    // A key the registry no longer lists has no details to show.
    let sky_pilot = match Provider::parse(provider) {
        Ok(Provider::SkyPilot) => true,
        Ok(
            Provider::Shopify
            | Provider::Pinterest
            | Provider::Klaviyo
            | Provider::DynamicMockups
            | Provider::Resend,
        )
        | Err(_) => false,
    };
    let Some(integration) = integration else {
        return if sky_pilot {
            json!({ "connected": false })
        } else {
            json!({})
        };
    };
    match &integration.metadata {
        Some(Metadata::Shopify(m)) => json!({
            "shop_domain": m.shop_domain,
            "shop_name": m.shop_name,
            "access_scopes": integration.scopes,
        }),
        Some(Metadata::Pinterest(m)) => json!({
            "account_name": m.account_name,
            "account_id": m.account_id,
            "board_count": m.board_count,
        }),
        Some(Metadata::Klaviyo(m)) => {
            let mut o = Map::new();
            o.insert("list_count".into(), json!(m.list_count));
            if !m.default_list_id.is_empty() {
                o.insert("default_list_id".into(), json!(m.default_list_id));
            }
            Value::Object(o)
        }
        Some(Metadata::DynamicMockups(m)) => json!({
            "credits_remaining": m.credits_remaining,
            "plan": m.plan,
        }),
        Some(Metadata::Resend(m)) => {
            // `from_email` stays for clients that read it; the domain is what Resend knows.
            let mut o = Map::new();
            o.insert("domain_verified".into(), json!(m.domain_verified));
            o.insert("from_email".into(), json!(m.from_email));
            if !m.from_domain.is_empty() {
                o.insert("from_domain".into(), json!(m.from_domain));
            }
            Value::Object(o)
        }
        None if sky_pilot => json!({
            "connected": integration.status == pb::IntegrationStatus::Connected as i32,
        }),
        None => json!({}),
    }
}

/// One entry of `GET /api/integrations`: the provider's registry entry and the tenant's
/// connection to it (a never-connected provider is "disconnected" with null fields), in the
/// web app's `Integration` shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    /// Null until the tenant first connects.
    id: Option<String>,
    provider: String,
    name: Option<String>,
    description: Option<String>,
    icon: Option<String>,
    /// `oauth` or `api_key`.
    auth_type: Option<String>,
    required: Option<bool>,
    setup_order: Option<i32>,
    docs_url: Option<String>,
    /// connected, connecting, disconnected, error or expired.
    status: String,
    /// Account details, per provider (e.g. Shopify's shop_domain, shop_name, access_scopes).
    #[schema(value_type = Object)]
    metadata: Value,
    scopes: Vec<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    token_expires_at: Option<String>,
    last_refreshed_at: Option<String>,
    connected_at: Option<String>,
    disconnected_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

pub fn integration_view(
    provider: Option<&pb::Provider>,
    integration: Option<&pb::Integration>,
) -> IntegrationView {
    let key = provider
        .map(|p| p.key.as_str())
        .or(integration.map(|i| i.provider.as_str()))
        .unwrap_or_default();
    let auth_type = match provider {
        Some(p) => auth_type_str(p.auth_type),
        None => auth_type_str(integration.map(|i| i.auth_type).unwrap_or_default()),
    };
    let i = integration;
    let at = |f: fn(&pb::Integration) -> Option<prost_types::Timestamp>| time_str(i.and_then(f));
    IntegrationView {
        id: i.and_then(|i| nonempty(i.id.clone())),
        provider: key.to_owned(),
        name: provider.map(|p| p.name.clone()),
        description: provider.map(|p| p.description.clone()),
        icon: provider.map(|p| p.icon.clone()),
        auth_type: auth_type.map(str::to_owned),
        required: provider.map(|p| p.required),
        setup_order: provider.map(|p| p.setup_order),
        docs_url: provider.map(|p| p.docs_url.clone()),
        status: i
            .map_or("disconnected", |i| status_str(i.status))
            .to_owned(),
        metadata: metadata_json(key, i),
        scopes: i.map(|i| i.scopes.clone()).unwrap_or_default(),
        last_error: i.and_then(|i| nonempty(i.last_error.clone())),
        last_error_at: at(|i| i.last_error_at),
        token_expires_at: at(|i| i.token_expires_at),
        last_refreshed_at: at(|i| i.last_refreshed_at),
        connected_at: at(|i| i.connected_at),
        disconnected_at: at(|i| i.disconnected_at),
        created_at: at(|i| i.created_at),
        updated_at: at(|i| i.updated_at),
    }
}

/// Every provider by setup order, each with the tenant's integration if there is one;
/// integrations of providers the registry no longer lists come last.
pub fn merge(
    mut providers: Vec<pb::Provider>,
    integrations: &[pb::Integration],
) -> Vec<IntegrationView> {
    providers.sort_by_key(|p| p.setup_order);
    let by_provider: HashMap<&str, &pb::Integration> = integrations
        .iter()
        .map(|i| (i.provider.as_str(), i))
        .collect();
    let mut out: Vec<IntegrationView> = providers
        .iter()
        .map(|p| integration_view(Some(p), by_provider.get(p.key.as_str()).copied()))
        .collect();
    out.extend(
        integrations
            .iter()
            .filter(|i| !providers.iter().any(|p| p.key == i.provider))
            .map(|i| integration_view(None, Some(i))),
    );
    out
}

/// Every provider by setup order, each with the tenant's connection to it.
#[utoipa::path(get, operation_id = "listIntegrations", path = "/integrations", tag = "integrations",
    responses((status = 200, body = Vec<IntegrationView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<IntegrationView>>, ApiError> {
    let mut a = client(&state);
    let mut b = a.clone();
    let (providers, integrations) = tokio::try_join!(
        a.list_providers(upstream::request(&headers, pb::ListProvidersRequest {})),
        b.list_integrations(upstream::request(&headers, pb::ListIntegrationsRequest {})),
    )?;
    Ok(Json(merge(
        providers.into_inner().providers,
        &integrations.into_inner().integrations,
    )))
}

/// One integration in the list's shape. The registry entry is looked up alongside; if only
/// that lookup fails, the action still succeeded, so the answer is the integration alone.
async fn one(
    state: &AppState,
    headers: &HeaderMap,
    integration: pb::Integration,
) -> Json<IntegrationView> {
    let providers = client(state)
        .list_providers(upstream::request(headers, pb::ListProvidersRequest {}))
        .await;
    let providers = match providers {
        Ok(p) => p.into_inner().providers,
        Err(status) => {
            tracing::warn!(status = ?status, "cannot read the provider registry");
            Vec::new()
        }
    };
    let provider = providers.iter().find(|p| p.key == integration.provider);
    Json(integration_view(provider, Some(&integration)))
}

#[derive(Debug, Deserialize)]
pub struct InstallQuery {
    shop: Option<String>,
}

/// The authorize URL a page navigates to.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallLink {
    /// A one-time start link on this gateway; it sends the browser on to the provider.
    authorize_url: String,
}

/// Starts an OAuth connection (Shopify needs `shop`). With `Accept: application/json` the
/// answer is `{"authorize_url"}` for a page to navigate to, and an error is JSON (a bad shop
/// domain or provider is a 400 naming it); otherwise a 302 there, and on failure a 302 back
/// to the app's settings page with `error={provider}_install_failed&message=…`.
#[utoipa::path(get, operation_id = "installIntegration", path = "/integrations/{provider}/install", tag = "integrations",
    params(("provider" = String, Path, description = "shopify or pinterest"),
        ("shop" = Option<String>, Query, description = "Shopify shop domain, e.g. haven.myshopify.com")),
    responses((status = 200, body = InstallLink), (status = 302, description = "To the start link, or back to the app on failure"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn install(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    Query(query): Query<InstallQuery>,
) -> Result<Response, ApiError> {
    let json = wants_json(&headers);
    let known = parse_provider(&provider).ok();
    match begin_install(&state, &headers, &provider, query).await {
        Ok(response) => Ok(response),
        Err(e) if json => Err(e),
        // A navigation: back to the settings page with the reason, as seed 001 does, never
        // a JSON error page in the person's browser.
        Err(e) => {
            // The message of an unknown provider would quote the path: not echoed.
            let message = match known {
                Some(_) => e.message.as_str(),
                None => "that provider is not one Haven connects",
            };
            let location = install_failed_redirect(&state.app_url, known, message);
            Ok(HeaderValue::from_str(&location).map_or_else(|_| e.into_response(), redirect))
        }
    }
}

/// `$HAVEN_APP_URL/dashboard/settings/integrations?error={provider}_install_failed&message=…`
/// (`error=install_failed` for a provider we do not know, which is not echoed).
pub fn install_failed_redirect(app_url: &str, provider: Option<Provider>, message: &str) -> String {
    format!(
        "{}/dashboard/settings/integrations?error={}install_failed&message={}",
        app_url.trim_end_matches('/'),
        provider
            .map(|p| format!("{}_", p.as_str()))
            .unwrap_or_default(),
        encode_component(message)
    )
}

async fn begin_install(
    state: &AppState,
    headers: &HeaderMap,
    provider: &str,
    query: InstallQuery,
) -> Result<Response, ApiError> {
    let provider = parse_provider(provider)?;
    let begun = client(state)
        .begin_o_auth(upstream::request(
            headers,
            pb::BeginOAuthRequest {
                provider: provider.as_str().to_owned(),
                shop: query.shop.unwrap_or_default(),
                redirect_uri: String::new(),
            },
        ))
        .await?
        .into_inner();
    if wants_json(headers) {
        return Ok(Json(InstallLink {
            authorize_url: begun.authorize_url,
        })
        .into_response());
    }
    let location = HeaderValue::from_str(&begun.authorize_url).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            "the integrations service returned an unusable authorize URL",
        )
    })?;
    Ok(redirect(location))
}

/// Whether the caller asked for JSON (a page's `fetch`) rather than a redirect (a navigation).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"))
}

/// The cookie that binds an OAuth attempt to the browser that opened its start link.
fn binding_cookie_name(provider: Provider) -> String {
    format!("haven_oauth_{}", provider.as_str())
}

/// Whether the browser reached us on a loopback host, where a `Secure` cookie could not be
/// set over plain HTTP in development.
fn on_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Set-Cookie` for the binding: HttpOnly, SameSite=Lax (the provider's redirect back is a
/// top-level navigation, which carries it), only sent to this provider's callback, Secure
/// outside loopback, gone when the state expires.
fn binding_cookie(provider: Provider, value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{}={value}; Path=/api/integrations/{}/callback; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        binding_cookie_name(provider),
        provider.as_str(),
        if secure { "; Secure" } else { "" }
    )
}

/// The binding cookie's value from the `Cookie` header, if the browser sent one.
fn binding_from(headers: &HeaderMap, provider: Provider) -> Option<String> {
    let name = binding_cookie_name(provider);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The start link: uses up its ticket, sets the binding cookie in this browser and sends it on
/// to the provider. Any failure goes back to the app with our own words.
#[utoipa::path(get, operation_id = "startOAuth", path = "/integrations/{provider}/start", tag = "integrations", security(()),
    params(("provider" = String, Path), ("ticket" = String, Query, description = "One-time ticket from install")),
    responses((status = 302, description = "To the provider's consent page, or back to the app on failure")))]
async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Ok(known) = Provider::parse(&provider) else {
        return app_redirect(&state, None, Err(CallbackFailure::UnknownProvider));
    };
    let ticket = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let started = client(&state)
        .start_o_auth(pb::StartOAuthRequest {
            provider: known.as_str().to_owned(),
            ticket,
        })
        .await;
    let started = match started {
        Ok(started) => started.into_inner(),
        Err(status) => {
            tracing::warn!(provider = known.as_str(), code = ?status.code(), message = status.message(), "OAuth start refused");
            return app_redirect(
                &state,
                Some(known),
                Err(CallbackFailure::from_code(status.code())),
            );
        }
    };
    let max_age = started
        .state_expires_at
        .map(|t| t.seconds - chrono::Utc::now().timestamp())
        .unwrap_or(600)
        .clamp(1, 600);
    let cookie = binding_cookie(
        known,
        &started.browser_binding,
        max_age,
        !on_loopback(&headers),
    );
    match (
        HeaderValue::from_str(&started.authorize_url),
        HeaderValue::from_str(&cookie),
    ) {
        (Ok(location), Ok(cookie)) => {
            let mut response = redirect(location);
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        _ => app_redirect(&state, Some(known), Err(CallbackFailure::Failed)),
    }
}

/// A redirect back to the app's integrations page.
fn app_redirect(
    state: &AppState,
    provider: Option<Provider>,
    outcome: Result<(), CallbackFailure>,
) -> Response {
    let location = callback_redirect(&state.app_url, provider, outcome);
    match HeaderValue::from_str(&location) {
        Ok(location) => redirect(location),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot build the redirect back to the app",
        )
        .into_response(),
    }
}

fn redirect(location: HeaderValue) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `s` with everything but RFC 3986's unreserved characters percent-encoded, so it is one
/// query value whichever decoder the web app uses.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a callback failed, as the web app is told: a fixed code and a message we wrote. The
/// service's own message can quote the provider's `error_description` or the URL, which are
/// anyone's text; it goes to the log, never into the app's address bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackFailure {
    UnknownProvider,
    Malformed,
    NotVerified,
    NotGranted,
    Unavailable,
    Failed,
}

impl CallbackFailure {
    pub fn from_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange => CallbackFailure::Malformed,
            Code::PermissionDenied | Code::Unauthenticated | Code::NotFound => {
                CallbackFailure::NotVerified
            }
            Code::FailedPrecondition | Code::Aborted => CallbackFailure::NotGranted,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                CallbackFailure::Unavailable
            }
            _ => CallbackFailure::Failed,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CallbackFailure::UnknownProvider => "unknown_provider",
            CallbackFailure::Malformed => "malformed_callback",
            CallbackFailure::NotVerified => "not_verified",
            CallbackFailure::NotGranted => "not_granted",
            CallbackFailure::Unavailable => "unavailable",
            CallbackFailure::Failed => "failed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            CallbackFailure::UnknownProvider => "This integration is not one Haven knows.",
            CallbackFailure::Malformed => {
                "The provider's answer was incomplete or malformed. Start connecting again."
            }
            CallbackFailure::NotVerified => {
                "This connection could not be verified: the link expired, was already used, or was opened in another browser. Start connecting again."
            }
            CallbackFailure::NotGranted => {
                "Access was not granted. Start connecting again and approve the request."
            }
            CallbackFailure::Unavailable => {
                "The integration service is busy or unreachable. Try again in a minute."
            }
            CallbackFailure::Failed => {
                "The connection could not be completed. Try again; if it keeps failing, contact support."
            }
        }
    }
}

/// Where the callback sends the browser: the integrations settings page with
/// `success={provider}_connected`, or `error={provider}_callback_failed&reason=…&message=…`
/// (`error=callback_failed` when the provider is not one we know). Nothing in it is the
/// caller's text.
pub fn callback_redirect(
    app_url: &str,
    provider: Option<Provider>,
    outcome: Result<(), CallbackFailure>,
) -> String {
    let page = format!(
        "{}/dashboard/settings/integrations",
        app_url.trim_end_matches('/')
    );
    let prefix = provider
        .map(|p| format!("{}_", p.as_str()))
        .unwrap_or_default();
    match outcome {
        Ok(()) => format!("{page}?success={prefix}connected"),
        Err(failure) => format!(
            "{page}?error={prefix}callback_failed&reason={}&message={}",
            failure.reason(),
            encode_component(failure.message())
        ),
    }
}

/// The callback's query as a map. A repeated parameter is refused: the map the service
/// verifies could only hold one of its values.
pub fn callback_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let mut query = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if query.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(format!("the callback repeats the query parameter `{key}`"));
        }
    }
    Ok(query)
}

/// Completes OAuth and sends the browser back to the web app either way. The query holds
/// the authorization code, so neither it nor the URI is logged here.
#[utoipa::path(get, operation_id = "oauthCallback", path = "/integrations/{provider}/callback", tag = "integrations", security(()),
    params(("provider" = String, Path)),
    responses((status = 302, description = "Back to the app's integrations page with success= or error=")))]
async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let known = Provider::parse(&provider).ok();
    let outcome = match (known, callback_query(raw.as_deref())) {
        (None, _) => Err(CallbackFailure::UnknownProvider),
        (Some(_), Err(_)) => Err(CallbackFailure::Malformed),
        (Some(checked), Ok(query)) => client(&state)
            .complete_o_auth(upstream::request(
                &headers,
                pb::CompleteOAuthRequest {
                    provider: checked.as_str().to_owned(),
                    query,
                    browser_binding: binding_from(&headers, checked).unwrap_or_default(),
                },
            ))
            .await
            .map(|_| ())
            .map_err(|status| {
                tracing::warn!(
                    provider = checked.as_str(),
                    code = ?status.code(),
                    message = status.message(),
                    "OAuth callback failed"
                );
                CallbackFailure::from_code(status.code())
            }),
    };
    let mut response = app_redirect(&state, known, outcome);
    // The binding has done its work (or failed): the browser forgets it either way.
    if let Some(provider) = known
        && let Ok(clear) =
            HeaderValue::from_str(&binding_cookie(provider, "", 0, !on_loopback(&headers)))
    {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
}

/// `{ "apiKey": "..." }`. No `Debug`: it holds the key.
#[derive(Deserialize, ToSchema)]
pub struct ConnectBody {
    /// The provider's API key; checked with the provider before it is stored.
    #[schema(value_type = String)]
    #[serde(rename = "apiKey", alias = "api_key")]
    api_key: Option<String>,
}

/// Reads the key from the body. serde's messages can quote the input, so the errors here
/// are our own and never echo it.
pub fn parse_api_key(body: &[u8]) -> Result<SecretString, ApiError> {
    let parsed: ConnectBody = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid("body", "expected JSON {\"apiKey\": \"...\"}"))?;
    let key = parsed
        .api_key
        .map(SecretString::from)
        .filter(|k| !k.expose_secret().trim().is_empty())
        .ok_or_else(|| ApiError::invalid("apiKey", "is required"))?;
    Ok(key)
}

/// Connects an API-key provider (Klaviyo, Dynamic Mockups, Resend): the key is checked with
/// the provider and stored encrypted; a refused key is 400 with the provider's reason.
#[utoipa::path(post, operation_id = "connectIntegration", path = "/integrations/{provider}/connect", tag = "integrations",
    params(("provider" = String, Path, description = "e.g. klaviyo")),
    request_body(content = ConnectBody, content_type = "application/json"),
    responses((status = 200, body = IntegrationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    body: Bytes,
) -> Result<Json<IntegrationView>, ApiError> {
    let provider = parse_provider(&provider)?;
    let key = parse_api_key(&body)?;
    let integration = client(&state)
        .connect_api_key(upstream::request(
            &headers,
            pb::ConnectApiKeyRequest {
                provider: provider.as_str().to_owned(),
                api_key: key.expose_secret().trim().to_owned(),
            },
        ))
        .await?
        .into_inner();
    Ok(one(&state, &headers, integration).await)
}

/// Disconnects a provider and forgets its credentials.
#[utoipa::path(delete, operation_id = "disconnectIntegration", path = "/integrations/{provider}", tag = "integrations",
    params(("provider" = String, Path, description = "e.g. shopify")),
    responses((status = 200, body = IntegrationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    let provider = parse_provider(&provider)?.as_str().to_owned();
    let integration = client(&state)
        .disconnect(upstream::request(
            &headers,
            pb::DisconnectRequest { provider },
        ))
        .await?
        .into_inner();
    Ok(one(&state, &headers, integration).await)
}

/// `pending`, `completed` or `skipped` as the service's enum.
pub fn parse_step_status(status: &str) -> Result<pb::SetupStepStatus, ApiError> {
    match status {
        "pending" => Ok(pb::SetupStepStatus::Pending),
        "completed" => Ok(pb::SetupStepStatus::Completed),
        "skipped" => Ok(pb::SetupStepStatus::Skipped),
        other => Err(ApiError::invalid(
            "status",
            format!("unknown value `{other}`; expected pending, completed or skipped"),
        )),
    }
}

fn step_status_str(status: i32) -> &'static str {
    match pb::SetupStepStatus::try_from(status) {
        Ok(pb::SetupStepStatus::Completed) => "completed",
        Ok(pb::SetupStepStatus::Skipped) => "skipped",
        Ok(pb::SetupStepStatus::Pending | pb::SetupStepStatus::Unspecified) | Err(_) => "pending",
    }
}

/// One step of the setup wizard.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupStep {
    key: String,
    label: String,
    /// The provider whose connection completes the step, if one does.
    provider: Option<String>,
    /// pending, completed or skipped.
    status: String,
    updated_at: Option<String>,
}

/// The wizard's state: the web app's `setup_progress` map (step → status) plus the ordered
/// steps and counts the service computes.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupProgressView {
    #[schema(value_type = Object)]
    setup_progress: Map<String, Value>,
    steps: Vec<SetupStep>,
    /// Steps completed or skipped.
    completed_count: i32,
    complete: bool,
}

pub fn progress_view(progress: &pb::SetupProgress) -> SetupProgressView {
    SetupProgressView {
        // Seed 001's map holds every key, the wizard's and the others (resend, import).
        setup_progress: progress
            .steps
            .iter()
            .chain(&progress.other_steps)
            .map(|s| (s.key.clone(), json!(step_status_str(s.status))))
            .collect(),
        steps: progress
            .steps
            .iter()
            .map(|s| SetupStep {
                key: s.key.clone(),
                label: s.label.clone(),
                provider: nonempty(s.provider.clone()),
                status: step_status_str(s.status).to_owned(),
                updated_at: time_str(s.updated_at),
            })
            .collect(),
        completed_count: progress.completed_count,
        complete: progress.complete,
    }
}

/// The setup wizard's six steps and how far the tenant got; `setup_progress` also holds the
/// keys outside the wizard (`resend`, `import`).
#[utoipa::path(get, operation_id = "getSetupProgress", path = "/settings/setup-progress", tag = "integrations",
    responses((status = 200, body = SetupProgressView), (status = 401, body = ErrorBody)))]
async fn setup_progress(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<SetupProgressView>, ApiError> {
    let progress = client(&state)
        .get_setup_progress(upstream::request(&headers, pb::GetSetupProgressRequest {}))
        .await?
        .into_inner();
    Ok(Json(progress_view(&progress)))
}

/// The body of a step change, read by hand so that a bad one is named.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StepBody {
    /// pending, completed or skipped.
    #[schema(value_type = String)]
    status: Option<Value>,
}

/// Reads `{ "status": "completed" | "skipped" | "pending" }`.
pub fn parse_step_body(body: &[u8]) -> Result<pb::SetupStepStatus, ApiError> {
    let parsed: StepBody = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid("body", "expected JSON {\"status\": \"completed\"}"))?;
    match parsed.status {
        Some(Value::String(s)) => parse_step_status(&s),
        Some(other) => Err(ApiError::invalid(
            "status",
            format!("must be a string, got {other}"),
        )),
        None => Err(ApiError::invalid("status", "is required")),
    }
}

/// Marks one wizard step completed, skipped or pending again.
#[utoipa::path(patch, operation_id = "updateSetupStep", path = "/settings/setup-progress/{step}", tag = "integrations",
    params(("step" = String, Path, description = "Step key, e.g. design_rules")),
    request_body(content = StepBody, content_type = "application/json"),
    responses((status = 200, body = SetupProgressView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_setup_step(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(step): Path<String>,
    body: Bytes,
) -> Result<Json<SetupProgressView>, ApiError> {
    let status = parse_step_body(&body)?;
    let progress = client(&state)
        .update_setup_step(upstream::request(
            &headers,
            pb::UpdateSetupStepRequest {
                step,
                status: status as i32,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(progress_view(&progress)))
}

/// One of the tenant's Pinterest boards.
#[derive(Debug, Serialize, ToSchema)]
pub struct BoardView {
    id: String,
    name: String,
    pin_count: i64,
    synced_at: Option<String>,
}

/// The tenant's Pinterest boards, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct BoardsView {
    boards: Vec<BoardView>,
    /// When they were last synced; null if never.
    synced_at: Option<String>,
}

/// The tenant's Pinterest boards as last synced (at connect, and after token refreshes at
/// most hourly)
#[utoipa::path(get, operation_id = "listPinterestBoards", path = "/integrations/pinterest/boards", tag = "integrations",
    responses((status = 200, body = BoardsView), (status = 401, body = ErrorBody)))]
async fn pinterest_boards(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<BoardsView>, ApiError> {
    let answer = client(&state)
        .list_pinterest_boards(upstream::request(
            &headers,
            pb::ListPinterestBoardsRequest {},
        ))
        .await?
        .into_inner();
    Ok(Json(BoardsView {
        boards: answer
            .boards
            .into_iter()
            .map(|b| BoardView {
                id: b.board_id,
                name: b.name,
                pin_count: b.pin_count,
                synced_at: time_str(b.synced_at),
            })
            .collect(),
        synced_at: time_str(answer.synced_at),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// 1–200, default 50.
    limit: Option<String>,
}

/// One change to the tenant's integrations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityView {
    id: String,
    /// Who made it; null for the system (a refresh, a webhook, an expired attempt).
    user_id: Option<String>,
    /// `integration_connected`, `integration_disconnected`, `integration_connect_failed`,
    /// `token_refresh_failed`, `app_uninstalled` or `connection_abandoned`.
    action: String,
    provider: String,
    #[schema(value_type = Object)]
    details: Value,
    at: Option<String>,
}

/// The tenant's integration history, newest first
#[utoipa::path(get, operation_id = "listIntegrationActivity", path = "/integrations/activity", tag = "integrations",
    params(ActivityQuery),
    responses((status = 200, body = [ActivityView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn activity(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ActivityQuery>,
) -> Result<Json<Vec<ActivityView>>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be a number from 1 to 200"))?,
    };
    let entries = client(&state)
        .list_activity(upstream::request(
            &headers,
            pb::ListActivityRequest { limit },
        ))
        .await?
        .into_inner()
        .entries;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| ActivityView {
                id: e.id,
                user_id: nonempty(e.user_id),
                action: e.action,
                provider: e.provider,
                details: serde_json::from_str(&e.details_json).unwrap_or_else(|_| json!({})),
                at: time_str(e.at),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn provider(key: &str, order: i32, auth: pb::AuthType) -> pb::Provider {
        pb::Provider {
            key: key.into(),
            name: key.to_uppercase(),
            description: format!("{key} description"),
            icon: key.into(),
            auth_type: auth as i32,
            required: order <= 4,
            setup_order: order,
            docs_url: format!("https://docs.havenhold.com/integrations/{key}"),
        }
    }

    fn shopify_integration() -> pb::Integration {
        pb::Integration {
            id: "0194f8a0-0000-7000-8000-000000000001".into(),
            tenant_id: "t".into(),
            provider: "shopify".into(),
            auth_type: pb::AuthType::Oauth as i32,
            status: pb::IntegrationStatus::Connected as i32,
            scopes: vec!["read_products".into(), "write_orders".into()],
            metadata: Some(pb::integration::Metadata::Shopify(pb::ShopifyMetadata {
                shop_domain: "haven.myshopify.com".into(),
                shop_name: "Haven".into(),
            })),
            token_expires_at: ts(1_767_225_600),
            connected_at: ts(1_767_222_000),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_and_auth_types_use_the_seeds_words() {
        use pb::IntegrationStatus as S;
        assert_eq!(status_str(S::Pending as i32), "connecting");
        assert_eq!(status_str(S::Connected as i32), "connected");
        assert_eq!(status_str(S::Error as i32), "error");
        assert_eq!(status_str(S::Expired as i32), "expired");
        assert_eq!(status_str(S::Disconnected as i32), "disconnected");
        assert_eq!(status_str(S::Unspecified as i32), "disconnected");
        assert_eq!(status_str(99), "disconnected");
        assert_eq!(auth_type_str(pb::AuthType::Oauth as i32), Some("oauth"));
        assert_eq!(auth_type_str(pb::AuthType::ApiKey as i32), Some("api_key"));
        assert_eq!(auth_type_str(0), None);
    }

    #[test]
    fn the_list_merges_registry_and_connections_by_setup_order() {
        let providers = vec![
            provider("klaviyo", 3, pb::AuthType::ApiKey),
            provider("shopify", 1, pb::AuthType::Oauth),
            provider("sky_pilot", 6, pb::AuthType::ApiKey),
        ];
        let klaviyo = pb::Integration {
            id: "k1".into(),
            provider: "klaviyo".into(),
            auth_type: pb::AuthType::ApiKey as i32,
            status: pb::IntegrationStatus::Error as i32,
            metadata: Some(pb::integration::Metadata::Klaviyo(pb::KlaviyoMetadata {
                list_count: 4,
                default_list_id: String::new(),
            })),
            last_error: "Klaviyo rejected the key: create a private key with read access".into(),
            last_error_at: ts(0),
            ..Default::default()
        };
        let orphan = pb::Integration {
            id: "o1".into(),
            provider: "retired".into(),
            status: pb::IntegrationStatus::Pending as i32,
            ..Default::default()
        };
        let list: Vec<Value> = merge(providers, &[klaviyo, shopify_integration(), orphan])
            .iter()
            .map(|v| serde_json::to_value(v).unwrap())
            .collect();
        let keys: Vec<_> = list.iter().map(|v| v["provider"].clone()).collect();
        assert_eq!(keys, ["shopify", "klaviyo", "sky_pilot", "retired"]);

        assert_eq!(
            list[0],
            json!({
                "id": "0194f8a0-0000-7000-8000-000000000001",
                "provider": "shopify",
                "name": "SHOPIFY",
                "description": "shopify description",
                "icon": "shopify",
                "auth_type": "oauth",
                "required": true,
                "setup_order": 1,
                "docs_url": "https://docs.havenhold.com/integrations/shopify",
                "status": "connected",
                "metadata": {
                    "shop_domain": "haven.myshopify.com",
                    "shop_name": "Haven",
                    "access_scopes": ["read_products", "write_orders"],
                },
                "scopes": ["read_products", "write_orders"],
                "last_error": null,
                "last_error_at": null,
                "token_expires_at": "2026-01-01T00:00:00.000Z",
                "last_refreshed_at": null,
                "connected_at": "2025-12-31T23:00:00.000Z",
                "disconnected_at": null,
                "created_at": null,
                "updated_at": null,
            })
        );
        assert_eq!(list[1]["status"], "error");
        assert_eq!(list[1]["metadata"], json!({ "list_count": 4 }));
        assert_eq!(list[1]["last_error_at"], "1970-01-01T00:00:00.000Z");
        // Never connected: disconnected, no id, registry fields still there.
        assert_eq!(list[2]["status"], "disconnected");
        assert_eq!(list[2]["id"], Value::Null);
        assert_eq!(list[2]["auth_type"], "api_key");
        assert_eq!(list[2]["required"], false);
        assert_eq!(list[2]["metadata"], json!({ "connected": false }));
        assert_eq!(list[2]["scopes"], json!([]));
        // Unknown to the registry: still shown, with what is known.
        assert_eq!(list[3]["status"], "connecting");
        assert_eq!(list[3]["name"], Value::Null);
        assert_eq!(list[3]["auth_type"], Value::Null);
    }

    #[test]
    fn metadata_follows_the_seeds_types() {
        use pb::integration::Metadata as M;
        let with = |provider: &str, m: M| pb::Integration {
            provider: provider.into(),
            status: pb::IntegrationStatus::Connected as i32,
            metadata: Some(m),
            ..Default::default()
        };
        let cases = [
            (
                with(
                    "pinterest",
                    M::Pinterest(pb::PinterestMetadata {
                        account_name: "Haven".into(),
                        account_id: "549755885175".into(),
                        board_count: 12,
                    }),
                ),
                json!({ "account_name": "Haven", "account_id": "549755885175", "board_count": 12 }),
            ),
            (
                with(
                    "klaviyo",
                    M::Klaviyo(pb::KlaviyoMetadata {
                        list_count: 2,
                        default_list_id: "XyZ123".into(),
                    }),
                ),
                json!({ "list_count": 2, "default_list_id": "XyZ123" }),
            ),
            (
                with(
                    "dynamic_mockups",
                    M::DynamicMockups(pb::DynamicMockupsMetadata {
                        credits_remaining: 950,
                        plan: "pro".into(),
                    }),
                ),
                json!({ "credits_remaining": 950, "plan": "pro" }),
            ),
            (
                with(
                    "resend",
                    M::Resend(pb::ResendMetadata {
                        domain_verified: false,
                        from_email: "hello@haven.example".into(),
                        from_domain: String::new(),
                    }),
                ),
                json!({ "domain_verified": false, "from_email": "hello@haven.example" }),
            ),
        ];
        for (integration, expected) in cases {
            assert_eq!(
                metadata_json(&integration.provider, Some(&integration)),
                expected
            );
        }
        let sky = pb::Integration {
            provider: "sky_pilot".into(),
            status: pb::IntegrationStatus::Connected as i32,
            ..Default::default()
        };
        assert_eq!(
            metadata_json("sky_pilot", Some(&sky)),
            json!({ "connected": true })
        );
        assert_eq!(metadata_json("shopify", None), json!({}));
    }

    #[test]
    fn setup_progress_has_the_seeds_map_and_the_ordered_steps() {
        let step = |key: &str, provider: &str, status: pb::SetupStepStatus, at| pb::SetupStep {
            key: key.into(),
            label: format!("Step {key}"),
            provider: provider.into(),
            status: status as i32,
            updated_at: at,
        };
        let progress = pb::SetupProgress {
            steps: vec![
                step(
                    "shopify",
                    "shopify",
                    pb::SetupStepStatus::Completed,
                    ts(1_767_225_600),
                ),
                step(
                    "pinterest",
                    "pinterest",
                    pb::SetupStepStatus::Skipped,
                    ts(1_767_225_600),
                ),
                step("design_rules", "", pb::SetupStepStatus::Pending, None),
            ],
            completed_count: 1,
            complete: false,
            other_steps: vec![step("import", "", pb::SetupStepStatus::Completed, None)],
        };
        assert_eq!(
            serde_json::to_value(progress_view(&progress)).unwrap(),
            json!({
                "setup_progress": {
                    "shopify": "completed",
                    "pinterest": "skipped",
                    "design_rules": "pending",
                    "import": "completed",
                },
                "steps": [
                    { "key": "shopify", "label": "Step shopify", "provider": "shopify", "status": "completed", "updated_at": "2026-01-01T00:00:00.000Z" },
                    { "key": "pinterest", "label": "Step pinterest", "provider": "pinterest", "status": "skipped", "updated_at": "2026-01-01T00:00:00.000Z" },
                    { "key": "design_rules", "label": "Step design_rules", "provider": null, "status": "pending", "updated_at": null },
                ],
                "completed_count": 1,
                "complete": false,
            })
        );
    }

    #[test]
    fn step_bodies_are_checked_and_named() {
        assert_eq!(
            parse_step_body(br#"{"status":"skipped"}"#).unwrap(),
            pb::SetupStepStatus::Skipped
        );
        assert_eq!(
            parse_step_body(br#"{"status":"completed"}"#).unwrap(),
            pb::SetupStepStatus::Completed
        );
        let e = parse_step_body(br#"{"status":"done"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("status:") && e.message.contains("`done`"),
            "{}",
            e.message
        );
        assert!(
            parse_step_body(br#"{"status":2}"#)
                .unwrap_err()
                .message
                .starts_with("status:")
        );
        assert!(
            parse_step_body(b"{}")
                .unwrap_err()
                .message
                .starts_with("status:")
        );
        assert!(
            parse_step_body(b"nope")
                .unwrap_err()
                .message
                .starts_with("body:")
        );
    }

    #[test]
    fn api_keys_are_required_and_never_echoed() {
        assert_eq!(
            parse_api_key(br#"{"apiKey":"pk_live_1"}"#)
                .unwrap()
                .expose_secret(),
            "pk_live_1"
        );
        assert_eq!(
            parse_api_key(br#"{"api_key":"pk_live_2"}"#)
                .unwrap()
                .expose_secret(),
            "pk_live_2"
        );
        for body in [
            &b"{}"[..],
            br#"{"apiKey":""}"#,
            br#"{"apiKey":"   "}"#,
            br#"{"apiKey":null}"#,
        ] {
            let e = parse_api_key(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.message, "apiKey: is required");
        }
        // serde would quote the input; our message does not.
        let e = parse_api_key(br#""pk_live_secret""#).unwrap_err();
        assert!(!e.message.contains("pk_live_secret"), "{}", e.message);
        let e = parse_api_key(br#"{"apiKey":["pk_live_secret"]}"#).unwrap_err();
        assert!(!e.message.contains("pk_live_secret"), "{}", e.message);
    }

    #[test]
    fn callback_redirects_carry_our_words_only() {
        assert_eq!(
            callback_redirect("https://app.example.com/", Some(Provider::Shopify), Ok(())),
            "https://app.example.com/dashboard/settings/integrations?success=shopify_connected"
        );
        let failed = callback_redirect(
            "http://localhost:3000",
            Some(Provider::Pinterest),
            Err(CallbackFailure::from_code(tonic::Code::FailedPrecondition)),
        );
        assert!(
            failed.starts_with(
                "http://localhost:3000/dashboard/settings/integrations?error=pinterest_callback_failed&reason=not_granted&message=Access%20was%20not%20granted"
            ),
            "{failed}"
        );
        // An unknown provider is not repeated back.
        assert_eq!(
            callback_redirect(
                "http://localhost:3000",
                None,
                Err(CallbackFailure::UnknownProvider)
            ),
            format!(
                "http://localhost:3000/dashboard/settings/integrations?error=callback_failed&reason=unknown_provider&message={}",
                encode_component(CallbackFailure::UnknownProvider.message())
            )
        );
        assert_eq!(encode_component("é ☕"), "%C3%A9%20%E2%98%95");
    }

    #[test]
    fn callback_queries_are_decoded_and_repeats_refused() {
        let q = callback_query(Some(
            "code=a%2Bb&state=s1&shop=h.myshopify.com&timestamp=1&hmac=ff",
        ))
        .unwrap();
        assert_eq!(q["code"], "a+b");
        assert_eq!(q["state"], "s1");
        assert_eq!(q.len(), 5);
        assert!(callback_query(None).unwrap().is_empty());
        let e = callback_query(Some("state=a&state=b")).unwrap_err();
        assert!(e.contains("`state`"), "{e}");
    }
}
