#![allow(clippy::unwrap_used)]
//! Klaviyo, Dynamic Mockups, Resend and Sky Pilot key validation against wiremock.

use std::time::Duration;

use haven_providers::dynamic_mockups::DynamicMockupsClient;
use haven_providers::klaviyo::{self, KlaviyoClient};
use haven_providers::resend::ResendClient;
use haven_providers::sky_pilot::SkyPilotClient;
use haven_providers::{HttpSettings, ProviderError, SecretString};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "pk_live_private_key_value";

fn assert_no_leak(e: &ProviderError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "error leaks the key: {text}");
}

fn http() -> HttpSettings {
    HttpSettings::default()
}

#[tokio::test]
async fn klaviyo_counts_lists_across_pages() {
    let server = MockServer::start().await;
    let auth = format!("Klaviyo-API-Key {KEY}");
    Mock::given(method("GET"))
        .and(path("/api/accounts/"))
        .and(header("authorization", auth.as_str()))
        .and(header("revision", klaviyo::REVISION))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"type": "account", "id": "AbC123", "attributes": {"contact_information": {"organization_name": "Haven"}}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/"))
        .and(header("authorization", auth.as_str()))
        .and(header("revision", klaviyo::REVISION))
        .and(query_param_is_missing("page[cursor]"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"type": "list", "id": "L1"}, {"type": "list", "id": "L2"}],
            "links": {"self": "x", "next": format!("{}/api/lists/?page%5Bcursor%5D=c2", server.uri())}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/"))
        .and(query_param("page[cursor]", "c2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"type": "list", "id": "L3"}], "links": {"self": "x", "next": null}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = KlaviyoClient::new(&server.uri(), &http()).unwrap();
    assert_eq!(
        c.validate(&SecretString::from(KEY))
            .await
            .unwrap()
            .list_count,
        3
    );
}

#[tokio::test]
async fn klaviyo_key_without_accounts_scope_is_still_valid() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/accounts/"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "errors": [{"status": 403, "code": "permission_denied", "detail": "You do not have permission to perform this action."}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [], "links": {}})))
        .mount(&server)
        .await;
    let c = KlaviyoClient::new(&server.uri(), &http()).unwrap();
    assert_eq!(
        c.validate(&SecretString::from(KEY))
            .await
            .unwrap()
            .list_count,
        0
    );
}

#[tokio::test]
async fn klaviyo_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/accounts/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "errors": [{"status": 401, "code": "not_authenticated", "detail": format!("Incorrect authentication credentials: {KEY}")}]
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let c = KlaviyoClient::new(&server.uri(), &http()).unwrap();
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("Incorrect authentication"), "{e}");
    assert_no_leak(&e);

    Mock::given(method("GET"))
        .and(path("/api/accounts/"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));

    Mock::given(method("GET"))
        .and(path("/api/accounts/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": "A"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": "L1"}], "links": {"next": "https://evil.test/api/lists/?page%5Bcursor%5D=x"}
        })))
        .mount(&server)
        .await;
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e:?}");
}

#[tokio::test]
async fn dynamic_mockups_validation() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/mockups"))
        .and(header("x-api-key", KEY))
        .and(header("accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"uuid": "m1"}], "success": true, "message": ""})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/mockups"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Unauthenticated."})),
        )
        .with_priority(10)
        .mount(&server)
        .await;
    let c = DynamicMockupsClient::new(&format!("{}/api/v1", server.uri()), &http()).unwrap();
    let account = c.validate(&SecretString::from(KEY)).await.unwrap();
    assert_eq!(account.credits_remaining, None);
    assert_eq!(account.plan, None);
    let e = c.validate(&SecretString::from("wrong")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn dynamic_mockups_malformed_and_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let c = DynamicMockupsClient::new(&server.uri(), &http()).unwrap();
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e:?}");
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(502),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn resend_full_access_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/domains"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": false,
            "data": [
                {"id": "d1", "name": "pending.example", "status": "pending", "created_at": "2024-01-01", "region": "us-east-1"},
                {"id": "d2", "name": "mail.example", "status": "verified", "created_at": "2024-01-01", "region": "us-east-1"}
            ]
        })))
        .mount(&server)
        .await;
    let c = ResendClient::new(&server.uri(), &http()).unwrap();
    let a = c.validate(&SecretString::from(KEY)).await.unwrap();
    assert!(!a.send_only);
    assert!(a.domain_verified);
    assert_eq!(a.from_domain.as_deref(), Some("mail.example"));
}

#[tokio::test]
async fn resend_send_only_key_is_valid() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/domains"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "statusCode": 401, "message": "This API key is restricted to only send emails", "name": "restricted_api_key"
        })))
        .mount(&server)
        .await;
    let c = ResendClient::new(&server.uri(), &http()).unwrap();
    let a = c.validate(&SecretString::from(KEY)).await.unwrap();
    assert!(a.send_only);
    assert!(!a.domain_verified);
    assert_eq!(a.from_domain, None);
}

#[tokio::test]
async fn resend_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "statusCode": 403, "message": format!("API key is invalid: {KEY}"), "name": "invalid_api_key"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "statusCode": 401, "message": "Missing API key in the authorization header.", "name": "missing_api_key"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .mount(&server)
        .await;
    let c = ResendClient::new(&server.uri(), &http()).unwrap();
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert_no_leak(&e);
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    let e = c.validate(&SecretString::from(KEY)).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn sky_pilot_validation() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/account"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"shop": "cool-store.myshopify.com"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/account"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Unauthenticated"})),
        )
        .with_priority(10)
        .mount(&server)
        .await;
    let c = SkyPilotClient::new(&server.uri(), &http()).unwrap();
    c.validate(&SecretString::from(KEY)).await.unwrap();
    let e = c.validate(&SecretString::from("nope")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
}

#[test]
fn bad_base_urls_are_refused() {
    assert!(KlaviyoClient::new("not a url", &http()).is_err());
    assert!(ResendClient::new("ftp://x", &http()).is_err());
}
