//! The service's behaviour, independent of gRPC: connect, disconnect, tokens, the wizard.

use std::time::Duration;

use chrono::{DateTime, Utc};
use haven_auth::Principal;
use haven_bus::Bus;
use haven_proto::events::v1::IntegrationEventKind;
use haven_providers::dynamic_mockups::DynamicMockupsClient;
use haven_providers::klaviyo::KlaviyoClient;
use haven_providers::pinterest::{PinterestClient, PinterestConfig};
use haven_providers::resend::ResendClient;
use haven_providers::shopify::{ShopifyClient, ShopifyConfig};
use haven_providers::sky_pilot::SkyPilotClient;
use haven_providers::{HttpSettings, ProviderError, TokenSet};
use haven_vault::{CredentialKind, KeyRing, Owner, Secret};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events;
use crate::machine::{self, Event};
use crate::metadata::{
    DynamicMockupsMetadata, KlaviyoMetadata, Metadata, ResendMetadata, SkyPilotMetadata,
};
use crate::registry::{self, Auth, Provider, ProviderInfo};
use crate::store::activity::Action;
use crate::store::{self, IntegrationRow, Status, StepStatus};

/// Clients for every provider, built once from configuration.
pub struct Providers {
    pub shopify: ShopifyClient,
    pub shopify_secret: SecretString,
    pub pinterest: PinterestClient,
    pub klaviyo: KlaviyoClient,
    pub dynamic_mockups: DynamicMockupsClient,
    pub resend: ResendClient,
    pub sky_pilot: SkyPilotClient,
}

impl Providers {
    pub fn new(config: &Config) -> Result<Self, ProviderError> {
        let p = &config.providers;
        let http = HttpSettings {
            timeout: p.provider_timeout,
            ..HttpSettings::default()
        };
        Ok(Providers {
            shopify: ShopifyClient::new(
                ShopifyConfig {
                    client_id: p.shopify_client_id.clone(),
                    client_secret: p.shopify_client_secret.clone(),
                    scopes: p.shopify_scopes.clone(),
                    api_version: p.shopify_api_version.clone(),
                    url_template: p.shopify_url_template.clone(),
                },
                &http,
            )?,
            shopify_secret: p.shopify_client_secret.clone(),
            pinterest: PinterestClient::new(
                PinterestConfig {
                    client_id: p.pinterest_client_id.clone(),
                    client_secret: p.pinterest_client_secret.clone(),
                    scopes: p.pinterest_scopes.clone(),
                    api_base: p.pinterest_api_url.clone(),
                    authorize_url: p.pinterest_authorize_url.clone(),
                },
                &http,
            )?,
            klaviyo: KlaviyoClient::new(&p.klaviyo_url, &http)?,
            dynamic_mockups: DynamicMockupsClient::new(&p.dynamic_mockups_url, &http)?,
            resend: ResendClient::new(&p.resend_url, &http)?,
            sky_pilot: SkyPilotClient::new(&p.sky_pilot_url, &http)?,
        })
    }
}

/// Everything a request handler needs.
pub struct Core {
    pub pool: PgPool,
    pub bus: Bus,
    pub ring: KeyRing,
    pub providers: Providers,
    pub public_url: String,
    pub refresh_lead: Duration,
}

/// A usable credential for another service.
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub shop_domain: Option<String>,
}

/// Resolves a provider key from a request, naming it when unknown.
pub fn parse_provider(key: &str) -> Result<Provider> {
    Provider::parse(key).map_err(|e| Error::invalid(format!("provider: {e}")))
}

/// The error for an OAuth provider where an API key was expected, or the reverse.
pub fn wrong_auth(info: &ProviderInfo) -> Error {
    match info.auth {
        Auth::OAuth => Error::invalid(format!(
            "provider: {} connects with OAuth; use BeginOAuth",
            info.name
        )),
        Auth::ApiKey => Error::invalid(format!(
            "provider: {} connects with an API key; use ConnectApiKey",
            info.name
        )),
    }
}

