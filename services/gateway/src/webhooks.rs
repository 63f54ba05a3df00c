//! Incoming provider webhooks: `POST /api/webhooks/shopify` verifies Shopify's HMAC over the
//! raw body and publishes the delivery, byte for byte, to `haven.webhooks.shopify.<topic>`.
//!
//! The route is public (Shopify has no bearer token); the HMAC, signed with the app's client
//! secret, is what authenticates it. The gateway answers 200 only once JetStream has stored
//! the message, so anything Shopify saw accepted survives a crash; any failure before that
//! is a 503, which Shopify retries with the same `X-Shopify-Webhook-Id` (our `Nats-Msg-Id`,
//! so a redelivery is stored once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use haven_bus::{Bus, BusError, NatsArgs};
use haven_proto::events::v1::ShopifyWebhook;
use haven_shopify::{ShopDomain, SignatureError};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// The largest body accepted: what one NATS message carries (`max_payload`, 1 MiB by default)
/// less room for the envelope (topic, ids, timestamps, headers). A larger delivery could never
/// be stored, and answering 503 would make Shopify retry it for ever; 413 says why at once.
pub const MAX_BODY: usize = 1024 * 1024 - 16 * 1024;

/// Shopify gives up on a delivery after 5 s; answer 503 before that so it retries promptly.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a webhook arriving during start-up waits for the first NATS connection.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Topics are at most this long (Shopify's longest is about 40 characters).
const MAX_TOPIC_LEN: usize = 128;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(shopify))
}

/// The bus, connected in the background so that the gateway serves its REST API even while
/// NATS is down; only webhook ingestion waits for it (and answers 503 meanwhile).
#[derive(Clone)]
pub struct LazyBus {
    bus: watch::Receiver<Option<Bus>>,
    /// Whether the stream is known to exist; cleared by a failed publish, so the next one
    /// re-creates it (a NATS that lost its store gets it back without our restart).
    stream_ready: Arc<AtomicBool>,
}

impl LazyBus {
    /// Starts connecting (retrying until `token` is cancelled) and returns at once.
    pub fn spawn(args: &NatsArgs, token: CancellationToken) -> Result<Self, BusError> {
        let config = args.config("haven-gateway")?;
        let (tx, rx) = watch::channel(None);
        let stream_ready = Arc::new(AtomicBool::new(false));
        let lazy = LazyBus {
            bus: rx,
            stream_ready: stream_ready.clone(),
        };
        tokio::spawn(async move {
            let bus = loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    connected = Bus::connect(&config) => match connected {
                        Ok(bus) => break bus,
                        Err(e) => tracing::warn!(error = %e, "NATS unreachable; webhooks answer 503 until it is back"),
                    },
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            };
            ensure(&bus, &stream_ready).await;
            tx.send_replace(Some(bus.clone()));
            // Re-create the stream after every reconnect, as the services do for theirs.
            bus.each_reconnect(token.cancelled(), || async {
                stream_ready.store(false, Ordering::Release);
                ensure(&bus, &stream_ready).await;
            })
            .await;
        });
        Ok(lazy)
    }

    /// Whether NATS is connected now.
    pub fn is_connected(&self) -> bool {
        self.bus.borrow().as_ref().is_some_and(Bus::is_connected)
    }

    async fn bus(&self) -> Option<Bus> {
        let mut rx = self.bus.clone();
        let ready = tokio::time::timeout(CONNECT_WAIT, rx.wait_for(Option::is_some)).await;
        ready.ok()?.ok()?.clone()
    }

    /// Publishes and waits for JetStream's ack; `Ok(true)` when it was a duplicate.
    async fn publish(
        &self,
        subject: &str,
        message: &ShopifyWebhook,
        msg_id: &str,
    ) -> Result<bool, ApiError> {
        let bus = self
            .bus()
            .await
            .ok_or_else(|| unavailable("the message bus is not reachable yet"))?;
        if !bus.is_connected() {
            return Err(unavailable("the message bus is not reachable"));
        }
        let attempt = async {
            if !self.stream_ready.load(Ordering::Acquire) {
                ensure_or_fail(&bus, &self.stream_ready).await?;
            }
            match bus.publish(subject, message, msg_id).await {
                Ok(ack) => Ok(ack.duplicate),
                Err(first) => {
                    // Maybe the stream is gone; re-create it and try once more (the same
                    // Nats-Msg-Id makes a repeat harmless if the first one was stored).
                    tracing::warn!(error = %first, "webhook publish failed; re-creating the stream and retrying");
                    self.stream_ready.store(false, Ordering::Release);
                    ensure_or_fail(&bus, &self.stream_ready).await?;
                    bus.publish(subject, message, msg_id)
                        .await
                        .map(|ack| ack.duplicate)
                }
            }
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, attempt).await {
            Ok(Ok(duplicate)) => Ok(duplicate),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook not stored");
                Err(unavailable("the webhook could not be stored; retry later"))
            }
            Err(_) => Err(unavailable(
                "the message bus did not answer in time; retry later",
            )),
        }
    }
}

