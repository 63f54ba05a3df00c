//! Connecting a Shopify shop for a tenant through the real integrations service and the fake
//! Shopify, as a person would: BeginOAuth, the browser at the start link (StartOAuth), the
//! fake's consent page approving at once, and the callback (CompleteOAuth).

use std::net::SocketAddr;

use haven_auth::Role;
use haven_proto::integrations::v1 as ipb;
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use uuid::Uuid;

fn pairs(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Connects `shop` for `tenant` on the integrations service at `integrations`, whose
/// Shopify endpoints point at a fake that approves consent at once.
pub async fn connect_shopify(integrations: SocketAddr, tenant: Uuid, shop: &str) {
    let mut c = IntegrationsServiceClient::new(crate::channel(integrations));
    let begin = c
        .begin_o_auth(crate::request(
            ipb::BeginOAuthRequest {
                provider: "shopify".into(),
                shop: shop.into(),
                redirect_uri: String::new(),
            },
            &crate::token(tenant, Role::User),
        ))
        .await
        .unwrap_or_else(|e| panic!("testkit: BeginOAuth for {shop}: {e}"))
        .into_inner();
    let ticket = pairs(&begin.authorize_url)
        .into_iter()
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let started = c
        .start_o_auth(ipb::StartOAuthRequest {
            provider: "shopify".into(),
            ticket,
        })
        .await
        .unwrap_or_else(|e| panic!("testkit: StartOAuth for {shop}: {e}"))
        .into_inner();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"));
    let consent = http
        .get(&started.authorize_url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("testkit: Shopify consent page for {shop}: {e}"));
    let callback = consent
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_else(|| panic!("testkit: the consent page for {shop} did not redirect"))
        .to_owned();
    c.complete_o_auth(ipb::CompleteOAuthRequest {
        provider: "shopify".into(),
        query: pairs(&callback).into_iter().collect(),
        browser_binding: started.browser_binding,
    })
    .await
    .unwrap_or_else(|e| panic!("testkit: CompleteOAuth for {shop}: {e}"));
}
