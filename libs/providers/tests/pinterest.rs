#![allow(clippy::unwrap_used)]
//! Pinterest client against wiremock, with the request shapes the v5 OpenAPI documents.

use std::time::Duration;

use base64::Engine as _;
use haven_providers::pinterest::{PinterestClient, PinterestConfig};
use haven_providers::{ExposeSecret, HttpSettings, ProviderError, SecretString, pkce};
use serde_json::json;
use wiremock::matchers::{
    body_string_contains, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "pinterest_client_secret_value";
const TOKEN: &str = "pina_access_token_value";
const REFRESH: &str = "pinr_refresh_token_value";

fn client(server: &MockServer) -> PinterestClient {
    PinterestClient::new(
        PinterestConfig {
            client_id: "1234".into(),
            client_secret: SecretString::from(SECRET),
            scopes: vec!["boards:read".into(), "user_accounts:read".into()],
            api_base: format!("{}/v5", server.uri()),
            authorize_url: format!("{}/oauth/", server.uri()),
        },
        &HttpSettings::default(),
    )
    .unwrap()
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("1234:{SECRET}"))
    )
}

fn assert_no_leak(e: &ProviderError) {
    let text = format!("{e} {e:?}");
    for s in [SECRET, TOKEN, REFRESH, "leaked"] {
        assert!(!text.contains(s), "error leaks {s}: {text}");
    }
}

#[tokio::test]
async fn authorize_url_shape() {
    let server = MockServer::start().await;
    let c = client(&server);
    let u = url::Url::parse(&c.authorize_url("st", "https://app.test/cb", None)).unwrap();
    let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    assert_eq!(u.path(), "/oauth/");
    for (k, v) in [
        ("client_id", "1234"),
        ("redirect_uri", "https://app.test/cb"),
        ("response_type", "code"),
        ("scope", "boards:read,user_accounts:read"),
        ("state", "st"),
    ] {
        assert!(q.contains(&(k.into(), v.into())), "missing {k}: {u}");
    }
    assert!(!u.as_str().contains("code_challenge"));
    let with = c.authorize_url("st", "https://app.test/cb", Some("chal"));
    assert!(with.contains("code_challenge=chal") && with.contains("code_challenge_method=S256"));
    assert!(!PinterestClient::supports_pkce());
}

#[tokio::test]
async fn exchange_code_uses_basic_auth_form_and_continuous_refresh() {
    let server = MockServer::start().await;
    let verifier = pkce::verifier();
    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .and(header("authorization", basic().as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code=the-code"))
        .and(body_string_contains(
            "redirect_uri=https%3A%2F%2Fapp.test%2Fcb",
        ))
        .and(body_string_contains("continuous_refresh=true"))
        .and(body_string_contains(format!(
            "code_verifier={}",
            verifier.expose_secret()
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN,
            "token_type": "bearer",
            "expires_in": 2592000,
            "scope": "boards:read user_accounts:read",
            "refresh_token": REFRESH,
            "refresh_token_expires_in": 5184000,
            "refresh_token_expires_at": 1900000000,
            "response_type": "authorization_code",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let set = client(&server)
        .exchange_code("the-code", "https://app.test/cb", Some(&verifier))
        .await
        .unwrap();
    assert_eq!(set.access_token.expose_secret(), TOKEN);
    assert_eq!(set.refresh_token.as_ref().unwrap().expose_secret(), REFRESH);
    assert_eq!(set.scopes, vec!["boards:read", "user_accounts:read"]);
    assert!(set.expires_at.unwrap() > chrono::Utc::now() + chrono::Duration::days(29));
    assert!(
        set.refresh_token_expires_at.unwrap() > chrono::Utc::now() + chrono::Duration::days(59)
    );
}

#[tokio::test]
async fn refresh_keeps_rotated_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .and(header("authorization", basic().as_str()))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(format!("refresh_token={REFRESH}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "pina_new",
            "token_type": "bearer",
            "expires_in": 2592000,
            "scope": "boards:read",
            "refresh_token": "pinr_new",
            "refresh_token_expires_in": 5184000,
            "refresh_token_expires_at": 1900000000,
            "response_type": "refresh_token",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let set = client(&server)
        .refresh(&SecretString::from(REFRESH))
        .await
        .unwrap();
    assert_eq!(set.access_token.expose_secret(), "pina_new");
    assert_eq!(set.refresh_token.unwrap().expose_secret(), "pinr_new");
}

#[tokio::test]
async fn token_endpoint_errors() {
    let server = MockServer::start().await;
    let c = client(&server);
    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": format!("{REFRESH} expired"), "access_token": "leaked"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c.refresh(&SecretString::from(REFRESH)).await.unwrap_err();
    assert!(e.is_grant_refused(), "{e:?}");
    assert_no_leak(&e);

    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"code": 2, "message": format!("Authentication failed {SECRET}")}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c
        .exchange_code("c", "https://app.test/cb", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert_no_leak(&e);

    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "9"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c.refresh(&SecretString::from(REFRESH)).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));

    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    assert!(
        c.refresh(&SecretString::from(REFRESH))
            .await
            .unwrap_err()
            .is_retryable()
    );

    Mock::given(method("POST"))
        .and(path("/v5/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c.refresh(&SecretString::from(REFRESH)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e:?}");
}

#[tokio::test]
async fn account_and_every_board_across_pages() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v5/user_account"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "account_type": "BUSINESS", "id": "2783136121146311751", "username": "havenhold",
            "business_name": "Haven Hold", "board_count": 5
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v5/boards"))
        .and(query_param_is_missing("bookmark"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "items": [{"id": "1", "name": "One", "pin_count": 4, "privacy": "PUBLIC"},
                      {"id": "2", "name": "Two"}, {"id": "3", "name": "Three"}], "bookmark": "b1"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v5/boards"))
        .and(query_param("bookmark", "b1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "items": [{"id": "4", "name": "Four"}, {"id": "5", "name": "Five"}], "bookmark": null
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let t = SecretString::from(TOKEN);
    let account = c.account(&t).await.unwrap();
    assert_eq!(account.username, "havenhold");
    assert_eq!(account.business_name.as_deref(), Some("Haven Hold"));
    assert_eq!(account.account_id, "2783136121146311751");
    let boards = c.boards(&t).await.unwrap();
    let ids: Vec<&str> = boards.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    assert_eq!(boards[0].name, "One");
    assert_eq!(boards[0].pin_count, 4);
    assert_eq!(boards[1].pin_count, 0);
}

#[tokio::test]
async fn api_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v5/user_account"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 2, "message": "Authentication failed."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v5/boards"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": "1", "name": "A"}], "bookmark": "same"})),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let t = SecretString::from(TOKEN);
    let e = c.account(&t).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("Authentication failed"));
    let e = c.boards(&t).await.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e:?}");
}
