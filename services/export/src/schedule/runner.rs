//! The scheduler loop of each replica: claim the due slots ([`super::claim_due`]) and run each
//! through the export engine (history row and events as any export), streaming the file into
//! the object store at `scheduled-exports/{tenant}/{schedule}/{slot}.{ext}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use haven_objects::{ObjectKey, ObjectStorage};
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::stream_export_response::Part;
use tokio_util::sync::CancellationToken;

use super::model::{Delivery, RangeType, ScheduleFormat};
use super::slots::{Preset, range};
use super::store::{self, Claimed, RunStatus};
use crate::engine::{Engine, FileJob};
use crate::error::ExportError;
use crate::limiter::TenantLimiter;
use crate::plan::{self, Limits};

/// Slots claimed per round.
const CLAIM_BATCH: i64 = 20;
/// A run that cannot get an export slot tries again this often, this many times.
const BUSY_WAIT: Duration = Duration::from_secs(5);
const BUSY_TRIES: u32 = 60;

#[derive(Clone)]
pub struct Runner {
    pub engine: Engine,
    pub limits: Limits,
    pub tenants: TenantLimiter,
    pub objects: ObjectStorage,
    pub mail: super::mail::Mail,
    pub tick: Duration,
    /// How long a claimed run stays ours without a renewal (renewed every third of it).
    pub lease: Duration,
    pub clock: super::Clock,
    pub token: CancellationToken,
}

/// Renews a run's lease until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The object a slot's file is stored at.
pub fn object_key(c: &Claimed) -> Result<ObjectKey, ExportError> {
    let ext = match c.schedule.settings.format {
        ScheduleFormat::Csv => "csv",
        ScheduleFormat::Json => "json",
        ScheduleFormat::Ndjson => "ndjson",
    };
    ObjectKey::join(&[
        "scheduled-exports",
        &c.schedule.tenant_id.to_string(),
        &c.schedule.id.to_string(),
        &format!("{}.{ext}", c.slot.format("%Y%m%dT%H%M%SZ")),
    ])
    .map_err(|e| ExportError::invalid("key", e.to_string()))
}

