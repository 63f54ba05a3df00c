//! API keys, tokens and their refresh, disconnecting, webhooks and the retry queue.

use std::time::Duration;

use futures::StreamExt;
use haven_auth::Role;
use haven_proto::events::v1::{IntegrationEvent, ShopifyWebhook};
use haven_proto::integrations::v1::{
    BeginOAuthRequest, CompleteOAuthRequest, ConnectApiKeyRequest, DisconnectRequest,
    GetAccessTokenRequest, GetIntegrationRequest, IntegrationStatus, integration::Metadata,
};
use prost::Message;
use tonic::Code;
use uuid::Uuid;

use crate::common::*;

/// Connects Shopify for `tenant` through the fake's authorize page.
pub async fn connect_shopify(stack: &Stack, tenant: Uuid) {
    connect_oauth(stack, tenant, "shopify", SHOP).await;
}

pub async fn connect_oauth(stack: &Stack, tenant: Uuid, provider: &str, shop: &str) {
    let mut c = stack.client().await;
    let url = c
        .begin_o_auth(request(
            BeginOAuthRequest {
                provider: provider.into(),
                shop: shop.into(),
                redirect_uri: String::new(),
            },
            &user(tenant),
        ))
        .await
        .unwrap()
        .into_inner()
        .authorize_url;
    let callback = authorize(&start_link(stack, &url).await).await;
    let query = query_of(&callback);
    c.complete_o_auth(tonic::Request::new(CompleteOAuthRequest {
        provider: provider.into(),
        browser_binding: binding_of(&query),
        query: query.into_iter().collect(),
    }))
    .await
    .unwrap();
}

pub async fn access_token(
    stack: &Stack,
    tenant: Uuid,
    provider: &str,
    min_valid: u32,
) -> Result<String, tonic::Status> {
    stack
        .client()
        .await
        .get_access_token(request(
            GetAccessTokenRequest {
                tenant_id: tenant.to_string(),
                provider: provider.into(),
                min_valid_seconds: min_valid,
            },
            &service(),
        ))
        .await
        .map(|r| r.into_inner().access_token)
}

pub async fn connect_key(
    stack: &Stack,
    tenant: Uuid,
    provider: &str,
    key: &str,
) -> Result<haven_proto::integrations::v1::Integration, tonic::Status> {
    stack
        .client()
        .await
        .connect_api_key(request(
            ConnectApiKeyRequest {
                provider: provider.into(),
                api_key: key.into(),
            },
            &user(tenant),
        ))
        .await
        .map(|r| r.into_inner())
}

