//! The schedule RPCs: protobuf in, checked settings and the tenant's rows, protobuf out.

use chrono::Utc;
use haven_auth::Principal;
use haven_proto::export::v1 as pb;
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use super::model::{Settings, merge};
use super::store;
use crate::error::ExportError;

fn id_of(field: &'static str, id: &str) -> Result<Uuid, ExportError> {
    id.parse()
        .map_err(|_| ExportError::invalid(field, "must be a schedule id (UUID)"))
}

fn not_found(id: Uuid) -> Status {
    ExportError::NotFound(format!("no scheduled export {id}")).into()
}

pub async fn create(
    pool: &PgPool,
    principal: &Principal,
    r: &pb::CreateScheduledExportRequest,
) -> Result<pb::ScheduledExport, Status> {
    let input = r
        .scheduled_export
        .as_ref()
        .ok_or_else(|| ExportError::invalid("scheduled_export", "is required"))?;
    let settings = Settings::from_proto(input)?;
    let next = settings.rule()?.next_after(Utc::now());
    let schedule = store::insert(
        pool,
        principal.tenant_id,
        &principal.user_id,
        &settings,
        next,
    )
    .await
    .map_err(ExportError::from)?;
    tracing::info!(tenant = %principal.tenant_id, schedule = %schedule.id, next = %next, "scheduled export created");
    Ok(schedule.to_proto())
}

pub async fn get(
    pool: &PgPool,
    principal: &Principal,
    r: &pb::GetScheduledExportRequest,
) -> Result<pb::ScheduledExport, Status> {
    let id = id_of("id", &r.id)?;
    store::get(pool, principal.tenant_id, id)
        .await
        .map_err(ExportError::from)?
        .map(|s| s.to_proto())
        .ok_or_else(|| not_found(id))
}

pub async fn list(
    pool: &PgPool,
    principal: &Principal,
    r: &pb::ListScheduledExportsRequest,
) -> Result<pb::ListScheduledExportsResponse, Status> {
    let limit = match r.page_size {
        None => 50,
        Some(n @ 1..=1000) => i64::from(n),
        Some(_) => return Err(ExportError::invalid("page_size", "must be 1 to 1000").into()),
    };
    let after = match r.page_token.as_str() {
        "" => None,
        t => Some(id_of("page_token", t)?),
    };
    let rows = store::list(pool, principal.tenant_id, after, limit)
        .await
        .map_err(ExportError::from)?;
    let next_page_token = if rows.len() as i64 == limit {
        rows.last().map(|s| s.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListScheduledExportsResponse {
        scheduled_exports: rows.iter().map(|s| s.to_proto()).collect(),
        next_page_token,
    })
}

pub async fn update(
    pool: &PgPool,
    principal: &Principal,
    r: &pb::UpdateScheduledExportRequest,
) -> Result<pb::ScheduledExport, Status> {
    let change = r
        .scheduled_export
        .as_ref()
        .ok_or_else(|| ExportError::invalid("scheduled_export", "is required"))?;
    let id = id_of("scheduled_export.id", &change.id)?;
    let current = store::get(pool, principal.tenant_id, id)
        .await
        .map_err(ExportError::from)?
        .ok_or_else(|| not_found(id))?;
    let mask = r
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    let merged = merge(current.to_proto(), change, &mask)?;
    let settings = Settings::from_proto(&merged)?;
    // Moved timing, or a resumed schedule, counts from now: no catch-up for slots it was
    // paused across.
    let resumed = settings.enabled && !current.settings.enabled;
    let next = if resumed || settings.timing_differs(&current.settings) {
        settings.rule()?.next_after(Utc::now())
    } else {
        current.next_run_at
    };
    let updated = store::update(pool, principal.tenant_id, id, &settings, next)
        .await
        .map_err(ExportError::from)?
        .ok_or_else(|| not_found(id))?;
    tracing::info!(tenant = %principal.tenant_id, schedule = %id, fields = ?mask, "scheduled export updated");
    Ok(updated.to_proto())
}

pub async fn delete(
    pool: &PgPool,
    principal: &Principal,
    r: &pb::DeleteScheduledExportRequest,
) -> Result<(), Status> {
    let id = id_of("id", &r.id)?;
    if store::delete(pool, principal.tenant_id, id)
        .await
        .map_err(ExportError::from)?
    {
        tracing::info!(tenant = %principal.tenant_id, schedule = %id, "scheduled export deleted");
        Ok(())
    } else {
        Err(not_found(id))
    }
}

pub async fn runs(
    pool: &PgPool,
    objects: &haven_objects::ObjectStorage,
    link_ttl: std::time::Duration,
    principal: &Principal,
    r: &pb::ListScheduledExportRunsRequest,
) -> Result<pb::ListScheduledExportRunsResponse, Status> {
    let id = id_of("schedule_id", &r.schedule_id)?;
    let limit = match r.limit {
        0 => 20,
        n @ 1..=100 => i64::from(n),
        _ => return Err(ExportError::invalid("limit", "must be 1 to 100").into()),
    };
    // Another tenant's schedule is NotFound, as an unknown one.
    store::get(pool, principal.tenant_id, id)
        .await
        .map_err(ExportError::from)?
        .ok_or_else(|| not_found(id))?;
    let rows = store::runs(pool, principal.tenant_id, id, limit)
        .await
        .map_err(ExportError::from)?;
    let ts = haven_proto::time::timestamp;
    let expires = Utc::now() + chrono::Duration::from_std(link_ttl).unwrap_or_default();
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        let link = match row
            .object_key
            .as_deref()
            .map(haven_objects::ObjectKey::parse)
        {
            Some(Ok(key)) => Some(
                objects
                    .link(&key, link_ttl)
                    .await
                    .map_err(|e| ExportError::Storage(e.to_string()))?,
            ),
            Some(Err(_)) | None => None,
        };
        runs.push(pb::ScheduledExportRun {
            id: row.id.to_string(),
            schedule_id: row.schedule_id.to_string(),
            scheduled_for: Some(ts(row.scheduled_for)),
            status: row.status.as_str().to_owned(),
            late: row.late,
            export_id: row.export_id.map(|e| e.to_string()).unwrap_or_default(),
            link_expires_at: link.as_ref().map(|_| ts(expires)),
            download_url: link.unwrap_or_default(),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error.unwrap_or_default(),
            created_at: Some(ts(row.created_at)),
            updated_at: Some(ts(row.updated_at)),
        });
    }
    Ok(pb::ListScheduledExportRunsResponse { runs })
}
