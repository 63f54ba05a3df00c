//! OAuth: round trips and every way a callback must be refused.

use haven_proto::integrations::v1::{
    BeginOAuthRequest, CompleteOAuthRequest, IntegrationStatus, integration::Metadata,
};
use haven_providers::shopify;
use secrecy::SecretString;
use tonic::Code;
use uuid::Uuid;

use crate::common::*;

/// Begins and opens the start link as the browser would; returns the provider's URL.
async fn begin(stack: &Stack, token: &str, provider: &str, shop: &str) -> String {
    let start = stack
        .client()
        .await
        .begin_o_auth(request(
            BeginOAuthRequest {
                provider: provider.into(),
                shop: shop.into(),
                redirect_uri: String::new(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .authorize_url;
    start_link(stack, &start).await
}

async fn complete(
    stack: &Stack,
    token: Option<&str>,
    provider: &str,
    query: Vec<(String, String)>,
) -> Result<haven_proto::integrations::v1::Integration, tonic::Status> {
    let msg = CompleteOAuthRequest {
        provider: provider.into(),
        browser_binding: binding_of(&query),
        query: query.into_iter().collect(),
    };
    let request = match token {
        Some(t) => request(msg, t),
        None => tonic::Request::new(msg),
    };
    stack
        .client()
        .await
        .complete_o_auth(request)
        .await
        .map(|r| r.into_inner())
}

/// Re-signs a Shopify callback query after changing it, as only the app secret can.
fn resign(mut q: Vec<(String, String)>) -> Vec<(String, String)> {
    q.retain(|(k, _)| k != "hmac");
    let hmac = shopify::sign_callback(&q, &SecretString::from(SHOPIFY_SECRET));
    q.push(("hmac".into(), hmac));
    q
}

fn set(q: &mut [(String, String)], key: &str, value: &str) {
    for (k, v) in q.iter_mut() {
        if k == key {
            *v = value.to_owned();
        }
    }
}

async fn credentials(stack: &Stack) -> i64 {
    count(&stack.db, "SELECT count(*) FROM integrations.credentials").await
}

#[tokio::test]
async fn shopify_round_trip_stores_offline_token_metadata_and_webhooks() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let url = begin(&stack, &user(tenant), "shopify", SHOP).await;
    let authorize_query = query_of(&url);
    assert!(
        url.contains(&format!("/shopify/{SHOP}/admin/oauth/authorize")),
        "{url}"
    );
    assert!(
        !authorize_query
            .iter()
            .any(|(k, _)| k.starts_with("grant_options")),
        "online token asked for: {url}"
    );
    let state = &authorize_query
        .iter()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1;
    assert!(state.len() >= 22, "state carries at least 128 bits");
    // Stored hashed, never as sent.
    assert_eq!(
        count(&stack.db, &format!("SELECT count(*) FROM integrations.oauth_states WHERE encode(state_hash, 'escape') LIKE '%{state}%'")).await,
        0
    );

    let callback = authorize(&url).await;
    assert!(callback.starts_with(&format!(
        "{}/api/integrations/shopify/callback",
        stack.public_url()
    )));
    let integration = complete(&stack, None, "shopify", query_of(&callback))
        .await
        .unwrap();
    assert_eq!(integration.status, IntegrationStatus::Connected as i32);
    assert!(
        integration.token_expires_at.is_some(),
        "expiring offline token"
    );
    match integration.metadata {
        Some(Metadata::Shopify(m)) => {
            assert_eq!(m.shop_domain, SHOP);
            assert!(!m.shop_name.is_empty());
        }
        other => panic!("metadata {other:?}"),
    }
    assert!(!integration.scopes.is_empty());
    // Access and refresh token, sealed.
    assert_eq!(credentials(&stack).await, 2);
    // Eleven subscriptions: `WEBHOOK_TOPICS`' eight and the three compliance topics.
    let hooks = stack.fake.shopify_webhooks(SHOP);
    assert_eq!(hooks.len(), 11, "{hooks:?}");
    assert!(
        hooks
            .iter()
            .all(|(_, _, address)| address
                == &format!("{}/api/webhooks/shopify", stack.public_url()))
    );
    assert_eq!(
        count(
            &stack.db,
            "SELECT count(*) FROM integrations.shopify_webhooks WHERE status = 'registered'"
        )
        .await,
        11
    );
    // The wizard step is completed.
    let step: String = sqlx::query_scalar(
        "SELECT status FROM integrations.setup_progress WHERE tenant_id = $1 AND step = 'shopify'",
    )
    .bind(tenant)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(step, "completed");
}

#[tokio::test]
async fn pinterest_round_trip_with_pkce_where_supported() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let url = begin(&stack, &user(tenant), "pinterest", "").await;
    if haven_providers::pinterest::PinterestClient::supports_pkce() {
        assert!(url.contains("code_challenge="), "{url}");
        assert!(url.contains("code_challenge_method=S256"), "{url}");
    }
    let callback = authorize(&url).await;
    let integration = complete(
        &stack,
        Some(&user(tenant)),
        "pinterest",
        query_of(&callback),
    )
    .await
    .unwrap();
    assert_eq!(integration.status, IntegrationStatus::Connected as i32);
    match integration.metadata {
        Some(Metadata::Pinterest(m)) => {
            assert!(!m.account_name.is_empty());
            assert!(m.board_count > 0);
        }
        other => panic!("metadata {other:?}"),
    }
    assert_eq!(credentials(&stack).await, 2);
}

#[tokio::test]
async fn forged_stale_replayed_expired_and_foreign_callbacks_store_nothing() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let other = Uuid::new_v4();

    // Forged HMAC: the query changed without the secret.
    let cb = query_of(&authorize(&begin(&stack, &user(tenant), "shopify", SHOP).await).await);
    let mut forged = cb.clone();
    set(&mut forged, "code", "attacker-code");
    let err = complete(&stack, None, "shopify", forged).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("hmac"), "{}", err.message());
    let mut no_hmac = cb.clone();
    no_hmac.retain(|(k, _)| k != "hmac");
    assert_eq!(
        complete(&stack, None, "shopify", no_hmac)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    // Stale timestamp, correctly signed.
    let mut stale = cb.clone();
    let old = (chrono::Utc::now().timestamp() - 91).to_string();
    set(&mut stale, "timestamp", &old);
    let err = complete(&stack, None, "shopify", resign(stale))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("old"), "{}", err.message());

    // Another tenant's state: tenant `other` presents tenant's callback.
    let err = complete(&stack, Some(&user(other)), "shopify", cb.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("another tenant"),
        "{}",
        err.message()
    );
    assert_eq!(credentials(&stack).await, 0);

    // The genuine callback still works once, then is a replay.
    complete(&stack, None, "shopify", cb.clone()).await.unwrap();
    let before = credentials(&stack).await;
    let err = complete(&stack, None, "shopify", resign(cb.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("already used"), "{}", err.message());
    assert_eq!(credentials(&stack).await, before);

    // Expired state (Pinterest, other tenant, so nothing of theirs exists yet).
    let cb = query_of(&authorize(&begin(&stack, &user(other), "pinterest", "").await).await);
    sqlx::query("UPDATE integrations.oauth_states SET expires_at = now() - interval '1 second' WHERE consumed_at IS NULL")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    let err = complete(&stack, None, "pinterest", cb).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("expired"), "{}", err.message());
    // Unknown state.
    let err = complete(
        &stack,
        None,
        "pinterest",
        vec![
            ("code".into(), "x".into()),
            ("state".into(), "made-up".into()),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(credentials_of(&stack.db, other).await, 0);

    // Bad shop domains never reach Shopify.
    for shop in [
        "",
        "evil.com",
        "acme.myshopify.com.evil.com",
        "https://acme.myshopify.com/admin",
        "acme.myshopify.com:8443",
        "-acme.myshopify.com",
        "acme prints.myshopify.com",
        "acme.myshopify.io",
        "../acme.myshopify.com",
    ] {
        let err = stack
            .client()
            .await
            .begin_o_auth(request(
                BeginOAuthRequest {
                    provider: "shopify".into(),
                    shop: shop.into(),
                    redirect_uri: String::new(),
                },
                &user(tenant),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{shop:?}");
        assert!(
            err.message().starts_with("shop:"),
            "{shop:?}: {}",
            err.message()
        );
    }
}

#[tokio::test]
async fn declined_authorization_sets_error_the_user_can_act_on() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let url = begin(&stack, &user(tenant), "pinterest", "").await;
    let state = query_of(&url)
        .into_iter()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1;
    let err = complete(
        &stack,
        None,
        "pinterest",
        vec![
            ("error".into(), "access_denied".into()),
            ("state".into(), state),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let got = crate::lifecycle::status(&stack, tenant, "pinterest").await;
    assert_eq!(got.status, IntegrationStatus::Error as i32);
    assert!(got.last_error.contains("not granted"), "{}", got.last_error);
}

/// A callback must come from the browser that opened the start link: without its binding
/// nothing is stored and the state survives for that browser; a start link works once and
/// for 60 seconds.
#[tokio::test]
async fn callbacks_are_bound_to_the_browser_that_opened_the_start_link() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let cb = query_of(&authorize(&begin(&stack, &user(tenant), "pinterest", "").await).await);
    let msg = |binding: &str| CompleteOAuthRequest {
        provider: "pinterest".into(),
        query: cb.clone().into_iter().collect(),
        browser_binding: binding.into(),
    };
    for wrong in ["", "another-browsers-cookie"] {
        let err = stack
            .client()
            .await
            .complete_o_auth(tonic::Request::new(msg(wrong)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{wrong:?}");
        assert!(err.message().starts_with("browser:"), "{}", err.message());
    }
    assert_eq!(credentials(&stack).await, 0);
    let done = stack
        .client()
        .await
        .complete_o_auth(tonic::Request::new(msg(&binding_of(&cb))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, IntegrationStatus::Connected as i32);

    // A start link is single use, and dies after 60 seconds.
    let start_of = || async {
        stack
            .client()
            .await
            .begin_o_auth(request(
                BeginOAuthRequest {
                    provider: "pinterest".into(),
                    shop: String::new(),
                    redirect_uri: String::new(),
                },
                &user(tenant),
            ))
            .await
            .unwrap()
            .into_inner()
            .authorize_url
    };
    let ticket_of = |url: &str| {
        query_of(url)
            .into_iter()
            .find(|(k, _)| k == "ticket")
            .unwrap()
            .1
    };
    let start = |ticket: String| async {
        stack
            .client()
            .await
            .start_o_auth(haven_proto::integrations::v1::StartOAuthRequest {
                provider: "pinterest".into(),
                ticket,
            })
            .await
    };
    let url = start_of().await;
    assert!(
        url.contains("/api/integrations/pinterest/start?ticket="),
        "{url}"
    );
    start(ticket_of(&url)).await.unwrap();
    let err = start(ticket_of(&url)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("already used"), "{}", err.message());
    let url = start_of().await;
    sqlx::query(
        "UPDATE integrations.oauth_states SET ticket_expires_at = now() - interval '1 second'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let err = start(ticket_of(&url)).await.unwrap_err();
    assert!(err.message().contains("expired"), "{}", err.message());
    let err = start("not-a-ticket".into()).await.unwrap_err();
    assert!(
        err.message().contains("unknown start link"),
        "{}",
        err.message()
    );
}
