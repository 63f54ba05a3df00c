//! The gRPC API of the export service. Every call is scoped to the caller's tenant.

use crate::engine::Delivery;
use chrono::{DateTime, Utc};
use haven_auth::principal_of;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_server::ExportService;
use haven_server::pagination;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::catalog;
use crate::engine::Engine;
use crate::history::{Status as ExportStatus, StoredFormat};
use crate::limiter::Permit;
use crate::plan::{self, Limits};

pub struct Api {
    pub engine: Engine,
    pub limits: Limits,
    pub tenants: crate::limiter::TenantLimiter,
}

const DEFAULT_PAGE_SIZE: i32 = 50;

impl Api {
    /// What both streams do first: check the request for the caller's tenant, then take one
    /// of the tenant's export slots (in that order, so a bad request never holds a slot).
    #[allow(clippy::result_large_err)]
    fn start(
        &self,
        request: &Request<pb::ExportRequest>,
        rows: bool,
    ) -> Result<(plan::Plan, Permit), Status> {
        let principal = principal_of(request)?;
        let plan = plan::resolve(
            request.get_ref(),
            principal.tenant_id,
            &principal.user_id,
            &self.limits,
            Utc::now(),
            rows,
        )
        .map_err(invalid)?;
        let permit = self.tenants.acquire(principal.tenant_id)?;
        Ok((plan, permit))
    }
}

fn invalid(e: plan::Rejected) -> Status {
    match e {
        plan::Rejected::Invalid(e) => haven_server::invalid_argument(e.field, e.message),
        plan::Rejected::Unimplemented(message) => Status::unimplemented(message),
    }
}

#[tonic::async_trait]
impl ExportService for Api {
    async fn list_export_types(
        &self,
        _request: Request<pb::ListExportTypesRequest>,
    ) -> Result<Response<pb::ListExportTypesResponse>, Status> {
        let export_types = catalog::TYPES
            .iter()
            .map(|t| t.to_proto(self.limits.max_records(t)))
            .collect();
        Ok(Response::new(pb::ListExportTypesResponse { export_types }))
    }

    type StreamRowsStream = Delivery<pb::StreamRowsResponse>;

    async fn stream_rows(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::StreamRowsStream>, Status> {
        let (plan, permit) = self.start(&request, true)?;
        Ok(Response::new(self.engine.rows(plan, permit)))
    }

    type StreamExportStream = Delivery<pb::StreamExportResponse>;

    async fn stream_export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::StreamExportStream>, Status> {
        let (plan, permit) = self.start(&request, false)?;
        Ok(Response::new(self.engine.export(plan, permit)))
    }

    async fn list_export_history(
        &self,
        request: Request<pb::ListExportHistoryRequest>,
    ) -> Result<Response<pb::ListExportHistoryResponse>, Status> {
        let principal = principal_of(&request)?;
        let req = request.into_inner();
        let page_size = pagination::page_size(req.page_size, DEFAULT_PAGE_SIZE)?;
        if !req.export_type.is_empty() && catalog::find(&req.export_type).is_none() {
            return Err(haven_server::invalid_argument(
                "export_type",
                format!("unknown type `{}`", req.export_type),
            ));
        }
        let cursor = pagination::decode(&req.page_token)?;
        let rows = sqlx::query_as!(
            HistoryRow,
            r#"SELECT id, tenant_id, user_id, export_type, format AS "format: StoredFormat", fields,
                    range_start, range_end, record_count, bytes, duration_ms,
                    status AS "status: ExportStatus", error, truncated, created_at
             FROM exports.export_history
             WHERE tenant_id = $1 AND ($2 = '' OR export_type = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC LIMIT $5"#,
            principal.tenant_id,
            req.export_type,
            cursor.map(|c| c.0),
            cursor.map(|c| c.1),
            page_size + 1,
        )
        .fetch_all(&self.engine.pool)
        .await
        .map_err(history_error)?;
        let more = rows.len() > usize::try_from(page_size).unwrap_or(0);
        let rows = &rows[..rows.len().min(usize::try_from(page_size).unwrap_or(0))];
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => pagination::encode(last.created_at, last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListExportHistoryResponse {
            entries: rows.iter().map(HistoryRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_export_history_entry(
        &self,
        request: Request<pb::GetExportHistoryEntryRequest>,
    ) -> Result<Response<pb::ExportHistoryEntry>, Status> {
        let principal = principal_of(&request)?;
        let raw = request.into_inner().id;
        let id = Uuid::parse_str(&raw)
            .map_err(|_| haven_server::invalid_argument("id", format!("`{raw}` is not a UUID")))?;
        let row = sqlx::query_as!(
            HistoryRow,
            r#"SELECT id, tenant_id, user_id, export_type, format AS "format: StoredFormat", fields,
                    range_start, range_end, record_count, bytes, duration_ms,
                    status AS "status: ExportStatus", error, truncated, created_at
             FROM exports.export_history
             WHERE tenant_id = $1 AND id = $2"#,
            principal.tenant_id,
            id,
        )
        .fetch_optional(&self.engine.pool)
        .await
        .map_err(history_error)?;
        // Another tenant's export answers exactly as an unknown one.
        let row = row.ok_or_else(|| Status::not_found(format!("no export `{id}`")))?;
        Ok(Response::new(row.to_proto()))
    }

    async fn create_scheduled_export(
        &self,
        _request: Request<pb::CreateScheduledExportRequest>,
    ) -> Result<Response<pb::ScheduledExport>, Status> {
        Err(Status::unimplemented(
            "scheduled exports are not available yet",
        ))
    }

    async fn list_scheduled_exports(
        &self,
        _request: Request<pb::ListScheduledExportsRequest>,
    ) -> Result<Response<pb::ListScheduledExportsResponse>, Status> {
        Err(Status::unimplemented(
            "scheduled exports are not available yet",
        ))
    }

    async fn delete_scheduled_export(
        &self,
        _request: Request<pb::DeleteScheduledExportRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "scheduled exports are not available yet",
        ))
    }
}

fn history_error(e: sqlx::Error) -> Status {
    match e {
        // A row this version cannot read (e.g. a status written by a newer one).
        sqlx::Error::ColumnDecode { .. } => {
            tracing::error!(error = %e, "export history holds a value this version cannot read");
            Status::internal(format!(
                "export history holds a value this version cannot read: {e}"
            ))
        }
        e => {
            tracing::error!(error = %e, "history query failed");
            Status::unavailable("export history is unavailable; try again")
        }
    }
}

struct HistoryRow {
    id: Uuid,
    tenant_id: Uuid,
    user_id: String,
    export_type: String,
    format: StoredFormat,
    fields: Vec<String>,
    range_start: DateTime<Utc>,
    range_end: DateTime<Utc>,
    record_count: i64,
    bytes: i64,
    duration_ms: i64,
    status: ExportStatus,
    error: Option<String>,
    truncated: bool,
    created_at: DateTime<Utc>,
}

impl HistoryRow {
    fn to_proto(&self) -> pb::ExportHistoryEntry {
        crate::history::entry(
            self.id,
            self.tenant_id,
            &self.user_id,
            &self.export_type,
            self.format.to_proto(),
            self.fields.clone(),
            self.range_start,
            self.range_end,
            u64::try_from(self.record_count).unwrap_or(0),
            u64::try_from(self.bytes).unwrap_or(0),
            self.duration_ms,
            self.status,
            self.error.clone().unwrap_or_default(),
            self.truncated,
            self.created_at,
        )
    }
}
