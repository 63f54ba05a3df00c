#![allow(clippy::unwrap_used)]
//! The fakes driven by the real `haven-providers` clients.

mod shopify_catalog;

use std::time::Duration;

use haven_fake_providers::{FakeConfig, FakeProviders, FakeRoute};
use haven_providers::dynamic_mockups::DynamicMockupsClient;
use haven_providers::klaviyo::KlaviyoClient;
use haven_providers::pinterest::{PinterestClient, PinterestConfig};
use haven_providers::resend::ResendClient;
use haven_providers::shopify::{self, ShopifyClient, ShopifyConfig};
use haven_providers::sky_pilot::SkyPilotClient;
use haven_providers::{ExposeSecret, HttpSettings, ProviderError, SecretString, pkce};

const SHOP: &str = "cool-store.myshopify.com";
const REDIRECT: &str = "http://app.test/api/integrations/shopify/callback";
const HOOK: &str = "http://app.test/api/webhooks/shopify";

async fn fake() -> FakeProviders {
    FakeProviders::start(FakeConfig::default()).await.unwrap()
}

fn shopify_client(fake: &FakeProviders, secret: &str) -> ShopifyClient {
    ShopifyClient::new(
        ShopifyConfig {
            client_id: FakeConfig::default().shopify_client_id,
            client_secret: SecretString::from(secret),
            scopes: vec![
                "read_products".into(),
                "write_products".into(),
                "read_orders".into(),
            ],
            api_version: shopify::DEFAULT_API_VERSION.into(),
            url_template: fake.shopify_url_template(),
        },
        &HttpSettings::default(),
    )
    .unwrap()
}

fn pinterest_client(fake: &FakeProviders) -> PinterestClient {
    let config = FakeConfig::default();
    PinterestClient::new(
        PinterestConfig {
            client_id: config.pinterest_client_id,
            client_secret: config.pinterest_client_secret,
            scopes: vec![
                "boards:read".into(),
                "pins:write".into(),
                "user_accounts:read".into(),
            ],
            api_base: fake.pinterest_api_base(),
            authorize_url: fake.pinterest_authorize_url(),
        },
        &HttpSettings::default(),
    )
    .unwrap()
}

/// Follows the consent page like a browser would, returning the callback's query pairs.
async fn consent(url: &str) -> Vec<(String, String)> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(url).send().await.unwrap();
    assert_eq!(
        response.status(),
        302,
        "consent page did not redirect: {url}"
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let location = url::Url::parse(&location).unwrap();
    location.query_pairs().into_owned().collect()
}

fn get<'a>(q: &'a [(String, String)], key: &str) -> &'a str {
    q.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

