//! Rows to protobuf messages.

use chrono::{DateTime, Utc};
use haven_proto::integrations::v1 as pb;
use serde_json::Value;

use crate::registry::{self, Auth, Provider};
use crate::store::{IntegrationRow, Status};

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn status_proto(status: Status) -> pb::IntegrationStatus {
    match status {
        Status::Disconnected => pb::IntegrationStatus::Disconnected,
        Status::Connecting => pb::IntegrationStatus::Pending,
        Status::Connected => pb::IntegrationStatus::Connected,
        Status::Error => pb::IntegrationStatus::Error,
        Status::Expired => pb::IntegrationStatus::Expired,
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or_default()
}

fn metadata(provider: Provider, v: &Value) -> Option<pb::integration::Metadata> {
    use pb::integration::Metadata;
    if v.as_object().is_none_or(|o| o.is_empty()) {
        return None;
    }
    Some(match provider {
        Provider::Shopify => Metadata::Shopify(pb::ShopifyMetadata {
            shop_domain: text(v, "shop_domain"),
            shop_name: text(v, "shop_name"),
        }),
        Provider::Pinterest => Metadata::Pinterest(pb::PinterestMetadata {
            account_name: text(v, "account_name"),
            account_id: text(v, "account_id"),
            board_count: i32::try_from(int(v, "board_count")).unwrap_or(i32::MAX),
        }),
        Provider::Klaviyo => Metadata::Klaviyo(pb::KlaviyoMetadata {
            list_count: i32::try_from(int(v, "list_count")).unwrap_or(i32::MAX),
            default_list_id: text(v, "default_list_id"),
        }),
        Provider::DynamicMockups => Metadata::DynamicMockups(pb::DynamicMockupsMetadata {
            credits_remaining: int(v, "credits_remaining"),
            plan: text(v, "plan"),
        }),
        Provider::Resend => Metadata::Resend(pb::ResendMetadata {
            domain_verified: v
                .get("domain_verified")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            from_email: String::new(),
            from_domain: text(v, "from_domain"),
        }),
        // Sky Pilot has no details beyond its status.
        Provider::SkyPilot => return None,
    })
}

/// The public view of a row; never carries a secret.
pub fn integration(row: &IntegrationRow) -> pb::Integration {
    let auth = registry::info(row.provider).auth;
    pb::Integration {
        id: row.id.to_string(),
        tenant_id: row.tenant_id.to_string(),
        provider: row.provider.as_str().to_owned(),
        auth_type: match auth {
            Auth::OAuth => pb::AuthType::Oauth,
            Auth::ApiKey => pb::AuthType::ApiKey,
        } as i32,
        status: status_proto(row.status()) as i32,
        scopes: row.scopes.clone(),
        metadata: metadata(row.provider, &row.metadata),
        last_error: row.last_error.clone().unwrap_or_default(),
        last_error_at: row.last_error_at.map(timestamp),
        token_expires_at: row.token_expires_at.map(timestamp),
        last_refreshed_at: row.last_refreshed_at.map(timestamp),
        connected_at: row.connected_at.map(timestamp),
        disconnected_at: row.disconnected_at.map(timestamp),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}
