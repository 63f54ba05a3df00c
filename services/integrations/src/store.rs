//! The `integrations` schema: rows in, rows out. Secrets pass through here only sealed.

use chrono::{DateTime, Utc};
use haven_vault::{CredentialKind, Sealed};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;
use crate::metadata::Metadata;
use crate::registry::Provider;

haven_db::text_enum! {
    /// Connection state as stored.
    pub enum Status in "integrations.status" {
        Disconnected = "disconnected",
        Connecting = "connecting",
        Connected = "connected",
        Error = "error",
        Expired = "expired",
    }
}

haven_db::text_enum! {
    /// A setup wizard step's state as stored; a step without a row is pending.
    pub enum StepStatus in "setup_progress.status" {
        Pending = "pending",
        Completed = "completed",
        Skipped = "skipped",
    }
}

haven_db::text_enum! {
    /// A Shopify webhook subscription's state as stored.
    pub enum WebhookStatus in "shopify_webhooks.status" {
        /// Not registered yet (or handed to the retry queue).
        Pending = "pending",
        Registered = "registered",
        /// Left by a disconnect, waiting to be deregistered.
        Deregistering = "deregistering",
    }
}

/// One `integrations` row.
#[derive(Clone, Debug)]
pub struct IntegrationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub provider: Provider,
    pub status: Status,
    /// `None` until the first connection stores what the provider told.
    pub metadata: Option<Metadata>,
    pub scopes: Vec<String>,
    pub shop_domain: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns as stored; [`IntegrationRow`] adds the metadata's shape, which depends on the
/// provider column.
#[derive(FromRow)]
struct StoredRow {
    id: Uuid,
    tenant_id: Uuid,
    #[sqlx(try_from = "String")]
    provider: Provider,
    status: Status,
    metadata: Json<serde_json::Value>,
    scopes: Vec<String>,
    shop_domain: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    token_expires_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    connected_at: Option<DateTime<Utc>>,
    disconnected_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for IntegrationRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let r = StoredRow::from_row(row)?;
        let metadata =
            Metadata::read(r.provider, r.metadata.0).map_err(|e| sqlx::Error::ColumnDecode {
                index: "metadata".into(),
                source: Box::new(e),
            })?;
        Ok(IntegrationRow {
            id: r.id,
            tenant_id: r.tenant_id,
            provider: r.provider,
            status: r.status,
            metadata,
            scopes: r.scopes,
            shop_domain: r.shop_domain,
            last_error: r.last_error,
            last_error_at: r.last_error_at,
            token_expires_at: r.token_expires_at,
            last_refreshed_at: r.last_refreshed_at,
            connected_at: r.connected_at,
            disconnected_at: r.disconnected_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "id, tenant_id, provider, status, metadata, scopes, shop_domain, last_error, \
     last_error_at, token_expires_at, last_refreshed_at, connected_at, disconnected_at, created_at, updated_at";

pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<Vec<IntegrationRow>> {
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations.integrations WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .fetch_all(pool)
        .await?,
    )
}

pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    provider: Provider,
) -> Result<Option<IntegrationRow>> {
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations.integrations WHERE tenant_id = $1 AND provider = $2"
        )))
        .bind(tenant)
        .bind(provider.as_str())
        .fetch_optional(conn)
        .await?,
    )
}

pub async fn get_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<IntegrationRow>> {
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations.integrations WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(conn)
        .await?,
    )
}

/// Locks the row for a token refresh: other refreshers (in any replica) wait here, then see
/// the renewed expiry. With `skip_locked`, a row being refreshed elsewhere yields `None`.
pub async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
    skip_locked: bool,
) -> Result<Option<IntegrationRow>> {
    let skip = if skip_locked { " SKIP LOCKED" } else { "" };
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations.integrations WHERE id = $1 FOR UPDATE{skip}"
        )))
        .bind(id)
        .fetch_optional(conn)
        .await?,
    )
}

/// Integrations connected to a shop, whichever tenant owns them.
pub async fn by_shop(pool: &PgPool, shop: &str) -> Result<Vec<IntegrationRow>> {
    Ok(sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations.integrations WHERE provider = $1 AND shop_domain = $2"
    )))
    .bind(Provider::Shopify.as_str())
    .bind(shop)
    .fetch_all(pool)
    .await?)
}

/// Connected OAuth integrations whose token expires before `before`, soonest first.
pub async fn expiring(pool: &PgPool, before: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM integrations.integrations WHERE status = $3 AND token_expires_at IS NOT NULL \
         AND token_expires_at < $1 ORDER BY token_expires_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .bind(Status::Connected)
    .fetch_all(pool)
    .await?)
}

