//! Shopify webhook subscriptions, disconnecting, and the work handed to the retry queue.
//!
//! Failures that can heal (a provider 5xx or 429) become retry-queue operations of their own
//! and are finished when the retry service dispatches them:
//! - `integrations.register_webhook` `{integration_id, topic}`
//! - `integrations.deregister_webhooks` `{integration_id}`
//! - `integrations.refresh_token` `{integration_id}`

use std::time::Duration;

use futures::StreamExt;
use haven_auth::Principal;
use haven_proto::events::v1::RetryDispatch;
use haven_proto::events::v1::{IntegrationEventKind, ShopifyWebhook};
use haven_proto::retry::v1::EnqueueRequest;
use haven_providers::{ProviderError, shopify};
use haven_retry_client::HandlerError;
use haven_shopify::ShopDomain;
use haven_vault::CredentialKind;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::events;
use crate::machine::{self, Event};
use crate::registry::Provider;
use crate::store::activity::Action;
use crate::store::{self, IntegrationRow, Status, WebhookStatus};

pub const OP_REGISTER_WEBHOOK: &str = "integrations.register_webhook";
pub const OP_DEREGISTER_WEBHOOKS: &str = "integrations.deregister_webhooks";
pub const OP_REFRESH_TOKEN: &str = "integrations.refresh_token";

