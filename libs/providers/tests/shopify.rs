#![allow(clippy::unwrap_used)]
//! Shopify client against wiremock, with the request shapes Shopify documents.

use std::time::Duration;

use haven_providers::shopify::{self, ShopifyClient, ShopifyConfig};
use haven_providers::{ExposeSecret, HttpSettings, ProviderError, SecretString};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SHOP: &str = "cool-store.myshopify.com";
const SECRET: &str = "shpss_client_secret_value";
const TOKEN: &str = "shpat_access_token_value";
const REFRESH: &str = "shprt_refresh_token_value";

fn pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn client(server: &MockServer) -> ShopifyClient {
    client_at(&server.uri())
}

/// A client whose shops live under `{base}/shopify/{shop}`.
fn client_at(base: &str) -> ShopifyClient {
    ShopifyClient::new(
        ShopifyConfig {
            client_id: "client-id".into(),
            client_secret: SecretString::from(SECRET),
            scopes: vec!["read_products".into(), "write_orders".into()],
            api_version: "2025-10".into(),
            url_template: format!("{base}/shopify/{{shop}}"),
        },
        &HttpSettings {
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
        },
    )
    .unwrap()
}

fn assert_no_leak(e: &ProviderError) {
    let text = format!("{e} {e:?}");
    for s in [SECRET, TOKEN, REFRESH, "leaked"] {
        assert!(!text.contains(s), "error leaks {s}: {text}");
    }
}

