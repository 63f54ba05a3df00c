//! `haven.integrations.events.<provider>.<kind>`: what other services learn about connections.

use chrono::Utc;
use haven_bus::Bus;
use haven_proto::events::v1::{IntegrationEvent, IntegrationEventKind};
use uuid::Uuid;

use crate::registry::Provider;
use crate::store::IntegrationRow;
use haven_proto::integrations::v1::IntegrationStatus;
use haven_proto::time::timestamp;

/// The subject an event of `kind` for `provider` goes to.
pub fn subject(provider: Provider, kind: IntegrationEventKind) -> String {
    let kind = match kind {
        IntegrationEventKind::Connected => "connected",
        IntegrationEventKind::Disconnected => "disconnected",
        IntegrationEventKind::Error => "error",
        IntegrationEventKind::Expired => "expired",
        IntegrationEventKind::Refreshed => "refreshed",
        IntegrationEventKind::Unspecified => "unspecified",
    };
    format!("haven.integrations.events.{provider}.{kind}")
}

/// Publishes an event about `row`. A bus failure is logged, not returned: the state change
/// it reports is already committed, and failing the user's call now would only make them
/// repeat something that worked.
pub async fn publish(
    bus: &Bus,
    row: &IntegrationRow,
    kind: IntegrationEventKind,
    user: Option<&str>,
    error: Option<&str>,
) {
    let event = IntegrationEvent {
        tenant_id: row.tenant_id.to_string(),
        integration_id: row.id.to_string(),
        provider: row.provider.as_str().to_owned(),
        kind: kind as i32,
        status: IntegrationStatus::from(row.status) as i32,
        user_id: user.unwrap_or_default().to_owned(),
        error: error.unwrap_or_default().to_owned(),
        token_expires_at: row.token_expires_at.map(timestamp),
        occurred_at: Some(timestamp(Utc::now())),
    };
    let subject = subject(row.provider, kind);
    if let Err(e) = bus
        .publish(&subject, &event, &Uuid::now_v7().to_string())
        .await
    {
        tracing::error!(%subject, error = %e, "integration event not published");
    }
}
