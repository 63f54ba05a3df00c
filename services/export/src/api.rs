//! The gRPC API of the export service. Every call is scoped to the caller's tenant, except
//! the billing export, which is for platform admins across tenants.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use haven_auth::principal_of;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_server::{ExportService, ExportServiceServer};
use haven_server::pagination;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::brand::{self, BrandReport};
use crate::engine::{Body, Delivery, Engine, FileJob};
use crate::error::ExportError;
use crate::limiter::Permit;
use crate::plan::{self, Limits};
use crate::rows::RowsFrame;
use crate::{billing, catalog, history};

pub struct Api {
    pub engine: Engine,
    pub limits: Limits,
    pub tenants: crate::limiter::TenantLimiter,
    pub statistics: crate::statistics::Statistics,
}

const DEFAULT_PAGE_SIZE: i32 = 50;

impl Api {
    /// What both streams do first: check the request for the caller's tenant, then take one
    /// of the tenant's export slots (in that order, so a bad request never holds a slot).
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
        )?;
        let permit = self.tenants.acquire(principal.tenant_id)?;
        Ok((plan, permit))
    }

    /// StreamRows as its frames go on the wire.
    fn open_rows(
        &self,
        request: &Request<pb::ExportRequest>,
    ) -> Result<Delivery<RowsFrame>, Status> {
        let (plan, permit) = self.start(request, true)?;
        Ok(self.engine.rows(plan, permit))
    }
}

type FileStream = Delivery<pb::StreamExportResponse>;
type RowsToMessage = fn(Result<RowsFrame, Status>) -> Result<pb::StreamRowsResponse, Status>;

/// The export service as served: the generated server for every method but StreamRows,
/// whose batches go out as [`crate::rows::BatchWriter`] encoded them.
#[derive(Clone)]
pub struct Routes {
    api: Arc<Api>,
    server: ExportServiceServer<Api>,
}

impl Routes {
    pub fn new(api: Api) -> Routes {
        let api = Arc::new(api);
        Routes {
            server: with_compression(ExportServiceServer::from_arc(api.clone())),
            api,
        }
    }
}

/// Compressed frames for clients that ask (`grpc-accept-encoding`); others get them plain.
const COMPRESSION: [CompressionEncoding; 2] =
    [CompressionEncoding::Zstd, CompressionEncoding::Gzip];

fn with_compression(mut server: ExportServiceServer<Api>) -> ExportServiceServer<Api> {
    for encoding in COMPRESSION {
        server = server.accept_compressed(encoding).send_compressed(encoding);
    }
    server
}

/// The one method [`Routes`] serves itself (a test checks it against the generated name).
const STREAM_ROWS_PATH: &str = "/haven.export.v1.ExportService/StreamRows";