#[tokio::test]
async fn shopify_code_token_refresh_webhook_round_trip() {
    let fake = fake().await;
    let secret = FakeConfig::default().shopify_client_secret;
    let client = shopify_client(&fake, secret.expose_secret());

    // Install: the fake approves and redirects back with a signed callback.
    let callback = consent(&client.authorize_url(SHOP, "state-123", REDIRECT)).await;
    for key in ["code", "hmac", "host", "shop", "state", "timestamp"] {
        assert!(
            callback.iter().any(|(k, _)| k == key),
            "callback lacks {key}"
        );
    }
    assert!(shopify::verify_callback_hmac(&callback, &secret));
    assert!(!shopify::verify_callback_hmac(
        &callback,
        &SecretString::from("other")
    ));
    assert!(shopify::verify_callback_timestamp(
        &callback,
        chrono::Utc::now(),
        shopify::CALLBACK_TIMESTAMP_TOLERANCE
    ));
    assert_eq!(get(&callback, "state"), "state-123");
    assert_eq!(get(&callback, "shop"), SHOP);

    // Exchange: an expiring offline token with a refresh token; the code is single-use.
    let code = get(&callback, "code");
    let tokens = client.exchange_code(SHOP, code).await.unwrap();
    assert!(tokens.expires_at.is_some());
    let refresh = tokens.refresh_token.clone().unwrap();
    assert_eq!(
        tokens.scopes,
        vec!["read_products", "write_products", "read_orders"]
    );
    let replay = client.exchange_code(SHOP, code).await.unwrap_err();
    assert!(replay.is_grant_refused(), "{replay:?}");
    assert!(
        fake.issued_access_tokens()
            .contains(&tokens.access_token.expose_secret().to_owned())
    );

    // Metadata.
    let info = client.shop(SHOP, &tokens.access_token).await.unwrap();
    assert_eq!(info.name, "Cool Store");
    assert_eq!(info.myshopify_domain, SHOP);
    assert_eq!(
        client
            .access_scopes(SHOP, &tokens.access_token)
            .await
            .unwrap(),
        vec!["read_products", "write_products", "read_orders"]
    );
    // A token is bound to its shop.
    let other = client
        .shop("other.myshopify.com", &tokens.access_token)
        .await
        .unwrap_err();
    assert!(
        matches!(other, ProviderError::Unauthorized { .. }),
        "{other:?}"
    );

    // Webhooks: the eight topics the web app relies on plus the three compliance topics,
    // idempotently.
    let mut ids = Vec::new();
    for topic in shopify::WEBHOOK_TOPICS
        .iter()
        .chain(&shopify::COMPLIANCE_TOPICS)
    {
        ids.push(
            client
                .create_webhook(SHOP, &tokens.access_token, topic, HOOK)
                .await
                .unwrap(),
        );
    }
    let again = client
        .create_webhook(SHOP, &tokens.access_token, "orders/create", HOOK)
        .await
        .unwrap();
    assert_eq!(again, ids[0]);
    let registered = fake.shopify_webhooks(SHOP);
    assert_eq!(registered.len(), 11);
    assert!(registered.iter().all(|(_, _, address)| address == HOOK));

    // Refresh rotates: the new refresh token works, the old one is dead.
    let renewed = client.refresh(SHOP, &refresh).await.unwrap();
    let new_refresh = renewed.refresh_token.clone().unwrap();
    assert_ne!(new_refresh.expose_secret(), refresh.expose_secret());
    assert_ne!(
        renewed.access_token.expose_secret(),
        tokens.access_token.expose_secret()
    );
    let stale = client.refresh(SHOP, &refresh).await.unwrap_err();
    assert!(stale.is_grant_refused(), "{stale:?}");
    client.shop(SHOP, &renewed.access_token).await.unwrap();
    assert_eq!(fake.refresh_calls("shopify"), 2);

    // Deregistration; a second delete of the same id is fine.
    client
        .delete_webhook(SHOP, &renewed.access_token, &ids[0])
        .await
        .unwrap();
    client
        .delete_webhook(SHOP, &renewed.access_token, &ids[0])
        .await
        .unwrap();
    assert_eq!(fake.shopify_webhooks(SHOP).len(), 10);

    // Revocation: every later refresh is refused for good.
    fake.revoke_refresh_tokens("shopify");
    let revoked = client.refresh(SHOP, &new_refresh).await.unwrap_err();
    assert!(
        revoked.is_grant_refused() && !revoked.is_retryable(),
        "{revoked:?}"
    );

    // Expired access tokens get 401.
    fake.expire_access_tokens("shopify");
    let expired = client.shop(SHOP, &renewed.access_token).await.unwrap_err();
    assert!(
        matches!(expired, ProviderError::Unauthorized { .. }),
        "{expired:?}"
    );
}