async fn ensure(bus: &Bus, ready: &AtomicBool) {
    if let Err(e) = ensure_or_fail(bus, ready).await {
        tracing::warn!(error = %e, "cannot create the webhook stream yet; will retry on the next webhook");
    }
}

async fn ensure_or_fail(bus: &Bus, ready: &AtomicBool) -> Result<(), BusError> {
    bus.ensure_stream(&haven_bus::webhooks_stream()).await?;
    ready.store(true, Ordering::Release);
    Ok(())
}

/// What the webhook route needs: the secret Shopify signs with and the bus.
#[derive(Clone)]
pub struct Webhooks {
    pub shopify_secret: Option<SecretString>,
    /// How long the body may take to arrive.
    pub read_timeout: Duration,
    pub bus: LazyBus,
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Checks `X-Shopify-Hmac-Sha256` (base64 HMAC-SHA256 of the raw body) in constant time,
/// with the one check `haven-shopify` has.
pub fn verify_hmac(
    secret: &SecretString,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), ApiError> {
    let signature =
        signature.ok_or_else(|| unauthenticated("missing X-Shopify-Hmac-Sha256 header"))?;
    haven_shopify::verify_webhook(body, signature, secret).map_err(|e| match e {
        SignatureError::NotBase64 => unauthenticated("X-Shopify-Hmac-Sha256 is not base64"),
        SignatureError::Mismatch => {
            unauthenticated("X-Shopify-Hmac-Sha256 does not match the request body")
        }
    })
}

/// Turns a topic into subject tokens (`orders/create` → `orders.create`). Only lowercase
/// letters, digits and `_` in non-empty `/`-separated parts pass, so a header cannot add
/// wildcards (`*`, `>`), extra tokens (`.`) or whitespace to the subject.
pub fn topic_subject(topic: &str) -> Result<String, ApiError> {
    let valid = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if !valid {
        return Err(ApiError::bad_request(
            "X-Shopify-Topic must be lowercase letters, digits and `_` in `/`-separated parts, e.g. orders/create",
        ));
    }
    Ok(format!(
        "haven.webhooks.shopify.{}",
        topic.replace('/', ".")
    ))
}

/// Longest `X-Shopify-Event-Id` accepted (Shopify's are UUIDs).
const MAX_EVENT_ID_LEN: usize = 200;

/// The `Nats-Msg-Id`: Shopify's event id, the key its documentation gives for spotting a
/// repeated event, so every delivery of one event within the stream's duplicate window is
/// stored once whatever its `X-Shopify-Webhook-Id`; without one, a digest of topic and body.
fn message_id(event_id: Option<&str>, topic: &str, body: &[u8]) -> Result<String, ApiError> {
    match event_id {
        Some(id) if id.len() > MAX_EVENT_ID_LEN || id.chars().any(char::is_control) => Err(
            ApiError::bad_request("X-Shopify-Event-Id must be at most 200 printable characters"),
        ),
        Some(id) => Ok(format!("event-{id}")),
        None => {
            let mut digest = Sha256::new();
            digest.update(topic.as_bytes());
            digest.update([0]);
            digest.update(body);
            Ok(format!(
                "sha256-{}",
                URL_SAFE_NO_PAD.encode(digest.finalize())
            ))
        }
    }
}

/// The answer to a webhook delivery.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Received {
    received: bool,
    /// True when this delivery (by `X-Shopify-Webhook-Id`) was already accepted.
    duplicate: bool,
}

