//! Public account details of a connection, one shape per provider.
//!
//! Stored in `integrations.integrations.metadata` as the variant's bare JSON object, without
//! a tag: the row's `provider` column says which variant it is, so [`Metadata::read`] picks
//! the shape by provider. That is the format rows have always had, so rows written before
//! this type existed read unchanged and no migration is needed. A row that was never
//! connected holds `{}` and has no metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registry::Provider;

/// Details a provider told us when the connection was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Metadata {
    Shopify(ShopifyMetadata),
    Pinterest(PinterestMetadata),
    Klaviyo(KlaviyoMetadata),
    DynamicMockups(DynamicMockupsMetadata),
    Resend(ResendMetadata),
    SkyPilot(SkyPilotMetadata),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopifyMetadata {
    #[serde(default)]
    pub shop_domain: String,
    #[serde(default)]
    pub shop_name: String,
    /// The scopes the merchant granted.
    #[serde(default)]
    pub access_scopes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinterestMetadata {
    #[serde(default)]
    pub account_name: String,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub board_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KlaviyoMetadata {
    #[serde(default)]
    pub list_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_list_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicMockupsMetadata {
    #[serde(default)]
    pub credits_remaining: Option<i64>,
    #[serde(default)]
    pub plan: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendMetadata {
    #[serde(default)]
    pub domain_verified: bool,
    /// The key may only send, so domains are unknowable.
    #[serde(default)]
    pub send_only: bool,
    /// The first verified domain. Resend tells domains, not a sender address, which is the
    /// app's choice.
    #[serde(default)]
    pub from_domain: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkyPilotMetadata {
    #[serde(default)]
    pub connected: bool,
}

/// Stored metadata that does not fit its provider's shape.
#[derive(Debug, thiserror::Error)]
#[error("the stored metadata of a {provider} integration is unreadable: {source}")]
pub struct MetadataError {
    pub provider: Provider,
    #[source]
    pub source: serde_json::Error,
}

impl Metadata {
    /// Reads a row's `metadata` column as its `provider`'s shape; `{}` (never connected) and
    /// `null` are no metadata.
    pub fn read(provider: Provider, value: Value) -> Result<Option<Metadata>, MetadataError> {
        if value.is_null() || value.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        let err = |source| MetadataError { provider, source };
        Ok(Some(match provider {
            Provider::Shopify => Metadata::Shopify(serde_json::from_value(value).map_err(err)?),
            Provider::Pinterest => Metadata::Pinterest(serde_json::from_value(value).map_err(err)?),
            Provider::Klaviyo => Metadata::Klaviyo(serde_json::from_value(value).map_err(err)?),
            Provider::DynamicMockups => {
                Metadata::DynamicMockups(serde_json::from_value(value).map_err(err)?)
            }
            Provider::Resend => Metadata::Resend(serde_json::from_value(value).map_err(err)?),
            Provider::SkyPilot => Metadata::SkyPilot(serde_json::from_value(value).map_err(err)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    /// What the service stored before metadata was typed, per provider.
    fn old_rows() -> Vec<(Provider, Value)> {
        vec![
            (
                Provider::Shopify,
                json!({"shop_domain": "acme.myshopify.com", "shop_name": "Acme", "access_scopes": ["read_products"]}),
            ),
            (
                Provider::Pinterest,
                json!({"account_name": "Acme", "account_id": "5497", "board_count": 12}),
            ),
            (Provider::Klaviyo, json!({"list_count": 3})),
            (
                Provider::DynamicMockups,
                json!({"credits_remaining": 950, "plan": "pro"}),
            ),
            (
                Provider::DynamicMockups,
                json!({"credits_remaining": null, "plan": null}),
            ),
            (
                Provider::Resend,
                json!({"domain_verified": true, "send_only": false, "from_domain": "mail.example"}),
            ),
            (
                Provider::Resend,
                json!({"domain_verified": false, "send_only": true, "from_domain": null}),
            ),
            (Provider::SkyPilot, json!({"connected": true})),
        ]
    }

    #[test]
    fn rows_written_before_the_type_read_and_write_back_the_same() {
        for (provider, stored) in old_rows() {
            let m = Metadata::read(provider, stored.clone()).unwrap().unwrap();
            assert_eq!(serde_json::to_value(&m).unwrap(), stored, "{provider}");
        }
        let resend = Metadata::read(Provider::Resend, old_rows()[5].1.clone()).unwrap();
        assert_eq!(
            resend,
            Some(Metadata::Resend(ResendMetadata {
                domain_verified: true,
                send_only: false,
                from_domain: Some("mail.example".into()),
            }))
        );
    }

    #[test]
    fn empty_is_none_and_a_wrong_shape_names_the_provider() {
        for p in Provider::ALL {
            assert_eq!(Metadata::read(p, json!({})).unwrap(), None);
            assert_eq!(Metadata::read(p, Value::Null).unwrap(), None);
        }
        let e = Metadata::read(Provider::Pinterest, json!({"board_count": "many"})).unwrap_err();
        assert!(e.to_string().contains("pinterest"), "{e}");
    }
}
