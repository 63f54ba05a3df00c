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

const JWT: &str = haven_testkit::JWT_SECRET;
const SHOPIFY_SECRET: &str = "shpss_webhook_test_secret";
const SHOP: &str = "haven-test.myshopify.com";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SHOPIFY_SECRET.as_bytes()).unwrap();
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) struct Gateway {
    pub(crate) base: String,
    ns: String,
    pub(crate) stop: Switch,
    pub(crate) http: reqwest::Client,
}

async fn start(secret: Option<&str>) -> Gateway {
    start_on(&nats_url(), secret).await
}

async fn start_on(nats: &str, secret: Option<&str>) -> Gateway {
    start_with(nats, secret, |c| c).await
}

pub(crate) async fn start_with(
    nats: &str,
    secret: Option<&str>,
    edit: impl FnOnce(Config) -> Config,
) -> Gateway {
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
    let config = edit(config);
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

    /// GETs `path`, expects a 302 to the app's integrations page with `query` first, and
    /// returns the location and the response.
    async fn app_redirect(&self, path: &str, query: &str) -> (String, reqwest::Response) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!(
                "https://app.example.com/dashboard/settings/integrations?{query}"
            )),
            "{location}"
        );
        (location, res)
    }

    /// Messages stored, or 0 when nothing has made the gateway create its stream yet.
    async fn stored_or_none(&self) -> u64 {
        let client = async_nats::connect(nats_url()).await.unwrap();
        match async_nats::jetstream::new(client)
            .get_stream(format!("{}_WEBHOOKS", self.ns))
            .await
        {
            Ok(mut stream) => stream.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }
}

fn headers<'a>(topic: &'a str, hmac: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Hmac-Sha256", hmac),
        ("X-Shopify-Shop-Domain", SHOP),
        ("X-Shopify-Webhook-Id", id),
        // One event per delivery unless a test says otherwise.
        ("X-Shopify-Event-Id", id),
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
        Some("event-wh-1")
    );
    let msg = ShopifyWebhook::decode(stored.payload).unwrap();
    assert_eq!(&msg.body[..], BODY);
    assert_eq!(msg.topic, "orders/create");
    assert_eq!(msg.shop_domain, SHOP);
    assert_eq!(msg.webhook_id, "wh-1");
    assert_eq!(msg.event_id, "wh-1");
    // Orders name no shop in their payload: the shop is the header's, and says so.
    assert!(!msg.shop_domain_signed);
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
        assert_eq!(body["code"], "unauthenticated");
        let message = body["error"].as_str().unwrap();
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
            body["error"].as_str().unwrap().contains("X-Shopify-Topic"),
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
        assert!(body["error"].as_str().unwrap().contains(missing), "{body}");
    }
    assert_eq!(gw.stored().await, 1, "a refused webhook was published");

    // Another topic lands on its own subject, its shop read from the signed body.
    const UNINSTALL: &[u8] =
        br#"{"id":1,"domain":"shop.example.com","myshopify_domain":"haven-test.myshopify.com"}"#;
    let uninstall_hmac = sign(UNINSTALL);
    let (status, body) = gw
        .post(
            &headers("app/uninstalled", &uninstall_hmac, "wh-9"),
            UNINSTALL,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stored = gw
        .stream()
        .await
        .get_last_raw_message_by_subject(&format!(
            "{}.haven.webhooks.shopify.app.uninstalled",
            gw.ns
        ))
        .await
        .unwrap();
    let msg = ShopifyWebhook::decode(stored.payload).unwrap();
    assert_eq!(msg.topic, "app/uninstalled");
    assert!(msg.shop_domain_signed);
    assert_eq!(gw.stored().await, 2);

    // The stream is the one the gateway promises.
    let info = gw.stream().await.get_info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        [format!("{}.haven.webhooks.>", gw.ns)]
    );
    assert_eq!(info.config.max_age.as_secs(), 7 * 24 * 3600);
    assert_eq!(info.config.duplicate_window.as_secs(), 6 * 3600);
    gw.stop.fire();
}

/// The replay an attacker can build from an OAuth callback: Shopify's callback `hmac` is the
/// hex HMAC of the query string under the app secret, so base64 of its bytes is a valid
/// webhook signature for a body equal to that query string.
#[tokio::test]
async fn a_signed_callback_query_replayed_as_a_webhook_is_refused() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    let query = vec![
        (
            "code".to_owned(),
            "0907a61c0c8d55e99db179b68161bc00".to_owned(),
        ),
        (
            "host".to_owned(),
            "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYXR0YWNrZXI".to_owned(),
        ),
        ("shop".to_owned(), "attacker.myshopify.com".to_owned()),
        ("state".to_owned(), "0123456789abcdef".to_owned()),
        ("timestamp".to_owned(), "1772366400".to_owned()),
    ];
    let secret = secrecy::SecretString::from(SHOPIFY_SECRET);
    let hex_hmac = haven_shopify::sign_callback(&query, &secret);
    let body: &'static [u8] = Box::leak(
        query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
            .into_boxed_slice(),
    );
    let signature = STANDARD.encode(hex::decode(&hex_hmac).unwrap());
    // The signature really is valid over that body: only the body rule refuses it.
    assert!(haven_shopify::verify_webhook(body, &signature, &secret).is_ok());
    let mut h = headers("app/uninstalled", &signature, "forged-1");
    h.retain(|(k, _)| *k != "X-Shopify-Shop-Domain");
    h.push(("X-Shopify-Shop-Domain", "victim.myshopify.com"));
    let (status, json) = gw.post(&h, body).await;
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{json}"
    );
    assert_eq!(gw.stored_or_none().await, 0);
    gw.stop.fire();
}