#[test]
fn shop_domain_validation() {
    assert_eq!(
        shopify::validate_shop_domain("  Cool-Store.MyShopify.com ").unwrap(),
        "cool-store.myshopify.com"
    );
    assert!(shopify::validate_shop_domain("a1.myshopify.com").is_ok());
    for bad in [
        "",
        "   ",
        "https://cool.myshopify.com",
        "cool.myshopify.com/admin",
        "cool.myshopify.com:443",
        "cool.myshopify.com.evil.com",
        "evil.com",
        "-cool.myshopify.com",
        ".myshopify.com",
        "user@cool.myshopify.com",
        "cool_store.myshopify.com",
        "cool store.myshopify.com",
        "cool.myshopify.com?x=1",
    ] {
        assert!(
            shopify::validate_shop_domain(bad).is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn callback_hmac_matches_shopify_documented_examples() {
    // The example from Shopify's OAuth verification docs, secret "hush".
    let secret = SecretString::from("hush");
    let q = pairs(
        "code=0907a61c0c8d55e99db179b68161bc00&hmac=700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf&shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173",
    );
    assert!(shopify::verify_callback_hmac(&q, &secret));
    assert_eq!(
        shopify::sign_callback(&q, &secret),
        "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"
    );
    let q = pairs(
        "code=0907a61c0c8d55e99db179b68161bc00&hmac=4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26fa3c4d20&shop=some-shop.myshopify.com&timestamp=1337178173",
    );
    assert!(shopify::verify_callback_hmac(&q, &secret));
}

#[test]
fn callback_hmac_rejects_forgeries() {
    let secret = SecretString::from(SECRET);
    let mut q =
        pairs("code=abc&host=YWRtaW4&shop=cool-store.myshopify.com&state=s1&timestamp=1700000000");
    let sig = shopify::sign_callback(&q, &secret);
    q.push(("hmac".into(), sig.clone()));
    assert!(shopify::verify_callback_hmac(&q, &secret));
    // Order of parameters does not matter; `signature` is ignored.
    let mut shuffled = q.clone();
    shuffled.reverse();
    shuffled.push(("signature".into(), "whatever".into()));
    assert!(shopify::verify_callback_hmac(&shuffled, &secret));
    // Tampered value, wrong secret, missing or duplicate hmac, duplicate key.
    let mut tampered = q.clone();
    tampered[2].1 = "other.myshopify.com".into();
    assert!(!shopify::verify_callback_hmac(&tampered, &secret));
    assert!(!shopify::verify_callback_hmac(
        &q,
        &SecretString::from("other")
    ));
    assert!(!shopify::verify_callback_hmac(&q[..5], &secret));
    let mut dup = q.clone();
    dup.push(("hmac".into(), sig));
    assert!(!shopify::verify_callback_hmac(&dup, &secret));
    let mut dup_key = q.clone();
    dup_key.push(("state".into(), "s2".into()));
    assert!(!shopify::verify_callback_hmac(&dup_key, &secret));
    let mut not_hex = q.clone();
    not_hex[5].1 = "zz".into();
    assert!(!shopify::verify_callback_hmac(&not_hex, &secret));
}

#[test]
fn callback_timestamp_window() {
    let now = chrono::Utc::now();
    let q = |ts: i64| vec![("timestamp".to_string(), ts.to_string())];
    let tol = shopify::CALLBACK_TIMESTAMP_TOLERANCE;
    assert!(shopify::verify_callback_timestamp(
        &q(now.timestamp() - 30),
        now,
        tol
    ));
    assert!(!shopify::verify_callback_timestamp(
        &q(now.timestamp() - 91),
        now,
        tol
    ));
    assert!(!shopify::verify_callback_timestamp(
        &q(now.timestamp() + 91),
        now,
        tol
    ));
    assert!(!shopify::verify_callback_timestamp(&[], now, tol));
}

#[test]
fn webhook_hmac() {
    let secret = SecretString::from(SECRET);
    let body = br#"{"id":1,"email":"a@b.c"}"#;
    let sig = shopify::sign_webhook(body, &secret);
    assert!(shopify::verify_webhook_hmac(body, &sig, &secret));
    assert!(!shopify::verify_webhook_hmac(b"{\"id\":2}", &sig, &secret));
    assert!(!shopify::verify_webhook_hmac(
        body,
        &sig,
        &SecretString::from("x")
    ));
    assert!(!shopify::verify_webhook_hmac(body, "not base64!", &secret));
    assert!(!shopify::verify_webhook_hmac(body, "", &secret));
}

#[tokio::test]
async fn authorize_url_is_offline() {
    let server = MockServer::start().await;
    let c = client(&server);
    let u = c.authorize_url(
        " Cool-Store.myshopify.com",
        "st@te",
        "https://app.test/cb?x=1",
    );
    assert!(
        u.starts_with(&format!(
            "{}/shopify/{SHOP}/admin/oauth/authorize?",
            server.uri()
        )),
        "{u}"
    );
    let parsed = url::Url::parse(&u).unwrap();
    let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    assert!(q.contains(&("client_id".into(), "client-id".into())));
    assert!(q.contains(&("scope".into(), "read_products,write_orders".into())));
    assert!(q.contains(&("redirect_uri".into(), "https://app.test/cb?x=1".into())));
    assert!(q.contains(&("state".into(), "st@te".into())));
    assert!(
        !u.contains("grant_options"),
        "offline tokens must not ask for per-user: {u}"
    );
    assert_eq!(c.authorize_url("evil.com", "s", "https://app.test/cb"), "");
}

#[tokio::test]
async fn exchange_code_asks_for_expiring_offline_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/shopify/{SHOP}/admin/oauth/access_token")))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "client_id": "client-id",
            "client_secret": SECRET,
            "code": "the-code",
            "expiring": "1",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN,
            "scope": "read_products,write_orders",
            "expires_in": 3600,
            "refresh_token": REFRESH,
            "refresh_token_expires_in": 7776000,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let before = chrono::Utc::now();
    let set = client(&server)
        .exchange_code(SHOP, "the-code")
        .await
        .unwrap();
    assert_eq!(set.access_token.expose_secret(), TOKEN);
    assert_eq!(set.refresh_token.as_ref().unwrap().expose_secret(), REFRESH);
    assert_eq!(set.scopes, vec!["read_products", "write_orders"]);
    let exp = set.expires_at.unwrap();
    assert!(exp >= before + chrono::Duration::seconds(3600));
    assert!(exp <= chrono::Utc::now() + chrono::Duration::seconds(3600));
    assert!(set.refresh_token_expires_at.unwrap() > exp);
    let dbg = format!("{set:?}");
    assert!(!dbg.contains(TOKEN) && !dbg.contains(REFRESH));
}

#[tokio::test]
async fn refresh_returns_the_rotated_refresh_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/shopify/{SHOP}/admin/oauth/access_token")))
        .and(body_json(json!({
            "client_id": "client-id",
            "client_secret": SECRET,
            "grant_type": "refresh_token",
            "refresh_token": REFRESH,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "shpat_new",
            "scope": "read_products",
            "expires_in": 3600,
            "refresh_token": "shprt_new",
            "refresh_token_expires_in": 7776000,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let set = client(&server)
        .refresh(SHOP, &SecretString::from(REFRESH))
        .await
        .unwrap();
    assert_eq!(set.access_token.expose_secret(), "shpat_new");
    assert_eq!(set.refresh_token.unwrap().expose_secret(), "shprt_new");
}

#[tokio::test]
async fn token_errors_are_classified_without_leaking() {
    let server = MockServer::start().await;
    let token_path = format!("/shopify/{SHOP}/admin/oauth/access_token");
    let c = client(&server);

    Mock::given(method("POST"))
        .and(path(&token_path))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": format!("refresh token {REFRESH} was rotated"),
            "access_token": "leaked",
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c
        .refresh(SHOP, &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected { status: 400, .. }),
        "{e:?}"
    );
    assert!(e.is_grant_refused() && !e.is_retryable());
    assert_no_leak(&e);

    Mock::given(method("POST"))
        .and(path(&token_path))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!("bad secret {SECRET}"),
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c.exchange_code(SHOP, "c").await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert_no_leak(&e);

    Mock::given(method("POST"))
        .and(path(&token_path))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2.0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c
        .refresh(SHOP, &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(e.is_retryable());

    Mock::given(method("POST"))
        .and(path(&token_path))
        .respond_with(ResponseTemplate::new(503).set_body_string(format!("down {TOKEN}")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c
        .refresh(SHOP, &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable() && !e.is_grant_refused());
    assert_no_leak(&e);

    Mock::given(method("POST"))
        .and(path(&token_path))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "{{\"access_token\": \"leaked\", \"expires_in\": \"{TOKEN}\""
        )))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = c
        .refresh(SHOP, &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e:?}");
    assert_no_leak(&e);

    let e = c.exchange_code("evil.com", "c").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected { status: 400, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let e = client(&server)
        .shop(SHOP, &SecretString::from(TOKEN))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Unavailable { status: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_no_leak(&e);

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = client_at(&format!("http://127.0.0.1:{port}"))
        .access_scopes(SHOP, &SecretString::from(TOKEN))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn admin_calls_send_the_access_token_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/shopify/{SHOP}/admin/api/2025-10/shop.json")))
        .and(header("x-shopify-access-token", TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "shop": {"id": 1, "name": "Cool Store", "domain": "cool.example", "myshopify_domain": SHOP, "currency": "USD"}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/shopify/{SHOP}/admin/oauth/access_scopes.json"
        )))
        .and(header("x-shopify-access-token", TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_scopes": [{"handle": "read_products"}, {"handle": "write_orders"}]
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let t = SecretString::from(TOKEN);
    let info = c.shop(SHOP, &t).await.unwrap();
    assert_eq!(info.name, "Cool Store");
    assert_eq!(info.domain, "cool.example");
    assert_eq!(info.myshopify_domain, SHOP);
    assert_eq!(
        c.access_scopes(SHOP, &t).await.unwrap(),
        vec!["read_products", "write_orders"]
    );

    let e = c
        .shop(SHOP, &SecretString::from("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected { status: 404, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn admin_401_is_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "errors": format!("[API] Invalid API key or access token {TOKEN}")
        })))
        .mount(&server)
        .await;
    let e = client(&server)
        .shop(SHOP, &SecretString::from(TOKEN))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(e.is_grant_refused());
    assert!(e.to_string().contains("Invalid API key"), "{e}");
    assert_no_leak(&e);
}

#[tokio::test]
async fn create_webhook_is_idempotent() {
    let server = MockServer::start().await;
    let hooks = format!("/shopify/{SHOP}/admin/api/2025-10/webhooks.json");
    Mock::given(method("POST"))
        .and(path(&hooks))
        .and(header("x-shopify-access-token", TOKEN))
        .and(body_json(json!({
            "webhook": {"topic": "orders/create", "address": "https://app.test/api/webhooks/shopify", "format": "json"}
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "webhook": {"id": 4759306, "topic": "orders/create", "address": "https://app.test/api/webhooks/shopify", "format": "json"}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(&hooks))
        .and(body_json(json!({
            "webhook": {"topic": "orders/updated", "address": "https://app.test/api/webhooks/shopify", "format": "json"}
        })))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "errors": {"address": ["for this topic has already been taken"]}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(&hooks))
        .and(query_param("topic", "orders/updated"))
        .and(query_param("address", "https://app.test/api/webhooks/shopify"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "webhooks": [{"id": 901, "topic": "orders/updated", "address": "https://app.test/api/webhooks/shopify"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(&hooks))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "errors": {"topic": ["Invalid topic specified"]}
        })))
        .with_priority(10)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(&hooks))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"webhooks": []})))
        .with_priority(10)
        .mount(&server)
        .await;
    let c = client(&server);
    let t = SecretString::from(TOKEN);
    let addr = "https://app.test/api/webhooks/shopify";
    assert_eq!(
        c.create_webhook(SHOP, &t, "orders/create", addr)
            .await
            .unwrap(),
        "4759306"
    );
    assert_eq!(
        c.create_webhook(SHOP, &t, "orders/updated", addr)
            .await
            .unwrap(),
        "901"
    );

    // A 422 that is not a duplicate stays an error.
    let e = c
        .create_webhook(SHOP, &t, "orders/bogus", "https://other.test/")
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected { status: 422, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("Invalid topic"), "{e}");
}

#[tokio::test]
async fn create_webhook_retryable_on_503() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let e = client(&server)
        .create_webhook(
            SHOP,
            &SecretString::from(TOKEN),
            "orders/create",
            "https://a.test/",
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn delete_webhook_treats_404_as_done() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(format!(
            "/shopify/{SHOP}/admin/api/2025-10/webhooks/11.json"
        )))
        .and(header("x-shopify-access-token", TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!(
            "/shopify/{SHOP}/admin/api/2025-10/webhooks/12.json"
        )))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errors": "Not Found"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!(
            "/shopify/{SHOP}/admin/api/2025-10/webhooks/13.json"
        )))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let c = client(&server);
    let t = SecretString::from(TOKEN);
    c.delete_webhook(SHOP, &t, "11").await.unwrap();
    c.delete_webhook(SHOP, &t, "12").await.unwrap();
    assert!(
        c.delete_webhook(SHOP, &t, "13")
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(c.delete_webhook(SHOP, &t, "../shop").await.is_err());
}