/// Locks a tenant's row for `provider`, creating it (disconnected) first if needed, so the
/// status machine decides from the status it will replace.
pub async fn lock_or_create(
    conn: &mut PgConnection,
    tenant: Uuid,
    provider: Provider,
) -> Result<IntegrationRow> {
    sqlx::query(
        "INSERT INTO integrations.integrations (id, tenant_id, provider, status) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, provider) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(provider.as_str())
    .bind(Status::Disconnected)
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations.integrations WHERE tenant_id = $1 AND provider = $2 FOR UPDATE"
        )))
        .bind(tenant)
        .bind(provider.as_str())
        .fetch_one(conn)
        .await?,
    )
}

/// Sets the status alone (a connection attempt).
pub async fn set_status(conn: &mut PgConnection, id: Uuid, status: Status) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.integrations SET status = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a successful connection stores.
pub struct Connected<'a> {
    pub tenant: Uuid,
    pub provider: Provider,
    pub user: &'a str,
    pub metadata: Metadata,
    pub scopes: Vec<String>,
    pub shop_domain: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Upserts the row with what a connection stored and returns it.
pub async fn set_connected(
    conn: &mut PgConnection,
    c: &Connected<'_>,
    status: Status,
) -> Result<IntegrationRow> {
    Ok(sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO integrations.integrations (id, tenant_id, provider, status, metadata, scopes, shop_domain, \
           token_expires_at, last_refreshed_at, connected_at, connected_by) \
         VALUES ($1, $2, $3, $9, $4, $5, $6, $7, CASE WHEN $7::timestamptz IS NULL THEN NULL ELSE now() END, now(), $8) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET status = EXCLUDED.status, \
           metadata = EXCLUDED.metadata, scopes = EXCLUDED.scopes, shop_domain = EXCLUDED.shop_domain, \
           token_expires_at = EXCLUDED.token_expires_at, last_refreshed_at = EXCLUDED.last_refreshed_at, connected_at = now(), \
           connected_by = EXCLUDED.connected_by, last_error = NULL, last_error_at = NULL, updated_at = now() \
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(c.tenant)
    .bind(c.provider.as_str())
    .bind(Json(&c.metadata))
    .bind(&c.scopes)
    .bind(&c.shop_domain)
    .bind(c.token_expires_at)
    .bind(c.user)
    .bind(status)
    .fetch_one(conn)
    .await?)
}

/// Records a failure the user must see, with the status the machine decided.
pub async fn set_failed(
    conn: &mut PgConnection,
    tenant: Uuid,
    provider: Provider,
    status: Status,
    message: &str,
) -> Result<IntegrationRow> {
    Ok(sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO integrations.integrations AS i (id, tenant_id, provider, status, last_error, last_error_at) \
         VALUES ($1, $2, $3, $4, $5, now()) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET \
           status = $4, last_error = $5, last_error_at = now(), updated_at = now() \
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(provider.as_str())
    .bind(status)
    .bind(message)
    .fetch_one(conn)
    .await?)
}

/// Marks the row disconnected (the machine's `status`) after its credentials were removed.
pub async fn set_disconnected(
    conn: &mut PgConnection,
    id: Uuid,
    status: Status,
    reason: Option<&str>,
) -> Result<IntegrationRow> {
    Ok(sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE integrations.integrations SET status = $3, disconnected_at = now(), token_expires_at = NULL, \
           last_error = COALESCE($2, last_error), last_error_at = CASE WHEN $2 IS NULL THEN last_error_at ELSE now() END, \
           updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(reason)
    .bind(status)
    .fetch_one(conn)
    .await?)
}

/// Records renewed tokens' expiry.
pub async fn set_refreshed(
    conn: &mut PgConnection,
    id: Uuid,
    status: Status,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IntegrationRow> {
    Ok(sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE integrations.integrations SET status = $3, token_expires_at = $2, last_refreshed_at = now(), last_error = NULL, \
           last_error_at = NULL, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(expires_at)
    .bind(status)
    .fetch_one(conn)
    .await?)
}

/// Notes a failure without changing status (e.g. a refresh that will be retried).
pub async fn note_error(conn: &mut PgConnection, id: Uuid, message: &str) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.integrations SET last_error = $2, last_error_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores (or replaces) one sealed credential.
pub async fn put_credential(
    conn: &mut PgConnection,
    row: &IntegrationRow,
    kind: CredentialKind,
    sealed: &Sealed,
    expires_at: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO integrations.credentials (integration_id, tenant_id, provider, kind, key_id, nonce, ciphertext, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (integration_id, kind) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, \
           ciphertext = EXCLUDED.ciphertext, expires_at = EXCLUDED.expires_at, updated_at = now()",
    )
    .bind(row.id)
    .bind(row.tenant_id)
    .bind(row.provider.as_str())
    .bind(kind.as_str())
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads one sealed credential.
pub async fn credential(
    conn: &mut PgConnection,
    integration: Uuid,
    kind: CredentialKind,
) -> Result<Option<Sealed>> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext FROM integrations.credentials WHERE integration_id = $1 AND kind = $2",
    )
    .bind(integration)
    .bind(kind.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(key_id, nonce, ciphertext)| Sealed {
        key_id,
        nonce,
        ciphertext,
    }))
}