#[tokio::test]
async fn shopify_rejects_a_wrong_client_secret() {
    let fake = fake().await;
    let good = shopify_client(
        &fake,
        FakeConfig::default().shopify_client_secret.expose_secret(),
    );
    let bad = shopify_client(&fake, "wrong-secret");
    let callback = consent(&good.authorize_url(SHOP, "s", REDIRECT)).await;
    // Signed with the real secret, so it fails verification with the wrong one...
    assert!(!shopify::verify_callback_hmac(
        &callback,
        &SecretString::from("wrong-secret")
    ));
    // ...and the token endpoint refuses the wrong secret.
    let e = bad
        .exchange_code(SHOP, get(&callback, "code"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrong-secret"));
}

#[tokio::test]
async fn pinterest_with_pkce_and_continuous_refresh() {
    let fake = fake().await;
    let client = pinterest_client(&fake);
    let redirect = "http://app.test/api/integrations/pinterest/callback";

    // A wrong verifier is refused (and burns the code).
    let verifier = pkce::verifier();
    let challenge = pkce::challenge_s256(&verifier);
    let cb = consent(&client.authorize_url("st-1", redirect, Some(&challenge))).await;
    assert_eq!(get(&cb, "state"), "st-1");
    let e = client
        .exchange_code(get(&cb, "code"), redirect, Some(&pkce::verifier()))
        .await
        .unwrap_err();
    assert!(e.is_grant_refused(), "{e:?}");

    // The right verifier works; a wrong redirect_uri would not.
    let cb = consent(&client.authorize_url("st-2", redirect, Some(&challenge))).await;
    let tokens = client
        .exchange_code(get(&cb, "code"), redirect, Some(&verifier))
        .await
        .unwrap();
    let refresh = tokens.refresh_token.clone().unwrap();
    assert!(tokens.refresh_token_expires_at.is_some());
    assert_eq!(
        tokens.scopes,
        vec!["boards:read", "pins:write", "user_accounts:read"]
    );
    let cb = consent(&client.authorize_url("st-3", redirect, None)).await;
    let e = client
        .exchange_code(get(&cb, "code"), "http://elsewhere.test/cb", None)
        .await
        .unwrap_err();
    assert!(e.is_grant_refused(), "{e:?}");

    // Account metadata; 12 boards by default, and 250 set by a test come over three pages.
    let account = client.account(&tokens.access_token).await.unwrap();
    assert_eq!(account.username, "havenhold");
    assert_eq!(account.business_name.as_deref(), Some("Haven Hold"));
    assert_eq!(account.account_id, "2783136121146311751");
    assert_eq!(client.boards(&tokens.access_token).await.unwrap().len(), 12);
    fake.set_pinterest_boards(
        (0..250)
            .map(|i| haven_fake_providers::FakeBoard {
                id: format!("b{i}"),
                name: format!("Board {i}"),
                pin_count: i,
            })
            .collect(),
    );
    let boards = client.boards(&tokens.access_token).await.unwrap();
    assert_eq!(boards.len(), 250);
    assert_eq!(boards[249].id, "b249");
    assert_eq!(boards[249].pin_count, 249);

    // Continuous refresh rotates the refresh token.
    let renewed = client.refresh(&refresh).await.unwrap();
    let rotated = renewed.refresh_token.clone().unwrap();
    assert_ne!(rotated.expose_secret(), refresh.expose_secret());
    assert!(
        client
            .refresh(&refresh)
            .await
            .unwrap_err()
            .is_grant_refused()
    );
    client.account(&renewed.access_token).await.unwrap();
    assert_eq!(fake.refresh_calls("pinterest"), 2);

    fake.revoke_refresh_tokens("pinterest");
    assert!(
        client
            .refresh(&rotated)
            .await
            .unwrap_err()
            .is_grant_refused()
    );

    let e = client
        .account(&SecretString::from("pina_not_issued"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn pinterest_without_pkce() {
    let fake = fake().await;
    let client = pinterest_client(&fake);
    let redirect = "http://app.test/cb";
    let cb = consent(&client.authorize_url("s", redirect, None)).await;
    let tokens = client
        .exchange_code(get(&cb, "code"), redirect, None)
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_some());
}

#[tokio::test]
async fn racing_refreshes_overlap_and_only_one_wins() {
    let fake = fake().await;
    let client = shopify_client(
        &fake,
        FakeConfig::default().shopify_client_secret.expose_secret(),
    );
    let cb = consent(&client.authorize_url(SHOP, "s", REDIRECT)).await;
    let tokens = client.exchange_code(SHOP, get(&cb, "code")).await.unwrap();
    let refresh = tokens.refresh_token.unwrap();

    fake.set_token_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        client.refresh(SHOP, &refresh),
        client.refresh(SHOP, &refresh)
    );
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "refreshes did not overlap"
    );
    assert_eq!(fake.refresh_calls("shopify"), 2);
    let (ok, err) = match (a, b) {
        (Ok(t), Err(e)) | (Err(e), Ok(t)) => (t, e),
        other => panic!("expected exactly one winner: {other:?}"),
    };
    assert!(err.is_grant_refused(), "{err:?}");
    assert!(ok.refresh_token.is_some());
}

#[tokio::test]
async fn api_keys_valid_invalid_and_send_only() {
    let fake = fake().await;
    fake.add_api_key("klaviyo", "pk_klaviyo_good");
    fake.add_api_key("dynamic-mockups", "dm-good:secret");
    fake.add_api_key("resend", "re_full_access");
    fake.add_resend_send_only_key("re_send_only");
    fake.add_api_key("sky_pilot", "sp_good");
    let http = HttpSettings::default();

    let klaviyo = KlaviyoClient::new(&fake.klaviyo_base(), &http).unwrap();
    assert_eq!(
        klaviyo
            .validate(&SecretString::from("pk_klaviyo_good"))
            .await
            .unwrap()
            .list_count,
        3
    );
    let e = klaviyo
        .validate(&SecretString::from("pk_klaviyo_bad"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");

    let dm = DynamicMockupsClient::new(&fake.dynamic_mockups_base(), &http).unwrap();
    dm.validate(&SecretString::from("dm-good:secret"))
        .await
        .unwrap();
    let e = dm
        .validate(&SecretString::from("dm-bad"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");

    let resend = ResendClient::new(&fake.resend_base(), &http).unwrap();
    let full = resend
        .validate(&SecretString::from("re_full_access"))
        .await
        .unwrap();
    assert!(!full.send_only && full.domain_verified);
    assert_eq!(full.from_domain.as_deref(), Some("mail.havenhold.test"));
    let send_only = resend
        .validate(&SecretString::from("re_send_only"))
        .await
        .unwrap();
    assert!(send_only.send_only && !send_only.domain_verified);
    let e = resend
        .validate(&SecretString::from("re_bogus"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e:?}").contains("re_bogus"));

    let sky = SkyPilotClient::new(&fake.sky_pilot_base(), &http).unwrap();
    sky.validate(&SecretString::from("sp_good")).await.unwrap();
    assert!(
        sky.validate(&SecretString::from("sp_bad"))
            .await
            .unwrap_err()
            .is_grant_refused()
    );
}

#[tokio::test]
async fn fail_next_then_success() {
    let fake = fake().await;
    let client = shopify_client(
        &fake,
        FakeConfig::default().shopify_client_secret.expose_secret(),
    );
    let cb = consent(&client.authorize_url(SHOP, "s", REDIRECT)).await;
    let tokens = client.exchange_code(SHOP, get(&cb, "code")).await.unwrap();

    fake.fail_next(FakeRoute::ShopifyCreateWebhook, 503, 2);
    for _ in 0..2 {
        let e = client
            .create_webhook(SHOP, &tokens.access_token, "orders/create", HOOK)
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
        assert!(e.is_retryable());
    }
    client
        .create_webhook(SHOP, &tokens.access_token, "orders/create", HOOK)
        .await
        .unwrap();
    assert_eq!(fake.shopify_webhooks(SHOP).len(), 1);

    fake.fail_next(FakeRoute::ShopifyToken, 429, 1);
    let e = client
        .refresh(SHOP, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    // The failed attempt did not consume the refresh token.
    client
        .refresh(SHOP, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();

    fake.add_api_key("resend", "re_key");
    fake.fail_next(FakeRoute::ResendDomains, 500, 1);
    let resend = ResendClient::new(&fake.resend_base(), &HttpSettings::default()).unwrap();
    assert!(
        resend
            .validate(&SecretString::from("re_key"))
            .await
            .unwrap_err()
            .is_retryable()
    );
    resend
        .validate(&SecretString::from("re_key"))
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let fake = fake().await;
    let base = fake.base_url();
    fake.shutdown().await;
    let sky = SkyPilotClient::new(&format!("{base}/sky-pilot"), &HttpSettings::default()).unwrap();
    let e = sky.validate(&SecretString::from("k")).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

/// Resend's Send Email: the attachment arrives intact, a repeated Idempotency-Key sends
/// nothing new (and with another body is refused), a 503 is retryable, a bad key is not.
#[tokio::test]
async fn resend_sends_email_with_attachments_once_per_idempotency_key() {
    use haven_providers::resend::{Attachment, Email};
    let fake = fake().await;
    fake.add_api_key("resend", "re_live_key");
    fake.add_resend_send_only_key("re_send_only");
    let resend = ResendClient::new(&fake.resend_base(), &HttpSettings::default()).unwrap();
    let file: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let email = Email {
        from: "Haven <exports@example.com>".into(),
        to: vec!["ops@example.com".into()],
        subject: "Weekly orders".into(),
        text: "Attached.".into(),
        html: None,
        attachments: vec![Attachment {
            filename: "orders.csv".into(),
            content_type: "text/csv".into(),
            content: file.clone(),
        }],
    };
    let key = SecretString::from("re_live_key");
    let id = resend.send(&key, &email, "run-1").await.unwrap();
    // The same call again (a retry after a lost answer): the same id, nothing sent twice.
    assert_eq!(resend.send(&key, &email, "run-1").await.unwrap(), id);
    // A sending-only key may send.
    let other = Email {
        subject: "Other".into(),
        attachments: vec![],
        ..email.clone()
    };
    resend
        .send(&SecretString::from("re_send_only"), &other, "run-2")
        .await
        .unwrap();
    let sent = fake.resend_emails();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].id, id);
    assert_eq!(sent[0].to, vec!["ops@example.com".to_owned()]);
    assert_eq!(sent[0].idempotency_key.as_deref(), Some("run-1"));
    assert_eq!(sent[0].attachments, vec![("orders.csv".to_owned(), file)]);
    // The same key with another body is refused; a bad key is refused; a 503 may be retried.
    assert!(resend.send(&key, &other, "run-1").await.is_err());
    let bad = resend
        .send(&SecretString::from("re_wrong"), &other, "run-3")
        .await
        .unwrap_err();
    assert!(!bad.is_retryable(), "{bad:?}");
    fake.fail_next(FakeRoute::ResendEmails, 503, 1);
    let busy = resend.send(&key, &other, "run-4").await.unwrap_err();
    assert!(busy.is_retryable(), "{busy:?}");
    assert_eq!(fake.resend_emails().len(), 2);
    // No secret in what the error says.
    assert!(!format!("{bad:?}{busy:?}").contains("re_live_key"));
}