pub async fn status(
    stack: &Stack,
    tenant: Uuid,
    provider: &str,
) -> haven_proto::integrations::v1::Integration {
    stack
        .client()
        .await
        .get_integration(request(
            GetIntegrationRequest {
                provider: provider.into(),
            },
            &user(tenant),
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn api_keys_are_validated_with_the_provider_before_storing() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    stack.fake.add_api_key("klaviyo", "pk_live_valid_0001");
    stack.fake.add_api_key("dynamic_mockups", "dm_valid_0001");
    stack.fake.add_api_key("sky_pilot", "sp_valid_0001");
    stack.fake.add_resend_send_only_key("re_sendonly_0001");

    let k = connect_key(&stack, tenant, "klaviyo", "pk_live_valid_0001")
        .await
        .unwrap();
    assert_eq!(k.status, IntegrationStatus::Connected as i32);
    assert!(matches!(k.metadata, Some(Metadata::Klaviyo(_))));
    connect_key(&stack, tenant, "dynamic_mockups", "dm_valid_0001")
        .await
        .unwrap();
    connect_key(&stack, tenant, "sky_pilot", "sp_valid_0001")
        .await
        .unwrap();
    // A send-only Resend key is a valid key.
    let r = connect_key(&stack, tenant, "resend", "re_sendonly_0001")
        .await
        .unwrap();
    assert_eq!(r.status, IntegrationStatus::Connected as i32);

    // The stored key comes back to a service.
    assert_eq!(
        access_token(&stack, tenant, "klaviyo", 0).await.unwrap(),
        "pk_live_valid_0001"
    );

    // An invalid key: InvalidArgument, status error, nothing stored.
    let other = Uuid::new_v4();
    let err = connect_key(&stack, other, "klaviyo", "pk_live_wrong")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("api_key:"), "{}", err.message());
    assert!(
        !err.message().contains("pk_live_wrong"),
        "key echoed: {}",
        err.message()
    );
    let s = status(&stack, other, "klaviyo").await;
    assert_eq!(s.status, IntegrationStatus::Error as i32);
    assert!(!s.last_error.is_empty());
    assert_eq!(credentials_of(&stack.db, other).await, 0);

    // Wrong kind of provider, unknown provider, blank key.
    assert_eq!(
        connect_key(&stack, tenant, "shopify", "x")
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let err = connect_key(&stack, tenant, "mailchimp", "x")
        .await
        .unwrap_err();
    assert!(
        err.message().contains("unknown provider `mailchimp`"),
        "{}",
        err.message()
    );
    assert_eq!(
        connect_key(&stack, tenant, "klaviyo", "  ")
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn only_role_service_gets_tokens_and_tenants_are_isolated() {
    let stack = Stack::start().await;
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    stack.fake.add_api_key("klaviyo", "pk_live_tenant_a");
    connect_key(&stack, a, "klaviyo", "pk_live_tenant_a")
        .await
        .unwrap();
    let mut c = stack.client().await;

    // A user (or admin) of the very tenant cannot read the secret.
    for roles in [
        vec![Role::User],
        vec![Role::Admin],
        vec![Role::User, Role::Admin],
    ] {
        let err = c
            .get_access_token(request(
                GetAccessTokenRequest {
                    tenant_id: a.to_string(),
                    provider: "klaviyo".into(),
                    min_valid_seconds: 0,
                },
                &token_for(a, "u", &roles),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    // A service token limited to tenant B cannot read A's credential; one for A can.
    let scoped = |tenant: Uuid| {
        request(
            GetAccessTokenRequest {
                tenant_id: a.to_string(),
                provider: "klaviyo".into(),
                min_valid_seconds: 0,
            },
            &token_for(tenant, "svc-scoped", &[Role::Service]),
        )
    };
    let err = c.get_access_token(scoped(b)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("tenant_id"), "{}", err.message());
    assert_eq!(
        c.get_access_token(scoped(a))
            .await
            .unwrap()
            .into_inner()
            .access_token,
        "pk_live_tenant_a"
    );
    // No token at all.
    let err = c
        .get_access_token(tonic::Request::new(GetAccessTokenRequest {
            tenant_id: a.to_string(),
            provider: "klaviyo".into(),
            min_valid_seconds: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Tenant B sees nothing of A's through any RPC.
    let list = c
        .list_integrations(request(Default::default(), &user(b)))
        .await
        .unwrap()
        .into_inner();
    assert!(list.integrations.is_empty());
    let err = c
        .get_integration(request(
            GetIntegrationRequest {
                provider: "klaviyo".into(),
            },
            &user(b),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .disconnect(request(
            DisconnectRequest {
                provider: "klaviyo".into(),
            },
            &user(b),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let progress = c
        .get_setup_progress(request(Default::default(), &user(b)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(progress.completed_count, 0);
    let progress = c
        .get_setup_progress(request(Default::default(), &user(a)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(progress.completed_count, 1);
    // A's integration is still connected after B's attempts.
    assert_eq!(
        status(&stack, a, "klaviyo").await.status,
        IntegrationStatus::Connected as i32
    );
    // Every tenant-scoped RPC needs a token.
    assert_eq!(
        c.list_integrations(tonic::Request::new(Default::default()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // A service asking for a tenant that never connected: NotFound, not someone else's token.
    assert_eq!(
        access_token(&stack, b, "klaviyo", 0)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn racing_refreshers_make_one_provider_call_and_keep_the_rotated_refresh_token() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    let replica = stack.replica(stack.config.clone()).await;
    let first_token = access_token(&stack, tenant, "shopify", 0).await.unwrap();

    // The token now expires within the window both callers ask for.
    sqlx::query(
        "UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    stack.fake.set_token_delay(Duration::from_millis(400));
    let call = |addr: Option<std::net::SocketAddr>| {
        let stack = &stack;
        async move {
            let mut c = match addr {
                Some(a) => client_at(a).await,
                None => stack.client().await,
            };
            c.get_access_token(request(
                GetAccessTokenRequest {
                    tenant_id: tenant.to_string(),
                    provider: "shopify".into(),
                    min_valid_seconds: 600,
                },
                &service(),
            ))
            .await
            .unwrap()
            .into_inner()
            .access_token
        }
    };
    let results = futures::future::join_all([
        call(None),
        call(Some(replica)),
        call(None),
        call(Some(replica)),
    ])
    .await;
    assert_eq!(
        stack.fake.refresh_calls("shopify"),
        1,
        "one refresh for four racing callers"
    );
    assert!(
        results.iter().all(|t| t == &results[0]),
        "every caller got the renewed token"
    );
    assert_ne!(results[0], first_token);

    // The rotated refresh token was kept: the fake revoked the old one, so a second refresh
    // only works with the new one.
    sqlx::query(
        "UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let third = access_token(&stack, tenant, "shopify", 600).await.unwrap();
    assert_ne!(third, results[0]);
    assert_eq!(stack.fake.refresh_calls("shopify"), 2);
}

#[tokio::test]
async fn background_refresher_renews_expiring_tokens_and_a_refused_refresh_expires_them() {
    let stack = Stack::start_with(|mut c| {
        c.refresh_interval = Duration::from_millis(200);
        c
    })
    .await;
    let tenant = Uuid::new_v4();
    connect_oauth(&stack, tenant, "pinterest", "").await;
    let events = subscribe(&stack, "haven.integrations.events.pinterest.>").await;

    sqlx::query(
        "UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    eventually("the background refresh", || async {
        stack.fake.refresh_calls("pinterest") >= 1
    })
    .await;
    eventually("a later expiry", || async {
        count(&stack.db, "SELECT count(*) FROM integrations.integrations WHERE token_expires_at > now() + interval '30 minutes'").await == 1
    })
    .await;

    // The provider now refuses: expired, event published, GetAccessToken says reconnect.
    stack.fake.revoke_refresh_tokens("pinterest");
    sqlx::query(
        "UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    eventually("status expired", || async {
        status(&stack, tenant, "pinterest").await.status == IntegrationStatus::Expired as i32
    })
    .await;
    let err = access_token(&stack, tenant, "pinterest", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("reconnect"), "{}", err.message());
    let kinds = collect_kinds(events, 3).await;
    assert!(kinds.contains(&"refreshed".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"expired".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn webhook_registration_failing_with_503_is_retried_by_the_retry_service() {
    let stack = Stack::start().await;
    // The retry service, in-process, on the same database and bus.
    let common = haven_server::CommonArgs::new(
        &stack.db.url,
        &haven_testkit::nats_url(),
        &stack.ns,
        JWT_SECRET,
    );
    let retry = haven_testkit::spawn(&stack.stop, |l, shutdown| {
        haven_retry::serve(haven_retry::Config::for_test(common), l, shutdown)
    })
    .await;
    haven_testkit::wait_serving(retry.addr).await;
    stack.fake.fail_next(
        haven_fake_providers::FakeRoute::ShopifyCreateWebhook,
        503,
        2,
    );
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    // Connected at once; the two failed topics wait in the retry queue.
    assert_eq!(
        status(&stack, tenant, "shopify").await.status,
        IntegrationStatus::Connected as i32
    );
    eventually("all eleven webhooks registered", || async {
        count(
            &stack.db,
            "SELECT count(*) FROM integrations.shopify_webhooks WHERE status = 'registered'",
        )
        .await
            == 11
    })
    .await;
    assert_eq!(stack.fake.shopify_webhooks(SHOP).len(), 11);
    eventually("the retry items resolved", || async {
        count(&stack.db, "SELECT count(*) FROM retry.retry_items WHERE operation_type = 'integrations.register_webhook' AND status = 'resolved'").await == 2
    })
    .await;
    // Each item names the integration, for the error-management UI.
    let linked = count(
        &stack.db,
        "SELECT count(*) FROM retry.retry_items r JOIN integrations.integrations i \
         ON r.reference_id = i.id::text WHERE r.reference_table = 'integrations.integrations'",
    )
    .await;
    assert_eq!(linked, 2);
}

#[tokio::test]
async fn disconnect_deletes_credentials_deregisters_webhooks_and_announces_it() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    let events = subscribe(&stack, "haven.integrations.events.shopify.>").await;
    let row = stack
        .client()
        .await
        .disconnect(request(
            DisconnectRequest {
                provider: "shopify".into(),
            },
            &user(tenant),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row.status, IntegrationStatus::Disconnected as i32);
    assert!(row.disconnected_at.is_some());
    assert_eq!(
        count(&stack.db, "SELECT count(*) FROM integrations.credentials").await,
        0
    );
    assert_eq!(
        count(
            &stack.db,
            "SELECT count(*) FROM integrations.shopify_webhooks"
        )
        .await,
        0
    );
    assert!(stack.fake.shopify_webhooks(SHOP).is_empty());
    assert_eq!(
        access_token(&stack, tenant, "shopify", 0)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        collect_kinds(events, 1).await,
        vec!["disconnected".to_owned()]
    );
}

#[tokio::test]
async fn app_uninstalled_webhook_disconnects_the_shop() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    publish_uninstall(&stack).await;
    eventually("disconnected", || async {
        status(&stack, tenant, "shopify").await.status == IntegrationStatus::Disconnected as i32
    })
    .await;
    let s = status(&stack, tenant, "shopify").await;
    assert!(s.last_error.contains("uninstalled"), "{}", s.last_error);
    assert_eq!(
        count(&stack.db, "SELECT count(*) FROM integrations.credentials").await,
        0
    );
}

/// Whatever the unsigned header said, the handler acts on the shop the signed body names.
#[tokio::test]
async fn an_uninstall_acts_on_the_shop_in_the_body_not_the_header() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    let bus = test_bus(&stack).await;
    for (id, body) in [
        (
            "other-shop",
            &br#"{"id":1,"myshopify_domain":"someone-else.myshopify.com"}"#[..],
        ),
        ("not-json", &b"shop=acme-prints.myshopify.com"[..]),
    ] {
        let webhook = ShopifyWebhook {
            shop_domain: SHOP.into(),
            topic: "app/uninstalled".into(),
            webhook_id: id.into(),
            body: body.to_vec().into(),
            shop_domain_signed: true,
            ..Default::default()
        };
        bus.publish("haven.webhooks.shopify.app.uninstalled", &webhook, id)
            .await
            .unwrap();
    }
    // A genuine one for another tenant's shop shows the consumer has read past both.
    let other = Uuid::new_v4();
    connect_oauth(&stack, other, "shopify", "marker-shop.myshopify.com").await;
    let webhook = ShopifyWebhook {
        shop_domain: "marker-shop.myshopify.com".into(),
        topic: "app/uninstalled".into(),
        body: br#"{"myshopify_domain":"marker-shop.myshopify.com"}"#
            .to_vec()
            .into(),
        ..Default::default()
    };
    bus.publish("haven.webhooks.shopify.app.uninstalled", &webhook, "marker")
        .await
        .unwrap();
    eventually("the marker shop disconnected", || async {
        status(&stack, other, "shopify").await.status == IntegrationStatus::Disconnected as i32
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&stack, tenant, "shopify").await.status,
        IntegrationStatus::Connected as i32
    );
}

/// A bus client in the stack's namespace, publishing as other services would.
/// Publishes SHOP's verified `app/uninstalled` webhook, as the gateway would.
pub async fn publish_uninstall(stack: &Stack) {
    let webhook = ShopifyWebhook {
        shop_domain: SHOP.into(),
        topic: "app/uninstalled".into(),
        webhook_id: Uuid::new_v4().to_string(),
        body: br#"{"id":1,"domain":"acme-prints.myshopify.com"}"#.to_vec().into(),
        ..Default::default()
    };
    test_bus(stack)
        .await
        .publish(
            "haven.webhooks.shopify.app.uninstalled",
            &webhook,
            &webhook.webhook_id,
        )
        .await
        .unwrap();
}

pub async fn test_bus(stack: &Stack) -> haven_bus::Bus {
    haven_bus::Bus::connect(
        &haven_bus::NatsArgs::new(haven_testkit::nats_url(), stack.ns.clone())
            .config("test")
            .unwrap(),
    )
    .await
    .unwrap()
}

pub async fn subscribe(stack: &Stack, subject: &str) -> async_nats::Subscriber {
    let client = async_nats::connect(haven_testkit::nats_url())
        .await
        .unwrap();
    client
        .subscribe(format!("{}.{subject}", stack.ns))
        .await
        .unwrap()
}

pub async fn collect_kinds(mut sub: async_nats::Subscriber, n: usize) -> Vec<String> {
    let mut kinds = Vec::new();
    while kinds.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        let Ok(Some(msg)) = msg else { break };
        let event = IntegrationEvent::decode(msg.payload).unwrap();
        kinds.push(msg.subject.rsplit('.').next().unwrap().to_owned());
        assert!(!event.tenant_id.is_empty());
    }
    kinds
}

#[tokio::test]
async fn an_unknown_stored_status_is_an_error_naming_it() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    stack.fake.add_api_key("klaviyo", "pk_live_paused_0001");
    connect_key(&stack, tenant, "klaviyo", "pk_live_paused_0001")
        .await
        .unwrap();
    // A value no version of the service writes, past the schema's CHECKs.
    for sql in [
        "ALTER TABLE integrations.integrations DROP CONSTRAINT IF EXISTS integrations_status_check",
        "ALTER TABLE integrations.setup_progress DROP CONSTRAINT IF EXISTS setup_progress_status_check",
        "UPDATE integrations.integrations SET status = 'paused'",
        "UPDATE integrations.setup_progress SET status = 'paused'",
    ] {
        sqlx::query(sql).execute(&stack.db.pool).await.unwrap();
    }
    let mut c = stack.client().await;
    let got = c
        .get_integration(request(
            GetIntegrationRequest {
                provider: "klaviyo".into(),
            },
            &user(tenant),
        ))
        .await
        .map(|r| r.into_inner().status);
    let err = got.expect_err("a row with status `paused` must not read as some other status");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("paused"), "{err:?}");
    let err = c
        .list_integrations(request(Default::default(), &user(tenant)))
        .await
        .expect_err("the list holds the same row");
    assert!(err.message().contains("paused"), "{err:?}");
    let err = c
        .get_setup_progress(request(Default::default(), &user(tenant)))
        .await
        .expect_err("a step with status `paused` must not read as pending");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("paused"), "{err:?}");
}

/// The export service's daily statistics run finds every shop with ListShopifyShops: role
/// service only, its own tenant for a tenant-scoped token, every tenant for an all-tenants
/// one, paged; a disconnected shop drops out.
#[tokio::test]
async fn connected_shopify_shops_are_listed_for_services_only() {
    use haven_proto::integrations::v1::ListShopifyShopsRequest;
    let stack = Stack::start().await;
    let tenants: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let shops = [
        "one-shop.myshopify.com",
        "two-shop.myshopify.com",
        "three-shop.myshopify.com",
    ];
    for (tenant, shop) in tenants.iter().zip(shops) {
        connect_oauth(&stack, *tenant, "shopify", shop).await;
    }
    // A Klaviyo connection is not a shop.
    stack.fake.add_api_key("klaviyo", "pk_live_x");
    connect_key(&stack, tenants[0], "klaviyo", "pk_live_x")
        .await
        .unwrap();
    let mut c = stack.client().await;
    let list = |page_size: u32, page_token: String, token: &str| {
        request(
            ListShopifyShopsRequest {
                page_size,
                page_token,
            },
            token,
        )
    };

    // Every tenant's shops, two per page, each once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_shopify_shops(list(2, token, &service()))
            .await
            .unwrap()
            .into_inner();
        assert!(page.shops.len() <= 2);
        seen.extend(page.shops);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut domains: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.tenant_id.clone(), s.shop_domain.clone()))
        .collect();
    domains.sort();
    let mut want: Vec<(String, String)> = tenants
        .iter()
        .zip(shops)
        .map(|(t, s)| (t.to_string(), s.to_owned()))
        .collect();
    want.sort();
    assert_eq!(domains, want);
    assert!(
        seen.iter()
            .all(|s| s.connected_at.is_some() && !s.integration_id.is_empty())
    );

    // A tenant-scoped service token sees its own tenant only; users see nothing.
    let own = c
        .list_shopify_shops(list(
            0,
            String::new(),
            &token_for(tenants[1], "svc", &[Role::Service]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.shops.len(), 1);
    assert_eq!(own.shops[0].shop_domain, shops[1]);
    for roles in [vec![Role::User], vec![Role::Admin]] {
        let err = c
            .list_shopify_shops(list(0, String::new(), &token_for(tenants[0], "u", &roles)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    // Bad paging names its field.
    for (size, token, field) in [(1001, "", "page_size"), (0, "nope", "page_token")] {
        let err = c
            .list_shopify_shops(list(size, token.into(), &service()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }

    // Disconnected shops drop out.
    c.disconnect(request(
        DisconnectRequest {
            provider: "shopify".into(),
        },
        &user(tenants[2]),
    ))
    .await
    .unwrap();
    let after = c
        .list_shopify_shops(list(0, String::new(), &service()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.shops.len(), 2);
    assert!(after.shops.iter().all(|s| s.shop_domain != shops[2]));
}
