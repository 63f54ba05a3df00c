//! Email delivery of a scheduled export through the tenant's Resend integration: the file
//! attached when it is within `HAVEN_EMAIL_ATTACHMENT_LIMIT`, else a signed link to it —
//! never an empty email; an export with no rows still sends, saying so. The Resend call
//! carries an `Idempotency-Key` derived from the run, so a retried send is not sent twice.
//! A failed send becomes the retry-queue operation `exports.deliver_scheduled` `{run}`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use haven_bus::Bus;
use haven_objects::{MAX_LINK_TTL, ObjectKey, ObjectStorage};
use haven_proto::events::v1::RetryDispatch;
use haven_proto::retry::v1::EnqueueRequest;
use haven_providers::resend::{Attachment, Email, ResendClient};
use haven_retry_client::HandlerError;
use sqlx::PgPool;
use uuid::Uuid;

use super::model::Schedule;
use super::store::{self, RunStatus};
use crate::integrations::Integrations;

/// The retry queue's operation for a scheduled export whose email did not go out.
pub const DELIVER_OPERATION: &str = "exports.deliver_scheduled";

#[derive(Clone)]
pub struct Mail {
    pub pool: PgPool,
    pub bus: Bus,
    pub objects: ObjectStorage,
    pub integrations: Integrations,
    pub resend: ResendClient,
    pub from: String,
    pub attachment_limit: u64,
}

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

impl Mail {
    /// Sends the run's email; a failure is recorded on the run and handed to the retry queue.
    pub async fn deliver(
        &self,
        run: Uuid,
        schedule: &Schedule,
        slot: DateTime<Utc>,
        key: &ObjectKey,
        rows: i64,
    ) {
        match self.send(run, schedule, slot, key, rows).await {
            Ok(()) => self.record(run, RunStatus::Delivered, None).await,
            Err(e) => {
                tracing::warn!(%run, schedule = %schedule.id, error = %e, "scheduled export email not sent; handed to the retry queue");
                self.record(run, RunStatus::Pending, Some(&e.to_string()))
                    .await;
                let request = EnqueueRequest {
                    operation_type: DELIVER_OPERATION.into(),
                    payload_json: serde_json::json!({ "run": run }).to_string(),
                    max_attempts: 0,
                    idempotency_key: format!("deliver:{run}"),
                    reference_id: run.to_string(),
                    reference_table: "exports.scheduled_export_runs".into(),
                    last_error: e.to_string(),
                    first_run: None,
                };
                match haven_retry_client::enqueue(
                    &self.bus,
                    schedule.tenant_id,
                    Some(&schedule.user_id),
                    request,
                    &format!("deliver:{run}"),
                )
                .await
                {
                    Ok(_) => {
                        if let Err(err) = store::release(&self.pool, run).await {
                            tracing::warn!(%run, error = %err, "cannot release a run handed to the retry queue; its lease lapses");
                        }
                    }
                    Err(err) => {
                        tracing::error!(%run, error = %err, "cannot hand the email to the retry queue; the run stays leased and another attempt takes it over when the lease lapses")
                    }
                }
            }
        }
    }

    async fn record(&self, run: Uuid, status: RunStatus, error: Option<&str>) {
        if let Err(e) = store::finish_run(&self.pool, run, status, None, None, error).await {
            tracing::error!(%run, error = %e, "cannot record a scheduled export's delivery");
        }
    }

    async fn send(
        &self,
        run: Uuid,
        schedule: &Schedule,
        slot: DateTime<Utc>,
        key: &ObjectKey,
        rows: i64,
    ) -> Result<(), SendError> {
        let s = &schedule.settings;
        let to = s
            .delivery_email
            .clone()
            .ok_or_else(|| SendError::Permanent("the schedule has no delivery email".into()))?;
        let api_key = self
            .integrations
            .resend_key(schedule.tenant_id)
            .await
            .map_err(|e| SendError::Retryable(e.to_string()))?
            .ok_or_else(|| {
                SendError::Retryable("the tenant has no Resend integration; connect Resend".into())
            })?;
        let size = self
            .objects
            .size(key)
            .await
            .map_err(|e| SendError::Retryable(e.to_string()))?
            .ok_or_else(|| SendError::Permanent(format!("the stored file {key} is gone")))?;
        let label = crate::catalog::find(&s.export_type)
            .map(|t| t.label)
            .unwrap_or(&s.export_type);
        let day = slot
            .with_timezone(&s.rule().map(|r| r.zone).unwrap_or(chrono_tz::UTC))
            .format("%Y-%m-%d");
        let subject = format!("{label} export, {day}");
        let count = if rows == 0 {
            "No rows matched this period; the file holds only its header.".to_owned()
        } else {
            format!("{rows} rows.")
        };
        let (text, attachments) = if size <= self.attachment_limit {
            let download = self
                .objects
                .get(key)
                .await
                .map_err(|e| SendError::Retryable(e.to_string()))?;
            let chunks: Vec<bytes::Bytes> = download
                .body
                .try_collect()
                .await
                .map_err(|e| SendError::Retryable(e.to_string()))?;
            let attachment = Attachment {
                filename: key.file_name().to_owned(),
                content_type: download.content_type,
                content: chunks.concat(),
            };
            (
                format!("Your scheduled {label} export for {day} is attached. {count}"),
                vec![attachment],
            )
        } else {
            let ttl: Duration = MAX_LINK_TTL;
            let link = self
                .objects
                .link(key, ttl)
                .await
                .map_err(|e| SendError::Retryable(e.to_string()))?;
            (
                format!(
                    "Your scheduled {label} export for {day} is {size} bytes, too large to attach. \
                     Download it within {} days: {link}\n{count}",
                    ttl.as_secs() / 86_400
                ),
                Vec::new(),
            )
        };
        let email = Email {
            from: self.from.clone(),
            to: vec![to],
            subject,
            text,
            html: None,
            attachments,
        };
        self.resend
            .send(&api_key, &email, &format!("scheduled-export-run-{run}"))
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.is_retryable() {
                    SendError::Retryable(e.to_string())
                } else {
                    SendError::Permanent(e.to_string())
                }
            })
    }

    /// The retry queue's attempt at a run's email.
    pub async fn retry(&self, dispatch: RetryDispatch) -> Result<(), HandlerError> {
        let run: Uuid = serde_json::from_str::<serde_json::Value>(&dispatch.payload_json)
            .ok()
            .and_then(|v| {
                v.get("run")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.parse().ok())
            })
            .ok_or_else(|| HandlerError::permanent("payload: `run` must be a run id"))?;
        let (row, schedule, rows) = store::for_delivery(&self.pool, run)
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()))?
            .ok_or_else(|| {
                HandlerError::permanent(format!("run {run} (or its schedule) is gone"))
            })?;
        if row.status == RunStatus::Delivered {
            return Ok(());
        }
        let key = row
            .object_key
            .as_deref()
            .and_then(|k| ObjectKey::parse(k).ok())
            .ok_or_else(|| HandlerError::permanent(format!("run {run} has no stored file")))?;
        match self
            .send(run, &schedule, row.scheduled_for, &key, rows)
            .await
        {
            Ok(()) => {
                self.record(run, RunStatus::Delivered, None).await;
                tracing::info!(%run, "scheduled export email sent on retry");
                Ok(())
            }
            Err(SendError::Retryable(m)) => {
                self.record(run, RunStatus::Pending, Some(&m)).await;
                Err(HandlerError::retryable(m))
            }
            Err(SendError::Permanent(m)) => {
                self.record(run, RunStatus::Failed, Some(&m)).await;
                Err(HandlerError::permanent(m))
            }
        }
    }
}