/// Deletes credentials of an integration, all kinds or all but `keep`.
pub async fn delete_credentials(
    conn: &mut PgConnection,
    integration: Uuid,
    keep: Option<CredentialKind>,
) -> Result<()> {
    sqlx::query("DELETE FROM integrations.credentials WHERE integration_id = $1 AND kind IS DISTINCT FROM $2")
        .bind(integration)
        .bind(keep.map(CredentialKind::as_str))
        .execute(conn)
        .await?;
    Ok(())
}

/// A stored OAuth state.
#[derive(Debug, sqlx::FromRow)]
pub struct OAuthState {
    pub tenant_id: Uuid,
    pub user_id: String,
    #[sqlx(try_from = "String")]
    pub provider: Provider,
    pub shop_domain: Option<String>,
    pub redirect_uri: String,
    pub verifier_key_id: Option<String>,
    pub verifier_nonce: Option<Vec<u8>>,
    pub verifier_ciphertext: Option<Vec<u8>>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
}

impl OAuthState {
    pub fn verifier(&self) -> Option<Sealed> {
        Some(Sealed {
            key_id: self.verifier_key_id.clone()?,
            nonce: self.verifier_nonce.clone()?,
            ciphertext: self.verifier_ciphertext.clone()?,
        })
    }
}