/// Every topic a Shopify connection subscribes to: the web app's eight plus the compliance three.
pub fn topics() -> Vec<&'static str> {
    shopify::WEBHOOK_TOPICS
        .iter()
        .chain(shopify::COMPLIANCE_TOPICS.iter())
        .copied()
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterWebhook {
    pub integration_id: Uuid,
    pub topic: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IntegrationOp {
    pub integration_id: Uuid,
}

impl Core {
    /// Hands an operation on `integration` to the retry queue; `key` de-duplicates while one
    /// is pending.
    pub async fn hand_over(
        &self,
        tenant: Uuid,
        integration: Uuid,
        operation: &str,
        payload: &impl Serialize,
        key: String,
        error: &ProviderError,
    ) -> Result<()> {
        let payload_json =
            serde_json::to_string(payload).map_err(|e| Error::invalid(format!("payload: {e}")))?;
        let request = EnqueueRequest {
            operation_type: operation.to_owned(),
            payload_json,
            max_attempts: 0,
            idempotency_key: key.clone(),
            reference_table: "integrations.integrations".into(),
            reference_id: integration.to_string(),
            last_error: error.to_string(),
            first_run: error.retry_after().map(|d| {
                haven_proto::retry::v1::enqueue_request::FirstRun::DelayMs(
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                )
            }),
        };
        haven_retry_client::enqueue(
            &self.bus,
            tenant,
            None,
            request,
            &format!("{key}:{}", Uuid::now_v7()),
        )
        .await?;
        tracing::warn!(%operation, error = %error, "provider call failed; handed to the retry queue");
        Ok(())
    }

    /// Subscribes the shop to every topic; topics that fail retryably go to the retry queue.
    pub async fn register_webhooks(
        &self,
        row: &IntegrationRow,
        token: &SecretString,
    ) -> Result<()> {
        let address = self.webhook_address();
        let topics = topics();
        let pending = {
            let mut conn = self.pool.acquire().await?;
            store::reset_webhooks(&mut conn, row, &topics, &address).await?
        };
        let shop = row.shop_domain.clone().unwrap_or_default();
        let results: Vec<_> = futures::stream::iter(
            pending
                .into_iter()
                .filter(|w| w.status == WebhookStatus::Pending),
        )
        .map(|w| {
            let shop = shop.clone();
            let address = address.clone();
            async move {
                let r = self
                    .providers
                    .shopify
                    .create_webhook(&shop, token, &w.topic, &address)
                    .await;
                (w.topic, r)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
        for (topic, result) in results {
            self.record_registration(row, &topic, result).await?;
        }
        Ok(())
    }

    async fn record_registration(
        &self,
        row: &IntegrationRow,
        topic: &str,
        result: Result<String, ProviderError>,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        match result {
            Ok(id) => store::set_webhook_registered(&mut conn, row.id, topic, &id).await,
            Err(e) => {
                store::set_webhook_error(&mut conn, row.id, topic, &e.to_string()).await?;
                if e.is_retryable() {
                    self.hand_over(
                        row.tenant_id,
                        row.id,
                        OP_REGISTER_WEBHOOK,
                        &RegisterWebhook {
                            integration_id: row.id,
                            topic: topic.to_owned(),
                        },
                        format!("register_webhook:{}:{topic}", row.id),
                        &e,
                    )
                    .await
                } else {
                    tracing::error!(tenant = %row.tenant_id, %topic, error = %e, "Shopify refused a webhook subscription");
                    Ok(())
                }
            }
        }
    }

    /// Deletes the credentials, deregisters the webhooks and marks the integration
    /// disconnected. Webhooks Shopify cannot drop now are deregistered through the retry
    /// queue, which keeps only the access token (unusable: status is disconnected) until then.
    pub async fn disconnect(
        &self,
        principal: &Principal,
        provider: Provider,
    ) -> Result<IntegrationRow> {
        let row = self.get(principal.tenant_id, provider).await?;
        let mut tx = self.pool.begin().await?;
        let webhooks = store::webhooks(&mut tx, row.id, None).await?;
        let keep = (!webhooks.is_empty()).then_some(CredentialKind::AccessToken);
        store::delete_credentials(&mut tx, row.id, keep).await?;
        store::mark_webhooks_deregistering(&mut tx, row.id).await?;
        let status = machine::next(row.status, Event::Disconnect);
        let row = store::set_disconnected(&mut tx, row.id, status, None).await?;
        store::activity::record(
            &mut tx,
            row.tenant_id,
            Some(&principal.user_id),
            Action::Disconnected,
            row.provider,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        events::publish(
            &self.bus,
            &row,
            IntegrationEventKind::Disconnected,
            Some(&principal.user_id),
            None,
        )
        .await;
        if !webhooks.is_empty()
            && let Err(e) = self.deregister_webhooks(row.id).await
        {
            match e {
                Error::Provider { source, .. } if source.is_retryable() => {
                    self.hand_over(
                        row.tenant_id,
                        row.id,
                        OP_DEREGISTER_WEBHOOKS,
                        &IntegrationOp {
                            integration_id: row.id,
                        },
                        format!("deregister_webhooks:{}", row.id),
                        &source,
                    )
                    .await?;
                }
                other => {
                    // The shop refused; nothing will heal it, so the token goes now.
                    tracing::error!(error = %other, "webhooks could not be deregistered; dropping them");
                    self.forget_webhooks(row.id).await?;
                }
            }
        }
        tracing::info!(tenant = %row.tenant_id, provider = %row.provider, "integration disconnected");
        Ok(row)
    }

    /// Deregisters the webhooks left by a disconnect, then deletes the last credential.
    pub async fn deregister_webhooks(&self, id: Uuid) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) = store::get_by_id(&mut conn, id).await? else {
            return Ok(());
        };
        if row.status == Status::Connected {
            // Reconnected meanwhile: the new connection owns the subscriptions.
            return Ok(());
        }
        let left = store::webhooks(&mut conn, id, Some(WebhookStatus::Deregistering)).await?;
        let Some(sealed) = store::credential(&mut conn, id, CredentialKind::AccessToken).await?
        else {
            store::delete_webhooks(&mut conn, id).await?;
            return Ok(());
        };
        let token = self
            .ring
            .open(&sealed, self.owner(&row, CredentialKind::AccessToken))?;
        let shop = row.shop_domain.clone().unwrap_or_default();
        for w in left {
            if let Some(shopify_id) = &w.shopify_webhook_id {
                match self
                    .providers
                    .shopify
                    .delete_webhook(&shop, &token, shopify_id)
                    .await
                {
                    Ok(()) => {}
                    // The token no longer works: the shop dropped the app and its webhooks.
                    Err(ProviderError::Unauthorized { .. }) => {}
                    Err(e) => {
                        return Err(Error::provider("Shopify webhook deregistration failed", e));
                    }
                }
            }
            store::delete_webhook_row(&mut conn, w.id).await?;
        }
        self.forget_webhooks(id).await
    }

    async fn forget_webhooks(&self, id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::delete_webhooks(&mut tx, id).await?;
        let row = store::get_by_id(&mut tx, id).await?;
        if row.is_some_and(|r| r.status != Status::Connected) {
            store::delete_credentials(&mut tx, id, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `app/uninstalled`: the shop removed the app, its token and its webhooks with it.
    pub async fn app_uninstalled(&self, shop: &ShopDomain) -> Result<()> {
        for row in store::by_shop(&self.pool, shop.as_str()).await? {
            let status = machine::next(row.status, Event::AppUninstalled);
            if status == row.status {
                continue; // already disconnected: nothing left to remove
            }
            let mut tx = self.pool.begin().await?;
            store::delete_credentials(&mut tx, row.id, None).await?;
            store::delete_webhooks(&mut tx, row.id).await?;
            let reason =
                format!("The app was uninstalled from {shop}; install it again to reconnect");
            let row = store::set_disconnected(&mut tx, row.id, status, Some(&reason)).await?;
            store::activity::record(
                &mut tx,
                row.tenant_id,
                None,
                Action::AppUninstalled,
                row.provider,
                serde_json::json!({ "shopDomain": shop.as_str() }),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(tenant = %row.tenant_id, %shop, "Shopify app uninstalled; integration disconnected");
            events::publish(
                &self.bus,
                &row,
                IntegrationEventKind::Disconnected,
                None,
                Some(&reason),
            )
            .await;
        }
        Ok(())
    }

    /// Retry-queue handler of `integrations.register_webhook`.
    pub async fn handle_register(&self, dispatch: RetryDispatch) -> Result<(), HandlerError> {
        let op: RegisterWebhook = parse(&dispatch)?;
        let row = self.dispatch_row(&dispatch, op.integration_id).await?;
        let Some(row) = row.filter(|r| r.status == Status::Connected) else {
            return Ok(()); // disconnected meanwhile: nothing left to register
        };
        let token = self
            .access_token(row.tenant_id, Provider::Shopify, Duration::from_secs(60))
            .await
            .map_err(handler_error)?;
        let result = self
            .providers
            .shopify
            .create_webhook(
                row.shop_domain.as_deref().unwrap_or_default(),
                &token.token,
                &op.topic,
                &self.webhook_address(),
            )
            .await;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| handler_error(e.into()))?;
        match result {
            Ok(id) => store::set_webhook_registered(&mut conn, row.id, &op.topic, &id)
                .await
                .map_err(handler_error),
            Err(e) => {
                store::set_webhook_error(&mut conn, row.id, &op.topic, &e.to_string())
                    .await
                    .map_err(handler_error)?;
                Err(handler_error(Error::provider(
                    "Shopify webhook registration failed",
                    e,
                )))
            }
        }
    }

    /// Retry-queue handler of `integrations.deregister_webhooks`.
    pub async fn handle_deregister(&self, dispatch: RetryDispatch) -> Result<(), HandlerError> {
        let op: IntegrationOp = parse(&dispatch)?;
        self.dispatch_row(&dispatch, op.integration_id).await?;
        let result = self.deregister_webhooks(op.integration_id).await;
        if result.is_err() && dispatch.attempt >= dispatch.max_attempts && dispatch.max_attempts > 0
        {
            // Last attempt: the credential must not outlive the user's disconnect.
            self.forget_webhooks(op.integration_id)
                .await
                .map_err(handler_error)?;
        }
        result.map_err(handler_error)
    }

    /// Retry-queue handler of `integrations.refresh_token`.
    pub async fn handle_refresh(&self, dispatch: RetryDispatch) -> Result<(), HandlerError> {
        let op: IntegrationOp = parse(&dispatch)?;
        let row = self.dispatch_row(&dispatch, op.integration_id).await?;
        if row.is_none_or(|r| r.status != Status::Connected) {
            return Ok(());
        }
        self.refresh(op.integration_id, self.refresh_lead, true)
            .await
            .map(|_| ())
            .map_err(handler_error)
    }

    /// The integration a dispatch names, checked against the dispatch's tenant.
    async fn dispatch_row(
        &self,
        dispatch: &RetryDispatch,
        id: Uuid,
    ) -> Result<Option<IntegrationRow>, HandlerError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| handler_error(e.into()))?;
        let row = store::get_by_id(&mut conn, id)
            .await
            .map_err(handler_error)?;
        match row {
            Some(r) if r.tenant_id.to_string() != dispatch.tenant_id => Err(
                HandlerError::permanent("integration belongs to another tenant than the dispatch"),
            ),
            other => Ok(other),
        }
    }

    /// Runs the background refresher until shutdown: renews tokens that expire within the
    /// lead time. Rows another replica is refreshing are skipped.
    pub async fn run_refresher(
        &self,
        interval: Duration,
        token: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.refresh_due().await {
                tracing::warn!(error = %e, "refresher pass failed");
            }
            if let Err(e) = self.revert_abandoned().await {
                tracing::warn!(error = %e, "cannot restore connections of abandoned OAuth attempts");
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One refresher pass.
    pub async fn refresh_due(&self) -> Result<()> {
        let lead =
            chrono::Duration::from_std(self.refresh_lead).unwrap_or(chrono::Duration::minutes(10));
        let due = store::expiring(&self.pool, chrono::Utc::now() + lead, 100).await?;
        for id in due {
            match self.refresh(id, self.refresh_lead, false).await {
                Ok(_) => {}
                Err(Error::Provider { source, .. }) if source.is_retryable() => {
                    let mut conn = self.pool.acquire().await?;
                    if let Some(row) = store::get_by_id(&mut conn, id).await? {
                        self.hand_over(
                            row.tenant_id,
                            id,
                            OP_REFRESH_TOKEN,
                            &IntegrationOp { integration_id: id },
                            format!("refresh_token:{id}"),
                            &source,
                        )
                        .await?;
                    }
                }
                Err(e) => tracing::warn!(integration = %id, error = %e, "token refresh failed"),
            }
        }
        Ok(())
    }

    /// Handles a verified webhook the gateway published. It acts on signed content only: the
    /// shop is read from the body Shopify signed, never from the unsigned header beside it.
    pub async fn handle_shopify_webhook(&self, webhook: ShopifyWebhook) -> Result<()> {
        if webhook.topic == "app/uninstalled" {
            let signed = haven_shopify::signed_shop(&webhook.topic, &webhook.body)
                .map_err(|e| Error::invalid(format!("body: {e}")))?;
            let Some(shop) = signed else {
                return Err(Error::invalid("body: names no shop"));
            };
            self.app_uninstalled(&shop).await?;
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(dispatch: &RetryDispatch) -> Result<T, HandlerError> {
    serde_json::from_str(&dispatch.payload_json)
        .map_err(|e| HandlerError::permanent(format!("payload_json: {e}")))
}

/// Whether another attempt can help.
fn handler_error(e: Error) -> HandlerError {
    match &e {
        Error::Provider { source, .. } if source.is_retryable() => HandlerError::Retryable {
            message: e.to_string(),
            retry_after: source.retry_after(),
        },
        Error::Db(_) | Error::Bus(_) => HandlerError::retryable(e.to_string()),
        Error::Provider { .. }
        | Error::InvalidArgument(_)
        | Error::NotFound(_)
        | Error::PermissionDenied(_)
        | Error::FailedPrecondition(_)
        | Error::Vault(_) => HandlerError::permanent(e.to_string()),
    }
}