impl NamedService for Routes {
    const NAME: &'static str = <ExportServiceServer<Api> as NamedService>::NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for Routes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != STREAM_ROWS_PATH {
            return Box::pin(tower::Service::call(&mut self.server, req));
        }
        let api = self.api.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<RowsFrame, pb::ExportRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            for encoding in COMPRESSION {
                grpc = grpc.accept_compressed(encoding).send_compressed(encoding);
            }
            let method = tower::service_fn(move |request: Request<pb::ExportRequest>| {
                let opened = api.open_rows(&request).map(Response::new);
                std::future::ready(opened)
            });
            Ok(grpc.server_streaming(method, req).await)
        })
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

    type StreamRowsStream = futures::stream::Map<Delivery<RowsFrame>, RowsToMessage>;

    /// Served by [`Routes`], which sends the batches as they were encoded; this way (for a
    /// caller of the trait) decodes them again.
    async fn stream_rows(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::StreamRowsStream>, Status> {
        let to_message: RowsToMessage = |frame| frame.and_then(RowsFrame::into_message);
        Ok(Response::new(self.open_rows(&request)?.map(to_message)))
    }

    type StreamExportStream = FileStream;

    async fn stream_export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<FileStream>, Status> {
        let (plan, permit) = self.start(&request, false)?;
        Ok(Response::new(
            self.engine.export(FileJob::export(&plan), permit),
        ))
    }

    type StreamBillingExportStream = FileStream;

    async fn stream_billing_export(
        &self,
        request: Request<pb::BillingExportRequest>,
    ) -> Result<Response<FileStream>, Status> {
        let principal = principal_of(&request)?;
        if !principal.is_admin() {
            return Err(ExportError::PermissionDenied(
                "the billing export is for platform admins (role admin)",
            )
            .into());
        }
        let now = Utc::now();
        let billing = billing::resolve(
            request.get_ref(),
            principal.tenant_id,
            &principal.user_id,
            self.limits.billing(),
            now,
        )?;
        let permit = self.tenants.acquire(principal.tenant_id)?;
        let job = FileJob {
            record: billing.record.clone(),
            content_type: billing.content_type(),
            filename: billing.filename(now),
            body: Body::Billing(billing),
        };
        Ok(Response::new(self.engine.export(job, permit)))
    }

    type StreamBrandReportStream = FileStream;

    async fn stream_brand_report(
        &self,
        request: Request<pb::BrandReportRequest>,
    ) -> Result<Response<FileStream>, Status> {
        let principal = principal_of(&request)?;
        let (brand_id, format, days) = brand::parse(request.get_ref())?;
        // The brand is looked up before the stream starts, so an unknown or foreign brand is
        // a plain NotFound, not a failed download.
        let mut conn = self
            .engine
            .pool
            .acquire()
            .await
            .map_err(ExportError::from)?;
        let name = brand::find_brand(&mut conn, principal.tenant_id, brand_id).await?;
        drop(conn);
        let permit = self.tenants.acquire(principal.tenant_id)?;
        let now = Utc::now();
        let report = BrandReport::new(
            principal.tenant_id,
            &principal.user_id,
            brand_id,
            name,
            format,
            days,
            now,
        );
        let job = FileJob {
            record: report.record.clone(),
            content_type: report.content_type(),
            filename: report.filename(now),
            body: Body::BrandReport(report),
        };
        Ok(Response::new(self.engine.export(job, permit)))
    }

    async fn list_export_history(
        &self,
        request: Request<pb::ListExportHistoryRequest>,
    ) -> Result<Response<pb::ListExportHistoryResponse>, Status> {
        let principal = principal_of(&request)?;
        let req = request.into_inner();
        let page_size = pagination::page_size(req.page_size, DEFAULT_PAGE_SIZE)?;
        let known = catalog::find(&req.export_type).is_some()
            || [billing::TYPE_KEY, brand::TYPE_KEY].contains(&req.export_type.as_str());
        if !req.export_type.is_empty() && !known {
            return Err(ExportError::invalid(
                "export_type",
                format!("unknown type `{}`", req.export_type),
            )
            .into());
        }
        let cursor = pagination::decode(&req.page_token)?;
        let rows = history::query(
            &self.engine.pool,
            principal.tenant_id,
            None,
            &req.export_type,
            cursor,
            page_size + 1,
        )
        .await?;
        let page = usize::try_from(page_size).unwrap_or(0);
        let more = rows.len() > page;
        let rows = &rows[..rows.len().min(page)];
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => pagination::encode(last.created_at, last.id()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListExportHistoryResponse {
            entries: rows.iter().map(history::Entry::to_proto).collect(),
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
            .map_err(|_| ExportError::invalid("id", format!("`{raw}` is not a UUID")))?;
        let rows = history::query(
            &self.engine.pool,
            principal.tenant_id,
            Some(id),
            "",
            None,
            1,
        )
        .await?;
        // Another tenant's export answers exactly as an unknown one.
        let row = rows
            .first()
            .ok_or_else(|| ExportError::NotFound(format!("no export `{id}`")))?;
        Ok(Response::new(row.to_proto()))
    }

    async fn trigger_statistics_export(
        &self,
        request: Request<pb::TriggerStatisticsExportRequest>,
    ) -> Result<Response<pb::TriggerStatisticsExportResponse>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::statistics_api::trigger(&self.statistics, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn list_statistics_runs(
        &self,
        request: Request<pb::ListStatisticsRunsRequest>,
    ) -> Result<Response<pb::ListStatisticsRunsResponse>, Status> {
        let principal = principal_of(&request)?;
        let r = crate::statistics_api::list_runs(&self.statistics, &principal, request.get_ref())
            .await?;
        Ok(Response::new(r))
    }

    async fn get_statistics_run(
        &self,
        request: Request<pb::GetStatisticsRunRequest>,
    ) -> Result<Response<pb::StatisticsRun>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::statistics_api::get_run(&self.statistics, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn export_variant_statistics(
        &self,
        request: Request<pb::ExportVariantStatisticsRequest>,
    ) -> Result<Response<pb::VariantStatisticsExport>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::statistics_api::export_variant(&self.statistics, &principal, request.get_ref())
                .await?;
        Ok(Response::new(r))
    }

    async fn list_variant_statistics(
        &self,
        request: Request<pb::ListVariantStatisticsRequest>,
    ) -> Result<Response<pb::ListVariantStatisticsResponse>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::statistics_api::list_variant(&self.statistics, &principal, request.get_ref())
                .await?;
        Ok(Response::new(r))
    }

    async fn create_scheduled_export(
        &self,
        request: Request<pb::CreateScheduledExportRequest>,
    ) -> Result<Response<pb::ScheduledExport>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::schedule::api::create(&self.engine.pool, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn get_scheduled_export(
        &self,
        request: Request<pb::GetScheduledExportRequest>,
    ) -> Result<Response<pb::ScheduledExport>, Status> {
        let principal = principal_of(&request)?;
        let r = crate::schedule::api::get(&self.engine.pool, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn list_scheduled_exports(
        &self,
        request: Request<pb::ListScheduledExportsRequest>,
    ) -> Result<Response<pb::ListScheduledExportsResponse>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::schedule::api::list(&self.engine.pool, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn update_scheduled_export(
        &self,
        request: Request<pb::UpdateScheduledExportRequest>,
    ) -> Result<Response<pb::ScheduledExport>, Status> {
        let principal = principal_of(&request)?;
        let r =
            crate::schedule::api::update(&self.engine.pool, &principal, request.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn list_scheduled_export_runs(
        &self,
        request: Request<pb::ListScheduledExportRunsRequest>,
    ) -> Result<Response<pb::ListScheduledExportRunsResponse>, Status> {
        let principal = principal_of(&request)?;
        let r = crate::schedule::api::runs(
            &self.engine.pool,
            self.statistics.objects(),
            self.statistics.link_ttl(),
            &principal,
            request.get_ref(),
        )
        .await?;
        Ok(Response::new(r))
    }

    async fn delete_scheduled_export(
        &self,
        request: Request<pb::DeleteScheduledExportRequest>,
    ) -> Result<Response<()>, Status> {
        let principal = principal_of(&request)?;
        crate::schedule::api::delete(&self.engine.pool, &principal, request.get_ref()).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intercepted_path_is_the_generated_stream_rows() {
        let name = <ExportServiceServer<Api> as NamedService>::NAME;
        assert_eq!(STREAM_ROWS_PATH, format!("/{name}/StreamRows"));
    }
}