#[tokio::test]
async fn the_shop_comes_from_the_signed_body_and_event_ids_are_stored_once() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    let victim = "victim-shop.myshopify.com";
    // A genuine uninstall of the sender's own shop, with a victim's shop in the header.
    const OWN: &[u8] = br#"{"id":7,"myshopify_domain":"haven-test.myshopify.com"}"#;
    let own_hmac = sign(OWN);
    let mut h = headers("app/uninstalled", &own_hmac, "own-1");
    h.retain(|(k, _)| *k != "X-Shopify-Shop-Domain");
    h.push(("X-Shopify-Shop-Domain", victim));
    let (status, json) = gw.post(&h, OWN).await;
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("does not match the shop the signed body names"),
        "{json}"
    );
    // A topic whose payload names the shop, without it.
    const NO_SHOP: &[u8] = br#"{"id":7}"#;
    let (status, json) = gw
        .post(&headers("shop/redact", &sign(NO_SHOP), "own-2"), NO_SHOP)
        .await;
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("shop_domain"),
        "{json}"
    );
    assert_eq!(gw.stored_or_none().await, 0);

    // One event under two delivery ids (and even another signed body): stored once.
    const A: &[u8] = br#"{"id":1}"#;
    const B: &[u8] = br#"{"id":2}"#;
    let mut first = headers("orders/create", "", "d-1");
    let hmac_a = sign(A);
    first.retain(|(k, _)| *k != "X-Shopify-Hmac-Sha256" && *k != "X-Shopify-Event-Id");
    let mut second = first.clone();
    first.extend([
        ("X-Shopify-Hmac-Sha256", hmac_a.as_str()),
        ("X-Shopify-Event-Id", "evt-same"),
    ]);
    let hmac_b = sign(B);
    second.retain(|(k, _)| *k != "X-Shopify-Webhook-Id");
    second.extend([
        ("X-Shopify-Hmac-Sha256", hmac_b.as_str()),
        ("X-Shopify-Event-Id", "evt-same"),
        ("X-Shopify-Webhook-Id", "d-2"),
    ]);
    let (status, json) = gw.post(&first, A).await;
    assert_eq!(
        (status, json["duplicate"].clone()),
        (200, Value::Bool(false))
    );
    let (status, json) = gw.post(&second, B).await;
    assert_eq!(
        (status, json["duplicate"].clone()),
        (200, Value::Bool(true))
    );
    assert_eq!(gw.stored().await, 1);
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
        json["error"]
            .as_str()
            .unwrap()
            .contains("HAVEN_SHOPIFY_CLIENT_SECRET")
    );
    gw.stop.fire();
}

#[tokio::test]
async fn bodies_the_bus_cannot_carry_are_413_and_slow_ones_408() {
    let gw = start_with(&nats_url(), Some(SHOPIFY_SECRET), |c| {
        c.with_webhook_read_timeout(std::time::Duration::from_millis(500))
    })
    .await;
    // Correctly signed JSON, just over what one NATS message carries (1 MiB by default).
    let mut big = b"{\"note\":\"".to_vec();
    big.resize(1024 * 1024, b'x');
    big.extend_from_slice(b"\"}");
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let (status, json) = gw
        .post(&headers("orders/create", &sign(big), "wh-big"), big)
        .await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["code"], "payload_too_large");
    // Just under the cap: stored.
    let mut fits = b"{\"note\":\"".to_vec();
    fits.resize(haven_gateway::WEBHOOK_MAX_BODY - 2, b'y');
    fits.extend_from_slice(b"\"}");
    let fits: &'static [u8] = Box::leak(fits.into_boxed_slice());
    let (status, json) = gw
        .post(&headers("orders/create", &sign(fits), "wh-fits"), fits)
        .await;
    assert_eq!(status, 200, "{json}");

    // A sender that announces 100 bytes and stops after 10 gets 408, not a held connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(
        b"POST /api/webhooks/shopify HTTP/1.1\r\nHost: x\r\nX-Shopify-Hmac-Sha256: AAAA\r\n\
          Content-Length: 100\r\n\r\n{\"id\":1234",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("the gateway held a stalled body open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    gw.stop.fire();
}

#[tokio::test]
async fn the_oauth_callback_is_public_and_the_rest_needs_a_token() {
    let gw = start(Some(SHOPIFY_SECRET)).await;
    // No bearer token: the callback still runs and, with the service down, sends the
    // browser back with an error it can show.
    let (location, res) = gw
        .app_redirect(
            &format!("/api/integrations/shopify/callback?code=secret-code&state=s&shop={SHOP}"),
            "error=shopify_callback_failed&reason=unavailable&message=",
        )
        .await;
    assert!(!location.contains("secret-code"), "{location}");
    assert_eq!(res.headers()["cache-control"], "no-store");

    // An unknown provider, with a forged log line in it, is not repeated back to the app.
    let (location, _) = gw
        .app_redirect(
            "/api/integrations/Visit%20evil.example%0d%0aINFO%20forged/callback?state=s",
            "error=callback_failed&reason=unknown_provider&message=",
        )
        .await;
    assert!(!location.to_lowercase().contains("evil"), "{location}");

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
    // A 100 KB token is refused at the edge, not forwarded to fail upstream.
    let res = gw
        .http
        .get(format!("{}/api/integrations", gw.base))
        .bearer_auth("a".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("longer than"),
        "{body}"
    );
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
    assert_eq!(json["code"], "unavailable");
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