impl Runner {
    /// Claims and runs due slots until shutdown.
    pub async fn background(self) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pool = &self.engine.pool;
            let claimed = super::claim_due(pool, self.clock.now(), CLAIM_BATCH, self.lease).await;
            let lapsed = store::reclaim_lapsed(pool, self.lease, CLAIM_BATCH).await;
            for batch in [claimed, lapsed] {
                match batch {
                    Ok(runs) => {
                        for c in runs {
                            let this = self.clone();
                            tokio::spawn(async move { this.run(c).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim scheduled exports; trying again")
                    }
                }
            }
        }
    }

    fn heartbeat(&self, run: uuid::Uuid) -> Heartbeat {
        let (pool, lease) = (self.engine.pool.clone(), self.lease);
        Heartbeat(tokio::spawn(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.tick().await; // the claim just set it
            loop {
                every.tick().await;
                match store::renew(&pool, run, lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(%run, error = %e, "cannot renew a scheduled export's lease")
                    }
                }
            }
        }))
    }

    /// Runs one claimed slot (or sends one whose file is stored) and records how it ended on
    /// its run row, renewing the run's lease meanwhile.
    async fn run(&self, c: Claimed) {
        let _beat = self.heartbeat(c.run_id);
        let outcome = match &c.stored {
            Some(stored) => ObjectKey::parse(&stored.object_key)
                .map(|key| (key, stored.export_id, stored.rows))
                .map_err(|e| ExportError::Storage(format!("the stored key: {e}"))),
            None => self.export(&c).await,
        };
        let pool = &self.engine.pool;
        let result = match &outcome {
            Ok((key, export_id, rows)) => {
                tracing::info!(schedule = %c.schedule.id, slot = %c.slot, late = c.late, %key, rows, "scheduled export stored");
                match c.schedule.settings.delivery {
                    Delivery::Download => {
                        store::finish_run(
                            pool,
                            c.run_id,
                            RunStatus::Delivered,
                            Some(key.as_str()),
                            Some(*export_id),
                            None,
                        )
                        .await
                    }
                    Delivery::Email => {
                        let kept = store::keep_file(pool, c.run_id, key.as_str(), *export_id).await;
                        if kept.is_ok() {
                            self.mail
                                .deliver(c.run_id, &c.schedule, c.slot, key, *rows)
                                .await;
                        }
                        kept
                    }
                }
            }
            Err(e) => {
                tracing::warn!(schedule = %c.schedule.id, slot = %c.slot, error = %e, "scheduled export failed");
                store::finish_run(
                    pool,
                    c.run_id,
                    RunStatus::Failed,
                    None,
                    None,
                    Some(&e.to_string()),
                )
                .await
            }
        };
        if let Err(e) = result {
            tracing::error!(run = %c.run_id, error = %e, "cannot record a scheduled export's run");
        }
    }

    /// The slot's export, streamed into the store; its key, history id and row count.
    async fn export(&self, c: &Claimed) -> Result<(ObjectKey, uuid::Uuid, i64), ExportError> {
        let s = &c.schedule.settings;
        let rule = s.rule()?;
        let preset = match s.range {
            RangeType::LastWeek => Preset::LastWeek,
            RangeType::LastMonth => Preset::LastMonth,
            RangeType::AllTime => Preset::AllTime,
        };
        let (start, end) = range(preset, c.slot, rule.zone);
        let ts = haven_proto::time::timestamp;
        let request = pb::ExportRequest {
            export_type: s.export_type.clone(),
            format: match s.format {
                ScheduleFormat::Csv => pb::ExportFormat::Csv,
                ScheduleFormat::Json => pb::ExportFormat::Json,
                ScheduleFormat::Ndjson => pb::ExportFormat::Ndjson,
            } as i32,
            fields: s.fields.clone(),
            // All time: as far back as one export reaches (the type's row limit still applies).
            start_time: Some(ts(start.unwrap_or_else(|| end - plan::max_range()))),
            end_time: Some(ts(end)),
            ..Default::default()
        };
        let plan = plan::resolve(
            &request,
            c.schedule.tenant_id,
            &c.schedule.user_id,
            &self.limits,
            self.clock.now(),
            false,
        )?;
        let export_id = plan.id;
        let permit = self.permit(c.schedule.tenant_id).await?;
        let summary: Arc<Mutex<Option<pb::ExportSummary>>> = Arc::default();
        let seen = summary.clone();
        let chunks = self
            .engine
            .export(FileJob::export(&plan), permit)
            .filter_map(move |message| {
                let out = match message {
                    Ok(m) => match m.part {
                        Some(Part::Chunk(bytes)) => Some(Ok(bytes)),
                        Some(Part::Summary(s)) => {
                            if let Ok(mut slot) = seen.lock() {
                                *slot = Some(s);
                            }
                            None
                        }
                        Some(Part::Start(_)) | None => None,
                    },
                    Err(status) => Some(Err(status.message().to_owned())),
                };
                futures::future::ready(out)
            });
        let key = object_key(c)?;
        self.objects
            .put_stream(&key, chunks)
            .await
            .map_err(|e| ExportError::Storage(e.to_string()))?;
        let finished = summary.lock().ok().and_then(|s| *s);
        let Some(finished) = finished else {
            return Err(ExportError::Storage(
                "the export ended without its summary".into(),
            ));
        };
        Ok((
            key,
            export_id,
            i64::try_from(finished.record_count).unwrap_or(i64::MAX),
        ))
    }

    /// An export slot of the tenant's, waiting while the tenant or the service is busy.
    async fn permit(&self, tenant: uuid::Uuid) -> Result<crate::limiter::Permit, ExportError> {
        let mut tries = 0;
        loop {
            match self.tenants.acquire(tenant) {
                Ok(permit) => return Ok(permit),
                Err(ExportError::Busy(m)) if tries < BUSY_TRIES => {
                    tries += 1;
                    tracing::debug!(%tenant, reason = %m, "scheduled export waits for an export slot");
                    tokio::time::sleep(BUSY_WAIT).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