/// Shopify's webhooks: authenticated by `X-Shopify-Hmac-Sha256` over the raw body, then
/// published to NATS before the 200.
#[utoipa::path(post, operation_id = "receiveShopifyWebhook", path = "/webhooks/shopify", tag = "webhooks", security(()),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = Received), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn shopify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Received>, ApiError> {
    let received_at = chrono::Utc::now();
    let secret = state
        .webhooks
        .shopify_secret
        .as_ref()
        .filter(|s| !s.expose_secret().is_empty())
        .ok_or_else(|| {
            unavailable("Shopify webhooks are not configured (HAVEN_SHOPIFY_CLIENT_SECRET)")
        })?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY} bytes, the most the message bus carries"),
        )
    };
    let declared = header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match tokio::time::timeout(
        state.webhooks.read_timeout,
        axum::body::to_bytes(body, MAX_BODY),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body did not arrive in time",
            ));
        }
    };
    verify_hmac(secret, &body, header(&headers, "x-shopify-hmac-sha256"))?;

    let topic = header(&headers, "x-shopify-topic")
        .ok_or_else(|| ApiError::bad_request("missing X-Shopify-Topic header"))?;
    let subject = topic_subject(topic)?;
    let shop = header(&headers, "x-shopify-shop-domain")
        .ok_or_else(|| ApiError::bad_request("missing X-Shopify-Shop-Domain header"))?;
    // Lowercased, as the integrations service reads it.
    let shop = ShopDomain::parse(shop).map_err(|_| {
        ApiError::bad_request("X-Shopify-Shop-Domain must be a *.myshopify.com domain")
    })?;
    // The HMAC covers the body only: the shop is taken from it wherever the topic's payload
    // names one, and the unsigned header must agree.
    let signed_shop =
        haven_shopify::signed_shop(topic, &body).map_err(|e| unauthenticated(&e.to_string()))?;
    let shop_domain_signed = match &signed_shop {
        Some(signed_shop) if *signed_shop != shop => {
            return Err(unauthenticated(
                "X-Shopify-Shop-Domain does not match the shop the signed body names",
            ));
        }
        Some(_) => true,
        None => false,
    };
    let shop = shop.as_str();
    let webhook_id = header(&headers, "x-shopify-webhook-id");
    let event_id = header(&headers, "x-shopify-event-id");
    let msg_id = message_id(event_id, topic, &body)?;
    let triggered_at = header(&headers, "x-shopify-triggered-at")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| haven_proto::time::timestamp(t.with_timezone(&chrono::Utc)));
    let message = ShopifyWebhook {
        shop_domain: shop.to_owned(),
        topic: topic.to_owned(),
        webhook_id: webhook_id.unwrap_or_default().to_owned(),
        event_id: event_id.unwrap_or_default().to_owned(),
        api_version: header(&headers, "x-shopify-api-version")
            .unwrap_or_default()
            .to_owned(),
        triggered_at,
        body,
        received_at: Some(haven_proto::time::timestamp(received_at)),
        shop_domain_signed,
    };
    let duplicate = state
        .webhooks
        .bus
        .publish(&subject, &message, &msg_id)
        .await?;
    tracing::info!(%shop, %topic, %msg_id, duplicate, "Shopify webhook accepted");
    Ok(Json(Received {
        received: true,
        duplicate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::engine::general_purpose::STANDARD;

    fn sign(secret: &str, body: &[u8]) -> String {
        haven_shopify::sign_webhook(body, &SecretString::from(secret))
    }

    fn valid_shop_domain(shop: &str) -> bool {
        ShopDomain::parse(shop).is_ok()
    }

    #[test]
    fn hmac_is_checked_over_the_exact_body() {
        let secret = SecretString::from("shpss_test");
        let body = br#"{"id":1}"#;
        let good = sign("shpss_test", body);
        assert!(verify_hmac(&secret, body, Some(&good)).is_ok());
        let e = verify_hmac(&secret, br#"{"id":2}"#, Some(&good)).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.message.contains("does not match"), "{}", e.message);
        let e = verify_hmac(&secret, body, None).unwrap_err();
        assert!(e.message.contains("missing"), "{}", e.message);
        let e = verify_hmac(&secret, body, Some("not base64!")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let other = sign("another_secret", body);
        assert!(verify_hmac(&secret, body, Some(&other)).is_err());
        // A truncated tag is not a shorter valid one.
        let short = STANDARD.encode(&STANDARD.decode(&good).unwrap()[..16]);
        assert!(verify_hmac(&secret, body, Some(&short)).is_err());
    }

    #[test]
    fn topics_become_subject_tokens_and_nothing_else() {
        assert_eq!(
            topic_subject("orders/create").unwrap(),
            "haven.webhooks.shopify.orders.create"
        );
        assert_eq!(
            topic_subject("customers_data_request").unwrap(),
            "haven.webhooks.shopify.customers_data_request"
        );
        assert_eq!(
            topic_subject("app/uninstalled").unwrap(),
            "haven.webhooks.shopify.app.uninstalled"
        );
        for hostile in [
            "",
            "orders/*",
            "orders/>",
            ">",
            "orders.create",
            "orders create",
            "Orders/Create",
            "orders//create",
            "/orders",
            "orders/",
            "orders/create\n",
            "órders/create",
        ] {
            assert!(topic_subject(hostile).is_err(), "{hostile:?} passed");
        }
        assert!(topic_subject(&"a".repeat(MAX_TOPIC_LEN + 1)).is_err());
    }

    #[test]
    fn shop_domains_are_myshopify_domains() {
        assert!(valid_shop_domain("haven-test.myshopify.com"));
        for bad in [
            "",
            ".myshopify.com",
            "-x.myshopify.com",
            "evil.com",
            "a.b.myshopify.com",
            "haven.myshopify.com.evil.com",
            "ha ven.myshopify.com",
        ] {
            assert!(!valid_shop_domain(bad), "{bad:?} passed");
        }
    }

    #[test]
    fn message_ids_follow_the_event() {
        assert_eq!(message_id(Some("abc-1"), "t", b"x").unwrap(), "event-abc-1");
        assert_eq!(
            message_id(Some("abc-1"), "u", b"y").unwrap(),
            message_id(Some("abc-1"), "t", b"x").unwrap()
        );
        let a = message_id(None, "orders/create", b"{}").unwrap();
        assert_eq!(a, message_id(None, "orders/create", b"{}").unwrap());
        assert_ne!(a, message_id(None, "orders/create", b"{ }").unwrap());
        assert_ne!(a, message_id(None, "orders/updated", b"{}").unwrap());
        assert!(a.starts_with("sha256-"));
        assert!(message_id(Some(&"e".repeat(201)), "t", b"x").is_err());
        assert!(message_id(Some("a\nb"), "t", b"x").is_err());
    }
}
