//! `integrations.activity`: what changed on a tenant's integrations, written in the
//! transaction of the change itself, so the history and the state cannot disagree.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Result, StoredProvider};
use crate::registry::Provider;

haven_db::text_enum! {
    /// `activity.action`, named as seed 001's `log_activity` names them.
    pub enum Action in "activity.action" {
        Connected = "integration_connected",
        Disconnected = "integration_disconnected",
        ConnectFailed = "integration_connect_failed",
        RefreshFailed = "token_refresh_failed",
        AppUninstalled = "app_uninstalled",
        /// An OAuth attempt whose state expired unused.
        Abandoned = "connection_abandoned",
    }
}

/// One activity row.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: Uuid,
    pub user_id: Option<String>,
    pub action: Action,
    pub provider: Provider,
    pub details: Value,
    pub at: DateTime<Utc>,
}

/// Records one change; `user` is `None` for the system (a refresh, a webhook, an expiry).
pub async fn record(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Option<&str>,
    action: Action,
    provider: Provider,
    details: Value,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO integrations.activity (id, tenant_id, user_id, action, provider, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
        Uuid::now_v7(),
        tenant,
        user,
        action.as_str(),
        provider.as_str(),
        Json(&details) as _
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The tenant's latest `limit` entries, newest first.
pub async fn list(pool: &PgPool, tenant: Uuid, limit: i64) -> Result<Vec<Entry>> {
    Ok(sqlx::query!(
        r#"SELECT id, user_id, action AS "action: Action", provider AS "provider: StoredProvider",
                  details AS "details: Json<Value>", at
           FROM integrations.activity WHERE tenant_id = $1
           ORDER BY at DESC, id DESC LIMIT $2"#,
        tenant,
        limit
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| Entry {
        id: r.id,
        user_id: r.user_id,
        action: r.action,
        provider: r.provider.into(),
        details: r.details.0,
        at: r.at,
    })
    .collect())
}