impl Core {
    pub fn owner<'a>(&self, row: &'a IntegrationRow, kind: CredentialKind) -> Owner<'a> {
        Owner {
            tenant_id: row.tenant_id,
            provider: row.provider.as_str(),
            kind,
        }
    }

    /// The OAuth callback URL registered with the provider.
    pub fn callback_url(&self, provider: Provider) -> String {
        self.provider_url(provider, "callback")
    }

    /// The gateway's one-time start link (before its `?ticket=`).
    pub fn start_url(&self, provider: Provider) -> String {
        self.provider_url(provider, "start")
    }

    /// `<public gateway URL>/api/integrations/<provider>/<action>`.
    fn provider_url(&self, provider: Provider, action: &str) -> String {
        format!(
            "{}/api/integrations/{provider}/{action}",
            self.public_url.trim_end_matches('/')
        )
    }

    /// Where Shopify delivers webhooks.
    pub fn webhook_address(&self) -> String {
        format!(
            "{}/api/webhooks/shopify",
            self.public_url.trim_end_matches('/')
        )
    }

    pub async fn list(&self, tenant: Uuid) -> Result<Vec<IntegrationRow>> {
        let mut rows = store::list(&self.pool, tenant).await?;
        rows.sort_by_key(|r| registry::info(r.provider).setup_order);
        Ok(rows)
    }

    /// A page of connected Shopify shops (see `store::connected_shops`).
    pub async fn connected_shops(
        &self,
        tenant: Option<Uuid>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<store::ShopRow>> {
        store::connected_shops(&self.pool, tenant, after, limit).await
    }

    pub async fn get(&self, tenant: Uuid, provider: Provider) -> Result<IntegrationRow> {
        let info = registry::info(provider);
        let mut conn = self.pool.acquire().await?;
        store::get(&mut conn, tenant, provider)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{} has never been connected", info.name)))
    }

    /// Stores tokens and account details of a finished connection, completes the wizard step
    /// and announces it; one transaction, so a half-stored connection cannot exist.
    pub async fn store_connection(
        &self,
        connected: store::Connected<'_>,
        secrets: &[(CredentialKind, &SecretString, Option<DateTime<Utc>>)],
    ) -> Result<IntegrationRow> {
        let mut tx = self.pool.begin().await?;
        let current = store::lock_or_create(&mut tx, connected.tenant, connected.provider).await?;
        let status = machine::next(current.status, Event::Connected);
        let row = store::set_connected(&mut tx, &connected, status).await?;
        store::delete_credentials(&mut tx, row.id, None).await?;
        for (kind, secret, expires) in secrets {
            let sealed = self.ring.seal(*secret, self.owner(&row, *kind));
            store::put_credential(&mut tx, &row, *kind, &sealed, *expires).await?;
        }
        if let Some(boards) = &connected.boards {
            store::boards::replace(&mut tx, row.tenant_id, row.id, boards).await?;
        }
        if let Some(step) = registry::step_for_provider(row.provider) {
            store::set_step(
                &mut tx,
                row.tenant_id,
                step.key,
                StepStatus::Completed,
                connected.user,
            )
            .await?;
        }
        store::activity::record(
            &mut tx,
            row.tenant_id,
            Some(connected.user),
            Action::Connected,
            row.provider,
            account_details(&connected.metadata),
        )
        .await?;
        tx.commit().await?;
        events::publish(
            &self.bus,
            &row,
            IntegrationEventKind::Connected,
            Some(connected.user),
            None,
        )
        .await;
        tracing::info!(tenant = %row.tenant_id, provider = %row.provider, "integration connected");
        Ok(row)
    }

    /// Records a failed connection attempt (status error) and announces it.
    pub async fn fail_connection(
        &self,
        tenant: Uuid,
        provider: Provider,
        user: Option<&str>,
        message: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let current = store::lock_or_create(&mut tx, tenant, provider).await?;
        let status = machine::next(current.status, Event::ConnectFailed);
        let row = store::set_failed(&mut tx, tenant, provider, status, message).await?;
        store::activity::record(
            &mut tx,
            tenant,
            user,
            Action::ConnectFailed,
            provider,
            json!({ "error": message }),
        )
        .await?;
        tx.commit().await?;
        events::publish(
            &self.bus,
            &row,
            IntegrationEventKind::Error,
            user,
            Some(message),
        )
        .await;
        Ok(())
    }

    /// Validates an API key with its provider, then stores it.
    pub async fn connect_api_key(
        &self,
        principal: &Principal,
        provider: Provider,
        key: &str,
    ) -> Result<IntegrationRow> {
        let info = registry::info(provider);
        if info.auth != Auth::ApiKey {
            return Err(wrong_auth(&info));
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::invalid("api_key: must not be empty"));
        }
        if key.len() > 1024 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "api_key: must be one line of at most 1024 characters without spaces",
            ));
        }
        let key = SecretString::from(key);
        let p = &self.providers;
        let metadata = match provider {
            Provider::Klaviyo => p.klaviyo.validate(&key).await.map(|a| {
                Metadata::Klaviyo(KlaviyoMetadata {
                    list_count: a.list_count,
                    default_list_id: None,
                })
            }),
            Provider::DynamicMockups => p.dynamic_mockups.validate(&key).await.map(|a| {
                Metadata::DynamicMockups(DynamicMockupsMetadata {
                    credits_remaining: a.credits_remaining,
                    plan: a.plan,
                })
            }),
            Provider::Resend => p.resend.validate(&key).await.map(|a| {
                Metadata::Resend(ResendMetadata {
                    domain_verified: a.domain_verified,
                    send_only: a.send_only,
                    from_domain: a.from_domain,
                })
            }),
            Provider::SkyPilot => p
                .sky_pilot
                .validate(&key)
                .await
                .map(|()| Metadata::SkyPilot(SkyPilotMetadata { connected: true })),
            Provider::Shopify | Provider::Pinterest => return Err(wrong_auth(&info)),
        };
        let metadata = match metadata {
            Ok(m) => m,
            Err(e) if e.is_retryable() => {
                let message = format!("{} could not be reached to check the key: {e}", info.name);
                let mut conn = self.pool.acquire().await?;
                if let Some(row) = store::get(&mut conn, principal.tenant_id, provider).await? {
                    store::note_error(&mut conn, row.id, &message).await?;
                }
                return Err(Error::provider(
                    format!(
                        "{} could not be reached to check the key; try again",
                        info.name
                    ),
                    e,
                ));
            }
            Err(e) => {
                let message = format!(
                    "{} rejected the API key ({e}); check that it was copied whole and is active",
                    info.name
                );
                self.fail_connection(
                    principal.tenant_id,
                    provider,
                    Some(&principal.user_id),
                    &message,
                )
                .await?;
                return Err(Error::InvalidArgument(format!("api_key: {message}")));
            }
        };
        self.store_connection(
            store::Connected {
                tenant: principal.tenant_id,
                provider,
                user: &principal.user_id,
                metadata,
                scopes: Vec::new(),
                shop_domain: None,
                token_expires_at: None,
                boards: None,
            },
            &[(CredentialKind::ApiKey, &key, None)],
        )
        .await
    }

    /// A valid credential for `tenant`'s `provider`, refreshed first when it expires within
    /// `min_valid`.
    pub async fn access_token(
        &self,
        tenant: Uuid,
        provider: Provider,
        min_valid: Duration,
    ) -> Result<AccessToken> {
        let info = registry::info(provider);
        let mut row = self.get(tenant, provider).await?;
        match row.status {
            Status::Connected => {}
            Status::Expired => {
                return Err(Error::FailedPrecondition(format!(
                    "{}'s authorization expired; the user must reconnect it",
                    info.name
                )));
            }
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "{} is not connected (status {})",
                    info.name, other
                )));
            }
        }
        let kind = match info.auth {
            Auth::ApiKey => CredentialKind::ApiKey,
            Auth::OAuth => CredentialKind::AccessToken,
        };
        if info.auth == Auth::OAuth && expires_within(row.token_expires_at, min_valid) {
            row = self
                .refresh(row.id, min_valid, true)
                .await?
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!("{} is no longer connected", info.name))
                })?;
        }
        let mut conn = self.pool.acquire().await?;
        let sealed = store::credential(&mut conn, row.id, kind)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "{} has no stored credential; reconnect it",
                    info.name
                ))
            })?;
        let token = self.ring.open(&sealed, self.owner(&row, kind))?;
        Ok(AccessToken {
            token,
            expires_at: row.token_expires_at,
            scopes: row.scopes.clone(),
            shop_domain: row.shop_domain.clone(),
        })
    }

    /// Renews an integration's tokens unless another refresher already did. The row lock makes
    /// this single-flight across replicas: a second caller waits, then finds the new expiry
    /// and returns without calling the provider. The rotated refresh token is saved in the
    /// same transaction as the access token. With `wait = false` a row being refreshed
    /// elsewhere is skipped (`Ok(None)`).
    pub async fn refresh(
        &self,
        id: Uuid,
        min_valid: Duration,
        wait: bool,
    ) -> Result<Option<IntegrationRow>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = store::lock(&mut tx, id, !wait).await? else {
            return Ok(None);
        };
        if row.status != Status::Connected {
            return Err(Error::FailedPrecondition(format!(
                "{} is not connected (status {})",
                row.provider, row.status
            )));
        }
        if !expires_within(row.token_expires_at, min_valid) {
            return Ok(Some(row));
        }
        let sealed = store::credential(&mut tx, row.id, CredentialKind::RefreshToken)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "{} has no refresh token; reconnect it",
                    row.provider
                ))
            })?;
        let refresh_token = self
            .ring
            .open(&sealed, self.owner(&row, CredentialKind::RefreshToken))?;
        let result = match row.provider {
            Provider::Shopify => {
                let shop = row.shop_domain.clone().unwrap_or_default();
                self.providers.shopify.refresh(&shop, &refresh_token).await
            }
            Provider::Pinterest => self.providers.pinterest.refresh(&refresh_token).await,
            Provider::Klaviyo
            | Provider::DynamicMockups
            | Provider::Resend
            | Provider::SkyPilot => {
                return Err(Error::FailedPrecondition(format!(
                    "{} connects with an API key, which is never refreshed",
                    row.provider
                )));
            }
        };
        match result {
            Ok(tokens) => {
                self.save_tokens(&mut tx, &row, &tokens).await?;
                let status = machine::next(row.status, Event::RefreshSucceeded);
                let row = store::set_refreshed(&mut tx, row.id, status, tokens.expires_at).await?;
                tx.commit().await?;
                tracing::info!(tenant = %row.tenant_id, provider = %row.provider, "token refreshed");
                events::publish(&self.bus, &row, IntegrationEventKind::Refreshed, None, None).await;
                if row.provider == Provider::Pinterest {
                    self.resync_boards(&row, &tokens.access_token).await;
                }
                Ok(Some(row))
            }
            Err(e) if e.is_grant_refused() => {
                let message = format!(
                    "{} refused to renew the authorization ({e}); reconnect it",
                    row.provider
                );
                let row = store::set_failed(
                    &mut tx,
                    row.tenant_id,
                    row.provider,
                    machine::next(row.status, Event::RefreshRefused),
                    &message,
                )
                .await?;
                store::activity::record(
                    &mut tx,
                    row.tenant_id,
                    None,
                    Action::RefreshFailed,
                    row.provider,
                    json!({ "error": message }),
                )
                .await?;
                tx.commit().await?;
                events::publish(
                    &self.bus,
                    &row,
                    IntegrationEventKind::Expired,
                    None,
                    Some(&message),
                )
                .await;
                Err(Error::FailedPrecondition(message))
            }
            Err(e) => {
                store::note_error(
                    &mut tx,
                    row.id,
                    &format!("token refresh failed, will retry: {e}"),
                )
                .await?;
                tx.commit().await?;
                Err(Error::provider(
                    format!("{} token refresh failed", row.provider),
                    e,
                ))
            }
        }
    }

    /// Syncs a Pinterest connection's boards again after a refresh, at most once per
    /// [`BOARDS_RESYNC`]. A failure is logged and left for the next refresh: the refresh
    /// itself succeeded.
    async fn resync_boards(&self, row: &IntegrationRow, token: &SecretString) {
        let result: Result<()> = async {
            let mut tx = self.pool.begin().await?;
            let due = store::boards::synced_at(&mut tx, row.id)
                .await?
                .is_none_or(|at| Utc::now() - at >= BOARDS_RESYNC);
            if !due {
                return Ok(());
            }
            let boards = self
                .providers
                .pinterest
                .boards(token)
                .await
                .map_err(|e| Error::provider("Pinterest boards could not be read", e))?;
            store::boards::replace(&mut tx, row.tenant_id, row.id, &boards).await?;
            tx.commit().await?;
            tracing::info!(tenant = %row.tenant_id, boards = boards.len(), "Pinterest boards synced");
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(tenant = %row.tenant_id, error = %e, "Pinterest boards not synced; the next refresh tries again");
        }
    }

    /// The tenant's synced Pinterest boards and when they were synced.
    pub async fn pinterest_boards(
        &self,
        tenant: Uuid,
    ) -> Result<(Vec<store::boards::BoardRow>, Option<DateTime<Utc>>)> {
        store::boards::list(&self.pool, tenant).await
    }

    /// The tenant's latest `limit` activity entries.
    pub async fn activity(&self, tenant: Uuid, limit: i64) -> Result<Vec<store::activity::Entry>> {
        store::activity::list(&self.pool, tenant, limit).await
    }

    /// Puts connections whose OAuth attempt was abandoned back in the status they had, and
    /// records it.
    pub async fn revert_abandoned(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let rows = store::revert_abandoned(&mut tx, 100).await?;
        for row in &rows {
            store::activity::record(
                &mut tx,
                row.tenant_id,
                None,
                Action::Abandoned,
                row.provider,
                json!({ "status": row.status.as_str() }),
            )
            .await?;
        }
        tx.commit().await?;
        for row in &rows {
            tracing::info!(tenant = %row.tenant_id, provider = %row.provider, status = %row.status, "an abandoned OAuth attempt expired; status restored");
        }
        Ok(())
    }

    /// Seals and stores renewed tokens; a response without a refresh token keeps the old one.
    async fn save_tokens(
        &self,
        conn: &mut sqlx::PgConnection,
        row: &IntegrationRow,
        tokens: &TokenSet,
    ) -> Result<()> {
        let sealed = self.ring.seal(
            &tokens.access_token,
            self.owner(row, CredentialKind::AccessToken),
        );
        store::put_credential(
            conn,
            row,
            CredentialKind::AccessToken,
            &sealed,
            tokens.expires_at,
        )
        .await?;
        if let Some(refresh) = &tokens.refresh_token {
            let sealed = self
                .ring
                .seal(refresh, self.owner(row, CredentialKind::RefreshToken));
            store::put_credential(
                conn,
                row,
                CredentialKind::RefreshToken,
                &sealed,
                tokens.refresh_token_expires_at,
            )
            .await?;
        }
        Ok(())
    }

    /// The wizard's steps and the other steps for a tenant, unset ones pending.
    pub async fn setup_progress(&self, tenant: Uuid) -> Result<(Vec<StepState>, Vec<StepState>)> {
        let stored = store::setup_steps(&self.pool, tenant).await?;
        let state =
            |step: &'static registry::Step| match stored.iter().find(|(k, _, _)| k == step.key) {
                Some((_, status, at)) => (step, *status, Some(*at)),
                None => (step, StepStatus::Pending, None),
            };
        Ok((
            registry::STEPS.iter().map(state).collect(),
            registry::OTHER_STEPS.iter().map(state).collect(),
        ))
    }

    pub async fn update_step(
        &self,
        principal: &Principal,
        step: &str,
        status: StepStatus,
    ) -> Result<()> {
        let Some(step) = registry::step(step) else {
            return Err(Error::invalid(format!(
                "step: unknown step `{step}`; expected one of {}",
                registry::step_keys().join(", ")
            )));
        };
        let mut conn = self.pool.acquire().await?;
        store::set_step(
            &mut conn,
            principal.tenant_id,
            step.key,
            status,
            &principal.user_id,
        )
        .await
    }
}

/// Boards are synced again after a token refresh at most this often.
const BOARDS_RESYNC: chrono::Duration = chrono::Duration::hours(1);

/// What the activity row of a connection tells about the account (no secret is in metadata).
fn account_details(metadata: &Metadata) -> serde_json::Value {
    match metadata {
        Metadata::Shopify(m) => json!({ "shopDomain": m.shop_domain, "accountName": m.shop_name }),
        Metadata::Pinterest(m) => {
            json!({ "accountName": m.account_name, "boardCount": m.board_count })
        }
        Metadata::Klaviyo(_)
        | Metadata::DynamicMockups(_)
        | Metadata::Resend(_)
        | Metadata::SkyPilot(_) => json!({}),
    }
}

/// A step, its status and when that last changed.
pub type StepState = (&'static registry::Step, StepStatus, Option<DateTime<Utc>>);

/// Whether a token expiring at `at` has less than `min_valid` left (no expiry: never).
pub fn expires_within(at: Option<DateTime<Utc>>, min_valid: Duration) -> bool {
    let Some(at) = at else { return false };
    let min_valid = chrono::Duration::from_std(min_valid).unwrap_or(chrono::Duration::MAX);
    at - Utc::now() < min_valid
}