/// What a new state stores.
pub struct NewState<'a> {
    pub hash: &'a [u8],
    pub tenant: Uuid,
    pub user: &'a str,
    pub provider: Provider,
    pub shop_domain: Option<&'a str>,
    pub redirect_uri: &'a str,
    pub verifier: Option<&'a Sealed>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_state(pool: &PgPool, s: &NewState<'_>) -> Result<()> {
    // States a day past expiry are useless even for telling "expired" from "unknown".
    sqlx::query(
        "DELETE FROM integrations.oauth_states WHERE expires_at < now() - interval '1 day'",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO integrations.oauth_states (state_hash, tenant_id, user_id, provider, shop_domain, redirect_uri, \
           verifier_key_id, verifier_nonce, verifier_ciphertext, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(s.hash)
    .bind(s.tenant)
    .bind(s.user)
    .bind(s.provider.as_str())
    .bind(s.shop_domain)
    .bind(s.redirect_uri)
    .bind(s.verifier.map(|v| v.key_id.as_str()))
    .bind(s.verifier.map(|v| v.nonce.as_slice()))
    .bind(s.verifier.map(|v| v.ciphertext.as_slice()))
    .bind(s.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks a state by hash for checking and consuming.
pub async fn lock_state(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<OAuthState>> {
    Ok(sqlx::query_as::<_, OAuthState>(
        "SELECT tenant_id, user_id, provider, shop_domain, redirect_uri, verifier_key_id, verifier_nonce, \
           verifier_ciphertext, expires_at, consumed_at FROM integrations.oauth_states WHERE state_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

/// Marks a state used and drops its verifier.
pub async fn consume_state(conn: &mut PgConnection, hash: &[u8]) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.oauth_states SET consumed_at = now(), verifier_key_id = NULL, verifier_nonce = NULL, \
           verifier_ciphertext = NULL WHERE state_hash = $1",
    )
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// One Shopify webhook subscription.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub topic: String,
    pub shopify_webhook_id: Option<String>,
    pub status: WebhookStatus,
}

/// Creates or resets the subscription rows for `topics` as pending.
pub async fn reset_webhooks(
    conn: &mut PgConnection,
    row: &IntegrationRow,
    topics: &[&str],
    address: &str,
) -> Result<Vec<WebhookRow>> {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    Ok(sqlx::query_as::<_, WebhookRow>(
        "INSERT INTO integrations.shopify_webhooks AS w (id, integration_id, tenant_id, topic, address, status) \
         SELECT gen_random_uuid(), $1, $2, t, $3, 'pending' FROM unnest($4::text[]) AS t \
         ON CONFLICT (integration_id, topic) DO UPDATE SET address = EXCLUDED.address, \
           status = CASE WHEN w.status = 'registered' AND w.address = EXCLUDED.address \
                         THEN 'registered' ELSE 'pending' END, updated_at = now() \
         RETURNING id, topic, shopify_webhook_id, status",
    )
    .bind(row.id)
    .bind(row.tenant_id)
    .bind(address)
    .bind(&topics)
    .fetch_all(conn)
    .await?)
}

pub async fn webhooks(
    conn: &mut PgConnection,
    integration: Uuid,
    status: Option<WebhookStatus>,
) -> Result<Vec<WebhookRow>> {
    Ok(sqlx::query_as::<_, WebhookRow>(
        "SELECT id, topic, shopify_webhook_id, status FROM integrations.shopify_webhooks \
         WHERE integration_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY topic",
    )
    .bind(integration)
    .bind(status)
    .fetch_all(conn)
    .await?)
}

pub async fn set_webhook_registered(
    conn: &mut PgConnection,
    integration: Uuid,
    topic: &str,
    shopify_id: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.shopify_webhooks SET status = 'registered', shopify_webhook_id = $3, last_error = NULL, \
           updated_at = now() WHERE integration_id = $1 AND topic = $2",
    )
    .bind(integration)
    .bind(topic)
    .bind(shopify_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_webhook_error(
    conn: &mut PgConnection,
    integration: Uuid,
    topic: &str,
    message: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.shopify_webhooks SET last_error = $3, updated_at = now() WHERE integration_id = $1 AND topic = $2",
    )
    .bind(integration)
    .bind(topic)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every subscription of an integration as waiting for deregistration.
pub async fn mark_webhooks_deregistering(conn: &mut PgConnection, integration: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE integrations.shopify_webhooks SET status = 'deregistering', updated_at = now() WHERE integration_id = $1",
    )
    .bind(integration)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_webhook_row(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM integrations.shopify_webhooks WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_webhooks(conn: &mut PgConnection, integration: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM integrations.shopify_webhooks WHERE integration_id = $1")
        .bind(integration)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stored wizard steps of a tenant: (step, status, updated_at).
pub async fn setup_steps(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Vec<(String, StepStatus, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT step, status, updated_at FROM integrations.setup_progress WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

pub async fn set_step(
    conn: &mut PgConnection,
    tenant: Uuid,
    step: &str,
    status: StepStatus,
    user: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO integrations.setup_progress (tenant_id, step, status, updated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, step) DO UPDATE SET status = EXCLUDED.status, \
           updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(tenant)
    .bind(step)
    .bind(status)
    .bind(user)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every sealed secret in the schema, for re-encryption: (table key, owner, sealed).
pub struct StoredSecret {
    pub integration_id: Uuid,
    pub tenant_id: Uuid,
    pub provider: Provider,
    pub kind: String,
    pub sealed: Sealed,
}

/// Credentials not sealed under `active`, a page at a time.
pub async fn stale_credentials(
    conn: &mut PgConnection,
    active: &str,
    limit: i64,
) -> Result<Vec<StoredSecret>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        integration_id: Uuid,
        tenant_id: Uuid,
        #[sqlx(try_from = "String")]
        provider: Provider,
        kind: String,
        key_id: String,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT integration_id, tenant_id, provider, kind, key_id, nonce, ciphertext FROM integrations.credentials \
         WHERE key_id <> $1 ORDER BY integration_id, kind LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(active)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredSecret {
            integration_id: r.integration_id,
            tenant_id: r.tenant_id,
            provider: r.provider,
            kind: r.kind,
            sealed: Sealed {
                key_id: r.key_id,
                nonce: r.nonce,
                ciphertext: r.ciphertext,
            },
        })
        .collect())
}

/// Replaces a credential's ciphertext only if it is still the one that was read.
pub async fn reseal_credential(
    conn: &mut PgConnection,
    old: &StoredSecret,
    new: &Sealed,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE integrations.credentials SET key_id = $3, nonce = $4, ciphertext = $5, updated_at = now() \
         WHERE integration_id = $1 AND kind = $2 AND nonce = $6",
    )
    .bind(old.integration_id)
    .bind(&old.kind)
    .bind(&new.key_id)
    .bind(&new.nonce)
    .bind(&new.ciphertext)
    .bind(&old.sealed.nonce)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_unknown_ones_do_not_parse() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(*s));
        }
        for s in WebhookStatus::ALL {
            assert_eq!(WebhookStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Status::parse("paused"), None);
        assert_eq!(StepStatus::parse("done"), None);
        assert_eq!(WebhookStatus::parse("Registered"), None);
    }
}
