//! Shopify webhook ingestion against a real NATS: verified deliveries land on their subject
//! byte for byte and once; forged, unsigned and hostile ones are refused and never published.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use haven_gateway::{Config, NatsArgs};
use haven_proto::events::v1::ShopifyWebhook;
use haven_testkit::{NatsServer, Switch, listener, namespace, nats_url};
use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use serde_json::Value;
use sha2::Sha256;

const JWT: &str = "gateway-webhooks-secret-at-least-32-bytes";
const SHOPIFY_SECRET: &str = "shpss_webhook_test_secret";
const SHOP: &str = "haven-test.myshopify.com";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SHOPIFY_SECRET.as_bytes()).unwrap();
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

struct Gateway {
    base: String,
    ns: String,
    stop: Switch,
    http: reqwest::Client,
}

async fn start(secret: Option<&str>) -> Gateway {
    start_on(&nats_url(), secret).await
}

async fn start_on(nats: &str, secret: Option<&str>) -> Gateway {
    let ns = namespace();
    let mut config = Config::for_test(
        JWT,
        NatsArgs::new(nats, ns.clone()),
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:9".into(),
    )
    .with_app_url("https://app.example.com/");
    if let Some(secret) = secret {
        config = config.with_shopify_client_secret(secret);
    }
    let l = listener().await;
    let base = format!("http://{}", l.local_addr().unwrap());
    let stop = Switch::new();
    tokio::spawn(haven_gateway::serve(config, l, stop.wait()));
    Gateway {
        base,
        ns,
        stop,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Gateway {
    async fn post(&self, headers: &[(&str, &str)], body: &'static [u8]) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/webhooks/shopify", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.body(body).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        self.stream_on(&nats_url()).await
    }

    async fn stream_on(&self, nats: &str) -> async_nats::jetstream::stream::Stream {
        let client = async_nats::connect(nats).await.unwrap();
        async_nats::jetstream::new(client)
            .get_stream(format!("{}_WEBHOOKS", self.ns))
            .await
            .unwrap()
    }

    async fn stored(&self) -> u64 {
        self.stream().await.get_info().await.unwrap().state.messages
    }
}

fn headers<'a>(topic: &'a str, hmac: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Hmac-Sha256", hmac),
        ("X-Shopify-Shop-Domain", SHOP),
        ("X-Shopify-Webhook-Id", id),
        ("X-Shopify-Event-Id", "evt-1"),
        ("X-Shopify-API-Version", "2025-01"),
        ("X-Shopify-Triggered-At", "2026-03-01T12:00:00.123456789Z"),
        ("Content-Type", "application/json"),
    ]
}

#[tokio::test]
async fn verified_webhooks_are_published_once_and_forged_ones_never() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    // Bytes a re-serialiser would change: key order, spacing, escapes, non-ASCII.
    const BODY: &[u8] =
        "{\"id\":820982911946154508, \"email\":\"j\\u00f6n@example.com\",\n \"note\":\"café ☕\"}"
            .as_bytes();
    let hmac = sign(BODY);

    let (status, body) = gw
        .post(&headers("orders/create", &hmac, "wh-1"), BODY)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], false);

    let subject = format!("{}.haven.webhooks.shopify.orders.create", gw.ns);
    let stored = gw
        .stream()
        .await
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("wh-1")
    );
    let msg = ShopifyWebhook::decode(stored.payload).unwrap();
    assert_eq!(&msg.body[..], BODY);
    assert_eq!(msg.topic, "orders/create");
    assert_eq!(msg.shop_domain, SHOP);
    assert_eq!(msg.webhook_id, "wh-1");
    assert_eq!(msg.event_id, "evt-1");
    assert_eq!(msg.api_version, "2025-01");
    let triggered = msg.triggered_at.unwrap();
    assert_eq!(
        (triggered.seconds, triggered.nanos),
        (1_772_366_400, 123_456_789)
    );
    assert!(msg.received_at.is_some());

    // Shopify redelivers with the same webhook id: accepted, stored once.
    let (status, body) = gw
        .post(&headers("orders/create", &hmac, "wh-1"), BODY)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(gw.stored().await, 1);

    // Forged, missing and misplaced signatures: 401 naming the problem, nothing published.
    let wrong = sign(b"{\"id\":1}");
    let cases: [(Vec<(&str, &str)>, &str); 4] = [
        (headers("orders/create", &wrong, "wh-2"), "does not match"),
        (
            headers("orders/create", "bm90IGEgbWFj", "wh-3"),
            "does not match",
        ),
        (headers("orders/create", "%%%", "wh-4"), "base64"),
        (
            headers("orders/create", &hmac, "wh-5")
                .into_iter()
                .filter(|(k, _)| *k != "X-Shopify-Hmac-Sha256")
                .collect(),
            "missing X-Shopify-Hmac-Sha256",
        ),
    ];
    for (h, expected) in cases {
        let (status, body) = gw.post(&h, BODY).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    // A valid signature of this body over a different body.
    let (status, _) = gw
        .post(&headers("orders/create", &hmac, "wh-6"), b"{\"id\":2}")
        .await;
    assert_eq!(status, 401);

    // Hostile topics, correctly signed, cannot reach other subjects.
    for topic in ["orders.*", "orders/>", ">", "orders/create.extra", "a b"] {
        let (status, body) = gw.post(&headers(topic, &hmac, "wh-7"), BODY).await;
        assert_eq!(status, 400, "{topic}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-Shopify-Topic"),
            "{body}"
        );
    }
    // Missing topic and shop.
    for missing in ["X-Shopify-Topic", "X-Shopify-Shop-Domain"] {
        let h: Vec<_> = headers("orders/create", &hmac, "wh-8")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (status, body) = gw.post(&h, BODY).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(missing),
            "{body}"
        );
    }
    assert_eq!(gw.stored().await, 1, "a refused webhook was published");

    // Another topic lands on its own subject.
    let (status, _) = gw
        .post(&headers("app/uninstalled", &hmac, "wh-9"), BODY)
        .await;
    assert_eq!(status, 200);
    let stored = gw
        .stream()
        .await
        .get_last_raw_message_by_subject(&format!(
            "{}.haven.webhooks.shopify.app.uninstalled",
            gw.ns
        ))
        .await
        .unwrap();
    assert_eq!(
        ShopifyWebhook::decode(stored.payload).unwrap().topic,
        "app/uninstalled"
    );
    assert_eq!(gw.stored().await, 2);

    // The stream is the one the gateway promises.
    let info = gw.stream().await.get_info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        [format!("{}.haven.webhooks.>", gw.ns)]
    );
    assert_eq!(info.config.max_age.as_secs(), 7 * 24 * 3600);
    assert_eq!(info.config.duplicate_window.as_secs(), 600);
    gw.stop.fire();
}

