//! The `integrations` schema: rows in, rows out. Secrets pass through here only sealed.
//!
//! Every statement is static and checked at compile time by sqlx's query macros against
//! the query data in `.sqlx/`.

use chrono::{DateTime, Utc};
use haven_vault::{CredentialKind, Sealed};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub mod activity;
pub mod boards;

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

/// A [`Provider`] as a `provider` column stores it. `haven-providers` knows nothing of sqlx,
/// so the query macros read the column through this (`AS "provider!: StoredProvider"`) and
/// hand the field a [`Provider`]; an unknown key is a decode error that names it.
#[derive(Debug)]
struct StoredProvider(Provider);

impl sqlx::Type<sqlx::Postgres> for StoredProvider {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for StoredProvider {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let key = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(StoredProvider(Provider::parse(key)?))
    }
}

impl From<StoredProvider> for Provider {
    fn from(stored: StoredProvider) -> Provider {
        stored.0
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
struct StoredRow {
    id: Uuid,
    tenant_id: Uuid,
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

impl TryFrom<StoredRow> for IntegrationRow {
    type Error = sqlx::Error;

    fn try_from(r: StoredRow) -> sqlx::Result<Self> {
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

/// `sqlx::query_as!` for [`StoredRow`]s: `query_rows!("SELECT ", " FROM
/// integrations.integrations WHERE …", args…)` puts the row's columns between the two
/// literals (`"… RETURNING ", ""` for a write that returns the row), so every statement is
/// checked at compile time. This is the only spelling of the column list; the aliases give
/// each column's Rust type (`!`/`?` nullability, the enums).
macro_rules! query_rows {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            StoredRow,
            $before
                + r#"id AS "id!", tenant_id AS "tenant_id!",
                 provider AS "provider!: StoredProvider", status AS "status!: Status",
                 metadata AS "metadata!: sqlx::types::Json<serde_json::Value>", scopes AS "scopes!",
                 shop_domain AS "shop_domain?", last_error AS "last_error?",
                 last_error_at AS "last_error_at?", token_expires_at AS "token_expires_at?",
                 last_refreshed_at AS "last_refreshed_at?", connected_at AS "connected_at?",
                 disconnected_at AS "disconnected_at?", created_at AS "created_at!",
                 updated_at AS "updated_at!""#
                + $after
            $(, $arg)*
        )
    };
}

/// Reads the metadata of one fetched row.
fn decoded(row: StoredRow) -> Result<IntegrationRow> {
    Ok(IntegrationRow::try_from(row)?)
}

fn decoded_all(rows: Vec<StoredRow>) -> Result<Vec<IntegrationRow>> {
    rows.into_iter().map(decoded).collect()
}

pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<Vec<IntegrationRow>> {
    decoded_all(
        query_rows!(
            "SELECT ",
            " FROM integrations.integrations WHERE tenant_id = $1",
            tenant
        )
        .fetch_all(pool)
        .await?,
    )
}

pub async fn get(
    conn: &mut PgConnection,
    tenant: Uuid,
    provider: Provider,
) -> Result<Option<IntegrationRow>> {
    query_rows!(
        "SELECT ",
        " FROM integrations.integrations WHERE tenant_id = $1 AND provider = $2",
        tenant,
        provider.as_str()
    )
    .fetch_optional(conn)
    .await?
    .map(decoded)
    .transpose()
}

pub async fn get_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<IntegrationRow>> {
    query_rows!(
        "SELECT ",
        " FROM integrations.integrations WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await?
    .map(decoded)
    .transpose()
}

/// Locks the row for a token refresh: other refreshers (in any replica) wait here, then see
/// the renewed expiry. With `skip_locked`, a row being refreshed elsewhere yields `None`.
pub async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
    skip_locked: bool,
) -> Result<Option<IntegrationRow>> {
    let row = if skip_locked {
        query_rows!(
            "SELECT ",
            " FROM integrations.integrations WHERE id = $1 FOR UPDATE SKIP LOCKED",
            id
        )
        .fetch_optional(conn)
        .await?
    } else {
        query_rows!(
            "SELECT ",
            " FROM integrations.integrations WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(conn)
        .await?
    };
    row.map(decoded).transpose()
}

/// A connected Shopify shop, as the services that work on every shop list them.
#[derive(Debug, Clone)]
pub struct ShopRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub shop_domain: String,
    pub connected_at: Option<DateTime<Utc>>,
}

/// Connected Shopify integrations after `after` (by id), of `tenant` or of every tenant.
pub async fn connected_shops(
    pool: &PgPool,
    tenant: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ShopRow>> {
    Ok(sqlx::query_as!(
        ShopRow,
        r#"SELECT id, tenant_id, shop_domain AS "shop_domain!", connected_at
           FROM integrations.integrations
           WHERE provider = $1 AND status = $2 AND shop_domain IS NOT NULL
             AND ($3::uuid IS NULL OR tenant_id = $3)
             AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id
           LIMIT $5"#,
        Provider::Shopify.as_str(),
        Status::Connected as Status,
        tenant,
        after,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// Integrations connected to a shop, whichever tenant owns them.
pub async fn by_shop(pool: &PgPool, shop: &str) -> Result<Vec<IntegrationRow>> {
    decoded_all(
        query_rows!(
            "SELECT ",
            " FROM integrations.integrations WHERE provider = $1 AND shop_domain = $2",
            Provider::Shopify.as_str(),
            shop
        )
        .fetch_all(pool)
        .await?,
    )
}

/// Connected OAuth integrations whose token expires before `before`, soonest first.
pub async fn expiring(pool: &PgPool, before: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM integrations.integrations WHERE status = $3 AND token_expires_at IS NOT NULL \
         AND token_expires_at < $1 ORDER BY token_expires_at LIMIT $2",
        before,
        limit,
        Status::Connected.as_str()
    )
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
    sqlx::query!(
        "INSERT INTO integrations.integrations (id, tenant_id, provider, status) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, provider) DO NOTHING",
        Uuid::now_v7(),
        tenant,
        provider.as_str(),
        Status::Disconnected.as_str()
    )
    .execute(&mut *conn)
    .await?;
    decoded(
        query_rows!(
            "SELECT ",
            " FROM integrations.integrations WHERE tenant_id = $1 AND provider = $2 FOR UPDATE",
            tenant,
            provider.as_str()
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Sets the status alone (a connection attempt). Entering `connecting` remembers the status
/// it left, which [`revert_abandoned`] restores if the attempt is never finished.
pub async fn set_status(conn: &mut PgConnection, id: Uuid, status: Status) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.integrations SET status = $2, updated_at = now(),
           status_before_connecting = CASE
             WHEN $2 = 'connecting' AND status <> 'connecting' THEN status
             ELSE status_before_connecting END
         WHERE id = $1",
        id,
        status.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Connections left `connecting` by OAuth attempts whose states all expired: each goes back
/// to the status it had before (at most `limit` per call), and is returned. A consumed state
/// counts until it expires too: its callback is exchanging the code with the provider, and
/// reverting under it logged a connection that then succeeded as abandoned.
pub async fn revert_abandoned(conn: &mut PgConnection, limit: i64) -> Result<Vec<IntegrationRow>> {
    decoded_all(
        query_rows!(
            "UPDATE integrations.integrations i
             SET status = COALESCE(i.status_before_connecting, 'disconnected'),
                 status_before_connecting = NULL, updated_at = now()
             WHERE i.id IN (
               SELECT c.id FROM integrations.integrations c
               WHERE c.status = 'connecting' AND NOT EXISTS (
                 SELECT 1 FROM integrations.oauth_states s
                 WHERE s.tenant_id = c.tenant_id AND s.provider = c.provider
                   AND s.expires_at > now())
               LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            "",
            limit
        )
        .fetch_all(conn)
        .await?,
    )
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
    /// Pinterest: the account's boards, stored with the connection.
    pub boards: Option<Vec<haven_providers::pinterest::PinterestBoard>>,
}

/// Upserts the row with what a connection stored and returns it.
pub async fn set_connected(
    conn: &mut PgConnection,
    c: &Connected<'_>,
    status: Status,
) -> Result<IntegrationRow> {
    decoded(
        query_rows!(
            "INSERT INTO integrations.integrations (id, tenant_id, provider, status, metadata, scopes, shop_domain, \
               token_expires_at, last_refreshed_at, connected_at, connected_by) \
             VALUES ($1, $2, $3, $9, $4, $5, $6, $7, CASE WHEN $7::timestamptz IS NULL THEN NULL ELSE now() END, now(), $8) \
             ON CONFLICT (tenant_id, provider) DO UPDATE SET status = EXCLUDED.status, \
               metadata = EXCLUDED.metadata, scopes = EXCLUDED.scopes, shop_domain = EXCLUDED.shop_domain, \
               token_expires_at = EXCLUDED.token_expires_at, last_refreshed_at = EXCLUDED.last_refreshed_at, connected_at = now(), \
               connected_by = EXCLUDED.connected_by, last_error = NULL, last_error_at = NULL, updated_at = now() \
             RETURNING ",
            "",
            Uuid::now_v7(),
            c.tenant,
            c.provider.as_str(),
            Json(&c.metadata) as _,
            &c.scopes,
            c.shop_domain.as_deref(),
            c.token_expires_at,
            c.user,
            status.as_str()
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Records a failure the user must see, with the status the machine decided.
pub async fn set_failed(
    conn: &mut PgConnection,
    tenant: Uuid,
    provider: Provider,
    status: Status,
    message: &str,
) -> Result<IntegrationRow> {
    decoded(
        query_rows!(
            "INSERT INTO integrations.integrations AS i (id, tenant_id, provider, status, last_error, last_error_at) \
             VALUES ($1, $2, $3, $4, $5, now()) \
             ON CONFLICT (tenant_id, provider) DO UPDATE SET \
               status = $4, last_error = $5, last_error_at = now(), updated_at = now() \
             RETURNING ",
            "",
            Uuid::now_v7(),
            tenant,
            provider.as_str(),
            status.as_str(),
            message
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Marks the row disconnected (the machine's `status`) after its credentials were removed.
pub async fn set_disconnected(
    conn: &mut PgConnection,
    id: Uuid,
    status: Status,
    reason: Option<&str>,
) -> Result<IntegrationRow> {
    decoded(
        query_rows!(
            "UPDATE integrations.integrations SET status = $3, disconnected_at = now(), token_expires_at = NULL, \
               last_error = COALESCE($2, last_error), last_error_at = CASE WHEN $2 IS NULL THEN last_error_at ELSE now() END, \
               updated_at = now() WHERE id = $1 RETURNING ",
            "",
            id,
            reason,
            status.as_str()
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Records renewed tokens' expiry.
pub async fn set_refreshed(
    conn: &mut PgConnection,
    id: Uuid,
    status: Status,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IntegrationRow> {
    decoded(
        query_rows!(
            "UPDATE integrations.integrations SET status = $3, token_expires_at = $2, last_refreshed_at = now(), last_error = NULL, \
               last_error_at = NULL, updated_at = now() WHERE id = $1 RETURNING ",
            "",
            id,
            expires_at,
            status.as_str()
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Notes a failure without changing status (e.g. a refresh that will be retried).
pub async fn note_error(conn: &mut PgConnection, id: Uuid, message: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.integrations SET last_error = $2, last_error_at = now(), updated_at = now() WHERE id = $1",
        id,
        message
    )
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
    sqlx::query!(
        "INSERT INTO integrations.credentials (integration_id, tenant_id, provider, kind, key_id, nonce, ciphertext, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (integration_id, kind) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, \
           ciphertext = EXCLUDED.ciphertext, expires_at = EXCLUDED.expires_at, updated_at = now()",
        row.id,
        row.tenant_id,
        row.provider.as_str(),
        kind.as_str(),
        &sealed.key_id,
        &sealed.nonce,
        &sealed.ciphertext,
        expires_at
    )
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
    Ok(sqlx::query_as!(
        Sealed,
        "SELECT key_id, nonce, ciphertext FROM integrations.credentials WHERE integration_id = $1 AND kind = $2",
        integration,
        kind.as_str()
    )
    .fetch_optional(conn)
    .await?)
}

/// Deletes credentials of an integration, all kinds or all but `keep`.
pub async fn delete_credentials(
    conn: &mut PgConnection,
    integration: Uuid,
    keep: Option<CredentialKind>,
) -> Result<()> {
    sqlx::query!(
        "DELETE FROM integrations.credentials WHERE integration_id = $1 AND kind IS DISTINCT FROM $2",
        integration,
        keep.map(CredentialKind::as_str)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored OAuth state.
#[derive(Debug)]
pub struct OAuthState {
    pub tenant_id: Uuid,
    pub user_id: String,
    pub provider: Provider,
    pub shop_domain: Option<String>,
    pub redirect_uri: String,
    pub verifier_key_id: Option<String>,
    pub verifier_nonce: Option<Vec<u8>>,
    pub verifier_ciphertext: Option<Vec<u8>>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
    /// Hash of the browser binding cookie, set when the start link was opened.
    pub browser_hash: Option<Vec<u8>>,
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
    pub ticket_hash: &'a [u8],
    pub ticket_expires_at: DateTime<Utc>,
}

pub async fn insert_state(pool: &PgPool, s: &NewState<'_>) -> Result<()> {
    // States a day past expiry are useless even for telling "expired" from "unknown".
    sqlx::query!(
        "DELETE FROM integrations.oauth_states WHERE expires_at < now() - interval '1 day'"
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "INSERT INTO integrations.oauth_states (state_hash, tenant_id, user_id, provider, shop_domain, redirect_uri, \
           verifier_key_id, verifier_nonce, verifier_ciphertext, expires_at, ticket_hash, ticket_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        s.hash,
        s.tenant,
        s.user,
        s.provider.as_str(),
        s.shop_domain,
        s.redirect_uri,
        s.verifier.map(|v| v.key_id.as_str()),
        s.verifier.map(|v| v.nonce.as_slice()),
        s.verifier.map(|v| v.ciphertext.as_slice()),
        s.expires_at,
        s.ticket_hash,
        s.ticket_expires_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks a state by hash for checking and consuming.
pub async fn lock_state(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<OAuthState>> {
    Ok(sqlx::query_as!(
        OAuthState,
        r#"SELECT tenant_id, user_id, provider AS "provider!: StoredProvider", shop_domain, redirect_uri,
             verifier_key_id, verifier_nonce, verifier_ciphertext, expires_at, consumed_at, browser_hash
           FROM integrations.oauth_states WHERE state_hash = $1 FOR UPDATE"#,
        hash
    )
    .fetch_optional(conn)
    .await?)
}

/// A state found by its start ticket, with what deciding on the ticket needs.
#[derive(Debug)]
pub struct TicketedState {
    pub state_hash: Vec<u8>,
    pub state: OAuthState,
    pub ticket_expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
}

/// Locks a state by its start ticket's hash.
pub async fn lock_ticket(
    conn: &mut PgConnection,
    ticket_hash: &[u8],
) -> Result<Option<TicketedState>> {
    let row = sqlx::query!(
        r#"SELECT state_hash, tenant_id, user_id, provider AS "provider!: StoredProvider", shop_domain, redirect_uri,
             verifier_key_id, verifier_nonce, verifier_ciphertext, expires_at, consumed_at, browser_hash,
             ticket_expires_at, started_at
           FROM integrations.oauth_states WHERE ticket_hash = $1 FOR UPDATE"#,
        ticket_hash
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| TicketedState {
        state_hash: r.state_hash,
        state: OAuthState {
            tenant_id: r.tenant_id,
            user_id: r.user_id,
            provider: r.provider.0,
            shop_domain: r.shop_domain,
            redirect_uri: r.redirect_uri,
            verifier_key_id: r.verifier_key_id,
            verifier_nonce: r.verifier_nonce,
            verifier_ciphertext: r.verifier_ciphertext,
            expires_at: r.expires_at,
            consumed_at: r.consumed_at,
            browser_hash: r.browser_hash,
        },
        ticket_expires_at: r.ticket_expires_at,
        started_at: r.started_at,
    }))
}

/// Uses up a start ticket: the state gets the hash of the state that will travel to the
/// provider and of the browser binding.
pub async fn start_state(
    conn: &mut PgConnection,
    old_state_hash: &[u8],
    new_state_hash: &[u8],
    browser_hash: &[u8],
) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.oauth_states SET state_hash = $2, browser_hash = $3, started_at = now() \
         WHERE state_hash = $1",
        old_state_hash,
        new_state_hash,
        browser_hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a state used and drops its verifier.
pub async fn consume_state(conn: &mut PgConnection, hash: &[u8]) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.oauth_states SET consumed_at = now(), verifier_key_id = NULL, verifier_nonce = NULL, \
           verifier_ciphertext = NULL WHERE state_hash = $1",
        hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One Shopify webhook subscription.
#[derive(Clone, Debug)]
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
    Ok(sqlx::query_as!(
        WebhookRow,
        r#"INSERT INTO integrations.shopify_webhooks AS w (id, integration_id, tenant_id, topic, address, status)
         SELECT gen_random_uuid(), $1, $2, t, $3, 'pending' FROM unnest($4::text[]) AS t
         ON CONFLICT (integration_id, topic) DO UPDATE SET address = EXCLUDED.address,
           status = CASE WHEN w.status = 'registered' AND w.address = EXCLUDED.address
                         THEN 'registered' ELSE 'pending' END, updated_at = now()
         RETURNING id AS "id!", topic AS "topic!", shopify_webhook_id AS "shopify_webhook_id?",
           status AS "status!: WebhookStatus""#,
        row.id,
        row.tenant_id,
        address,
        &topics
    )
    .fetch_all(conn)
    .await?)
}

pub async fn webhooks(
    conn: &mut PgConnection,
    integration: Uuid,
    status: Option<WebhookStatus>,
) -> Result<Vec<WebhookRow>> {
    Ok(sqlx::query_as!(
        WebhookRow,
        r#"SELECT id, topic, shopify_webhook_id, status AS "status: WebhookStatus"
         FROM integrations.shopify_webhooks
         WHERE integration_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY topic"#,
        integration,
        status.map(WebhookStatus::as_str)
    )
    .fetch_all(conn)
    .await?)
}

pub async fn set_webhook_registered(
    conn: &mut PgConnection,
    integration: Uuid,
    topic: &str,
    shopify_id: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.shopify_webhooks SET status = 'registered', shopify_webhook_id = $3, last_error = NULL, \
           updated_at = now() WHERE integration_id = $1 AND topic = $2",
        integration,
        topic,
        shopify_id
    )
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
    sqlx::query!(
        "UPDATE integrations.shopify_webhooks SET last_error = $3, updated_at = now() WHERE integration_id = $1 AND topic = $2",
        integration,
        topic,
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every subscription of an integration as waiting for deregistration.
pub async fn mark_webhooks_deregistering(conn: &mut PgConnection, integration: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE integrations.shopify_webhooks SET status = 'deregistering', updated_at = now() WHERE integration_id = $1",
        integration
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_webhook_row(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query!(
        "DELETE FROM integrations.shopify_webhooks WHERE id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_webhooks(conn: &mut PgConnection, integration: Uuid) -> Result<()> {
    sqlx::query!(
        "DELETE FROM integrations.shopify_webhooks WHERE integration_id = $1",
        integration
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stored wizard steps of a tenant: (step, status, updated_at).
pub async fn setup_steps(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Vec<(String, StepStatus, DateTime<Utc>)>> {
    Ok(sqlx::query!(
        r#"SELECT step, status AS "status: StepStatus", updated_at
         FROM integrations.setup_progress WHERE tenant_id = $1"#,
        tenant
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.step, r.status, r.updated_at))
    .collect())
}

pub async fn set_step(
    conn: &mut PgConnection,
    tenant: Uuid,
    step: &str,
    status: StepStatus,
    user: &str,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO integrations.setup_progress (tenant_id, step, status, updated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, step) DO UPDATE SET status = EXCLUDED.status, \
           updated_by = EXCLUDED.updated_by, updated_at = now()",
        tenant,
        step,
        status.as_str(),
        user
    )
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
    let rows = sqlx::query!(
        r#"SELECT integration_id, tenant_id, provider AS "provider: StoredProvider", kind, key_id, nonce, ciphertext
         FROM integrations.credentials
         WHERE key_id <> $1 ORDER BY integration_id, kind LIMIT $2 FOR UPDATE SKIP LOCKED"#,
        active,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredSecret {
            integration_id: r.integration_id,
            tenant_id: r.tenant_id,
            provider: r.provider.into(),
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
    let done = sqlx::query!(
        "UPDATE integrations.credentials SET key_id = $3, nonce = $4, ciphertext = $5, updated_at = now() \
         WHERE integration_id = $1 AND kind = $2 AND nonce = $6",
        old.integration_id,
        &old.kind,
        &new.key_id,
        &new.nonce,
        &new.ciphertext,
        &old.sealed.nonce
    )
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
