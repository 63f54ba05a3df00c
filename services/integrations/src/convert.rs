//! Rows to protobuf messages, as `From` impls.

use haven_proto::integrations::v1 as pb;
use haven_proto::time::timestamp;

use crate::metadata::{
    DynamicMockupsMetadata, KlaviyoMetadata, Metadata, PinterestMetadata, ResendMetadata,
    ShopifyMetadata,
};
use crate::registry::{self, Auth};
use crate::store::{IntegrationRow, Status, StepStatus};

impl From<Status> for pb::IntegrationStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Disconnected => pb::IntegrationStatus::Disconnected,
            Status::Connecting => pb::IntegrationStatus::Pending,
            Status::Connected => pb::IntegrationStatus::Connected,
            Status::Error => pb::IntegrationStatus::Error,
            Status::Expired => pb::IntegrationStatus::Expired,
        }
    }
}

impl From<StepStatus> for pb::SetupStepStatus {
    fn from(status: StepStatus) -> Self {
        match status {
            StepStatus::Pending => pb::SetupStepStatus::Pending,
            StepStatus::Completed => pb::SetupStepStatus::Completed,
            StepStatus::Skipped => pb::SetupStepStatus::Skipped,
        }
    }
}

/// Counts beyond `i32` (never seen) show as `i32::MAX`.
fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl From<&ShopifyMetadata> for pb::ShopifyMetadata {
    fn from(m: &ShopifyMetadata) -> Self {
        pb::ShopifyMetadata {
            shop_domain: m.shop_domain.clone(),
            shop_name: m.shop_name.clone(),
        }
    }
}

impl From<&PinterestMetadata> for pb::PinterestMetadata {
    fn from(m: &PinterestMetadata) -> Self {
        pb::PinterestMetadata {
            account_name: m.account_name.clone(),
            account_id: m.account_id.clone(),
            board_count: count(m.board_count),
        }
    }
}

impl From<&KlaviyoMetadata> for pb::KlaviyoMetadata {
    fn from(m: &KlaviyoMetadata) -> Self {
        pb::KlaviyoMetadata {
            list_count: count(m.list_count),
            default_list_id: m.default_list_id.clone().unwrap_or_default(),
        }
    }
}

impl From<&DynamicMockupsMetadata> for pb::DynamicMockupsMetadata {
    fn from(m: &DynamicMockupsMetadata) -> Self {
        pb::DynamicMockupsMetadata {
            credits_remaining: m.credits_remaining.unwrap_or_default(),
            plan: m.plan.clone().unwrap_or_default(),
        }
    }
}

impl From<&ResendMetadata> for pb::ResendMetadata {
    fn from(m: &ResendMetadata) -> Self {
        pb::ResendMetadata {
            domain_verified: m.domain_verified,
            // Documented as always empty in the proto: Resend names no sender address.
            from_email: String::new(),
            from_domain: m.from_domain.clone().unwrap_or_default(),
        }
    }
}

impl From<&Metadata> for Option<pb::integration::Metadata> {
    fn from(m: &Metadata) -> Self {
        use pb::integration::Metadata as M;
        Some(match m {
            Metadata::Shopify(m) => M::Shopify(m.into()),
            Metadata::Pinterest(m) => M::Pinterest(m.into()),
            Metadata::Klaviyo(m) => M::Klaviyo(m.into()),
            Metadata::DynamicMockups(m) => M::DynamicMockups(m.into()),
            Metadata::Resend(m) => M::Resend(m.into()),
            // Sky Pilot has no details beyond its status.
            Metadata::SkyPilot(_) => return None,
        })
    }
}

/// The public view of a row; never carries a secret.
impl From<&IntegrationRow> for pb::Integration {
    fn from(row: &IntegrationRow) -> Self {
        pb::Integration {
            id: row.id.to_string(),
            tenant_id: row.tenant_id.to_string(),
            provider: row.provider.as_str().to_owned(),
            auth_type: match registry::info(row.provider).auth {
                Auth::OAuth => pb::AuthType::Oauth,
                Auth::ApiKey => pb::AuthType::ApiKey,
            } as i32,
            status: pb::IntegrationStatus::from(row.status) as i32,
            scopes: row.scopes.clone(),
            metadata: row.metadata.as_ref().and_then(Into::into),
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
}