#[tokio::test]
async fn webhooks_without_a_configured_secret_are_unavailable() {
    let gw = start(None).await;
    let body: &[u8] = b"{}";
    let (status, json) = gw
        .post(&headers("orders/create", &sign(body), "wh-1"), b"{}")
        .await;
    assert_eq!(status, 503, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HAVEN_SHOPIFY_CLIENT_SECRET")
    );
    gw.stop.fire();
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    let big: &'static [u8] = Box::leak(vec![b'x'; 10 * 1024 * 1024 + 1].into_boxed_slice());
    let (status, json) = gw
        .post(&headers("orders/create", &sign(big), "wh-big"), big)
        .await;
    assert_eq!(status, 413, "{json}");
    gw.stop.fire();
}

#[tokio::test]
async fn the_oauth_callback_is_public_and_the_rest_needs_a_token() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    // No bearer token: the callback still runs and, with the service down, sends the
    // browser back with an error it can show.
    let res = gw
        .http
        .get(format!(
            "{}/api/integrations/shopify/callback?code=secret-code&state=s&shop={SHOP}",
            gw.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(
            "https://app.example.com/dashboard/settings/integrations?error=shopify_callback_failed&message="
        ),
        "{location}"
    );
    assert!(!location.contains("secret-code"), "{location}");
    assert_eq!(res.headers()["cache-control"], "no-store");

    for (method, path) in [
        (reqwest::Method::GET, "/api/integrations"),
        (
            reqwest::Method::GET,
            "/api/integrations/shopify/install?shop=x",
        ),
        (reqwest::Method::POST, "/api/integrations/klaviyo/connect"),
        (reqwest::Method::DELETE, "/api/integrations/klaviyo"),
        (reqwest::Method::GET, "/api/settings/setup-progress"),
        (
            reqwest::Method::PATCH,
            "/api/settings/setup-progress/shopify",
        ),
        (reqwest::Method::GET, "/api/nothing-here"),
    ] {
        let res = gw
            .http
            .request(method.clone(), format!("{}{path}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    gw.stop.fire();
}

#[tokio::test]
async fn a_lost_stream_is_re_created_by_the_next_webhook() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    let body: &'static [u8] = b"{\"id\":1}";
    let hmac = sign(body);
    let (status, _) = gw.post(&headers("orders/paid", &hmac, "wh-a"), body).await;
    assert_eq!(status, 200);
    let client = async_nats::connect(nats_url()).await.unwrap();
    async_nats::jetstream::new(client)
        .delete_stream(format!("{}_WEBHOOKS", gw.ns))
        .await
        .unwrap();
    let (status, json) = gw.post(&headers("orders/paid", &hmac, "wh-b"), body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(gw.stored().await, 1);
    gw.stop.fire();
}

#[tokio::test]
async fn webhooks_answer_503_while_nats_is_down_and_resume_after() {
    // Never reachable: start-up is not held up, webhooks are refused so Shopify retries.
    let gw = start_on("nats://127.0.0.1:9", Some(SHOPIFY_SECRET)).await;
    let body: &'static [u8] = b"{\"id\":2}";
    let hmac = sign(body);
    let live = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let (status, json) = gw
        .post(&headers("orders/create", &hmac, "wh-1"), body)
        .await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "unavailable");
    gw.stop.fire();

    // An outage after start-up.
    let mut nats = NatsServer::start().unwrap();
    let gw = start_on(&nats.url(), Some(SHOPIFY_SECRET)).await;
    let (status, _) = gw
        .post(&headers("orders/create", &hmac, "wh-1"), body)
        .await;
    assert_eq!(status, 200);
    nats.kill();
    let (status, json) = gw
        .post(&headers("orders/create", &hmac, "wh-2"), body)
        .await;
    assert_eq!(status, 503, "{json}");
    nats.restart().unwrap();
    // Shopify's retry of the refused delivery goes through once NATS is back.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, json) = gw
            .post(&headers("orders/create", &hmac, "wh-2"), body)
            .await;
        if status == 200 {
            assert_eq!(json["duplicate"], false);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status}: {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let info = gw.stream_on(&nats.url()).await.get_info().await.unwrap();
    assert_eq!(info.state.messages, 2);
    gw.stop.fire();
}
