//! What a verified webhook body says about its shop.
//!
//! Shopify's HMAC covers the body only: `X-Shopify-Shop-Domain`, `X-Shopify-Topic` and the
//! delivery ids beside it are unsigned. So the shop a handler acts on is read from the signed
//! body, for every topic whose documented payload names it, and the header must agree.

use serde_json::{Map, Value};

use crate::{ShopDomain, ShopDomainError};

/// The payload field a topic names its shop in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopField {
    /// The Shop resource (`app/uninstalled`, `shop/update`): `myshopify_domain`, else `domain`.
    ShopResource,
    /// The privacy compliance payloads: `shop_domain`.
    /// <https://shopify.dev/docs/apps/build/compliance/privacy-law-compliance>
    ShopDomain,
}

impl ShopField {
    /// The field a topic's documented payload names its shop in; `None` for payloads that
    /// carry no shop (orders, products, customers, checkouts).
    pub fn of_topic(topic: &str) -> Option<ShopField> {
        match topic {
            "app/uninstalled" | "shop/update" => Some(ShopField::ShopResource),
            "customers/data_request" | "customers/redact" | "shop/redact" => {
                Some(ShopField::ShopDomain)
            }
            _ => None,
        }
    }

    fn read(self, body: &Map<String, Value>) -> Option<(&'static str, &str)> {
        let field = |name: &'static str| body.get(name).and_then(Value::as_str).map(|v| (name, v));
        match self {
            ShopField::ShopResource => field("myshopify_domain").or_else(|| field("domain")),
            ShopField::ShopDomain => field("shop_domain"),
        }
    }
}

/// Why a correctly signed body is still not a webhook we act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookBodyError {
    #[error("the signed body is not a JSON object, so it is not a Shopify webhook")]
    NotJsonObject,
    #[error("the signed body of a {topic} webhook names no shop (`{field}`)")]
    NoShop { topic: String, field: &'static str },
    #[error("the signed body's `{field}` is not a shop domain: {reason}")]
    BadShop {
        field: &'static str,
        reason: ShopDomainError,
    },
}

/// Reads a verified body: refuses anything but a JSON object (a signature over another kind of
/// message, such as an OAuth callback's query string, is not a webhook's), and returns the
/// shop from the field the topic's payload names it in; `None` for topics whose payload names
/// no shop.
pub fn signed_shop(topic: &str, body: &[u8]) -> Result<Option<ShopDomain>, WebhookBodyError> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Err(WebhookBodyError::NotJsonObject);
    };
    let Some(field) = ShopField::of_topic(topic) else {
        return Ok(None);
    };
    let (name, value) = field
        .read(&object)
        .ok_or_else(|| WebhookBodyError::NoShop {
            topic: topic.to_owned(),
            field: match field {
                ShopField::ShopResource => "myshopify_domain",
                ShopField::ShopDomain => "shop_domain",
            },
        })?;
    ShopDomain::parse(value)
        .map(Some)
        .map_err(|reason| WebhookBodyError::BadShop {
            field: name,
            reason,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shop_comes_from_the_documented_field() {
        let shop = |topic: &str, body: &str| signed_shop(topic, body.as_bytes());
        assert_eq!(
            shop(
                "app/uninstalled",
                r#"{"domain":"shop.example.com","myshopify_domain":"Acme.myshopify.com"}"#
            )
            .unwrap()
            .unwrap()
            .as_str(),
            "acme.myshopify.com"
        );
        assert_eq!(
            shop("app/uninstalled", r#"{"domain":"acme.myshopify.com"}"#)
                .unwrap()
                .unwrap()
                .as_str(),
            "acme.myshopify.com"
        );
        assert_eq!(
            shop(
                "shop/redact",
                r#"{"shop_id":1,"shop_domain":"acme.myshopify.com"}"#
            )
            .unwrap()
            .unwrap()
            .as_str(),
            "acme.myshopify.com"
        );
        assert_eq!(shop("orders/create", r#"{"id":1}"#).unwrap(), None);
        assert!(matches!(
            shop("app/uninstalled", r#"{"id":1}"#),
            Err(WebhookBodyError::NoShop { .. })
        ));
        assert!(matches!(
            shop("app/uninstalled", r#"{"domain":"shop.example.com"}"#),
            Err(WebhookBodyError::BadShop {
                field: "domain",
                ..
            })
        ));
    }

    #[test]
    fn only_json_objects_are_webhooks() {
        for body in [
            "code=abc&host=x&shop=victim.myshopify.com&state=s&timestamp=1",
            "[1,2]",
            "\"acme.myshopify.com\"",
            "",
            "{\"a\":",
        ] {
            assert_eq!(
                signed_shop("orders/create", body.as_bytes()).unwrap_err(),
                WebhookBodyError::NotJsonObject,
                "{body:?}"
            );
        }
    }
}
