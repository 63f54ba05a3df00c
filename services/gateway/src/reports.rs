//! Reports (README, "Billing usage export", "Brand analytics report"): seed 002's billing
//! export for platform admins and seed 003's brand analytics report, streamed from the
//! export service like every download.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::export::file_response;
use crate::{ApiError, AppState, upstream};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(billing_export))
        .routes(routes!(brand_csv))
        .routes(routes!(brand_pdf))
}

/// Query parameters arrive as text so that a bad one gets our JSON error naming it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BillingQuery {
    /// `csv` (default) or `json`.
    format: Option<String>,
    /// First UTC day, `YYYY-MM-DD`, included; default 29 days before `endDate`.
    #[serde(rename = "startDate")]
    #[param(rename = "startDate")]
    start_date: Option<String>,
    /// Last UTC day, `YYYY-MM-DD`, included; default today.
    #[serde(rename = "endDate")]
    #[param(rename = "endDate")]
    end_date: Option<String>,
    /// `all` (default, one row per event), `by_tenant` or `by_model` (summed per UTC day).
    scope: Option<String>,
}

fn billing_request(q: &BillingQuery) -> Result<pb::BillingExportRequest, ApiError> {
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" | "" => pb::ExportFormat::Csv,
        "json" => pb::ExportFormat::Json,
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("unknown format `{other}`; expected csv or json"),
            ));
        }
    };
    let scope = match q.scope.as_deref().unwrap_or("all") {
        "all" | "" => pb::BillingScope::All,
        "by_tenant" => pb::BillingScope::ByTenant,
        "by_model" => pb::BillingScope::ByModel,
        other => {
            return Err(ApiError::invalid(
                "scope",
                format!("unknown scope `{other}`; expected all, by_tenant or by_model"),
            ));
        }
    };
    Ok(pb::BillingExportRequest {
        format: format as i32,
        start_date: q.start_date.clone().unwrap_or_default(),
        end_date: q.end_date.clone().unwrap_or_default(),
        scope: scope as i32,
    })
}

fn rename_billing(e: ApiError) -> ApiError {
    e.rename_field(|field| match field {
        "start_date" => Some("startDate"),
        "end_date" => Some("endDate"),
        _ => None,
    })
}

/// Downloads AI usage and cost across every tenant (platform admins only): CSV with the
/// header `date,tenant_name,model_used,input_tokens,output_tokens,cost_cents`, or JSON
/// `{"metadata":{"exportedAt","dateRange","totalRecords","scope"},"data":[…]}`, streamed.
/// `totalRecords` always equals the rows in `data` (one snapshot). A range holding more rows
/// than one export may hold is 409, never a cut file.
#[utoipa::path(get, operation_id = "exportBillingUsage", path = "/admin/billing/export", tag = "reports",
    params(BillingQuery),
    responses(
        (status = 200, description = "The file, streamed", content_type = "text/csv",
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"billing-export-YYYY-MM-DD.csv|json\""),
                ("X-Export-Id" = String, description = "Export id for the history lookup"),
            )),
        (status = 400, description = "A bad parameter, named in `field`", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a platform admin", body = ErrorBody),
        (status = 409, description = "More rows than one export holds; shorten the range", body = ErrorBody),
        (status = 429, description = "Too many exports running", body = ErrorBody),
    ))]
async fn billing_export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<BillingQuery>,
) -> Result<Response, ApiError> {
    let request = billing_request(&query)?;
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let call = client
        .stream_billing_export(upstream::request(&headers, request))
        .await;
    file_response(call, rename_billing).await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Days covered, ending today (UTC): 1 to 365, default 30.
    days: Option<String>,
}

/// `days` as seed 003 takes it: 1..=365, 30 when absent, anything else named.
fn parse_days(days: Option<&str>) -> Result<u32, ApiError> {
    let Some(days) = days else {
        return Ok(30);
    };
    let n: i64 = days
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("days", format!("`{days}` is not a whole number")))?;
    match u32::try_from(n) {
        Ok(n @ 1..=365) => Ok(n),
        _ => Err(ApiError::invalid(
            "days",
            format!("must be between 1 and 365, got {n}"),
        )),
    }
}

async fn brand_report(
    state: &AppState,
    headers: &HeaderMap,
    brand_id: String,
    query: &ReportQuery,
    format: pb::ExportFormat,
) -> Result<Response, ApiError> {
    let request = pb::BrandReportRequest {
        brand_id,
        format: format as i32,
        days: parse_days(query.days.as_deref())?,
    };
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let call = client
        .stream_brand_report(upstream::request(headers, request))
        .await;
    file_response(call, std::convert::identity).await
}

/// Downloads a brand's analytics report as CSV: the report header, Summary Metrics, Calls by
/// Outcome, Agent Performance and Daily Call Log, each "No Data" when empty. Another
/// tenant's brand is 404, as an unknown one. Phone numbers never appear.
#[utoipa::path(get, operation_id = "exportBrandAnalyticsCsv", path = "/brands/{brand_id}/analytics/export/csv", tag = "reports",
    params(("brand_id" = String, Path, description = "The brand's id"), ReportQuery),
    responses(
        (status = 200, description = "The report", content_type = "text/csv",
            headers(("Content-Disposition" = String, description = "attachment; filename=\"analytics_{brand}_{YYYYMMDD}.csv\""))),
        (status = 400, description = "A bad parameter, named in `field`", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such brand of this tenant", body = ErrorBody),
    ))]
async fn brand_csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(brand_id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    brand_report(&state, &headers, brand_id, &query, pb::ExportFormat::Csv).await
}

/// Downloads a brand's analytics report as a print-ready PDF: the same sections as tables
/// whose headers repeat on every page, pages numbered, fonts embedded.
#[utoipa::path(get, operation_id = "exportBrandAnalyticsPdf", path = "/brands/{brand_id}/analytics/export/pdf", tag = "reports",
    params(("brand_id" = String, Path, description = "The brand's id"), ReportQuery),
    responses(
        (status = 200, description = "The report", content_type = "application/pdf",
            headers(("Content-Disposition" = String, description = "attachment; filename=\"analytics_{brand}_{YYYYMMDD}.pdf\""))),
        (status = 400, description = "A bad parameter, named in `field`", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such brand of this tenant", body = ErrorBody),
    ))]
async fn brand_pdf(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(brand_id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    brand_report(&state, &headers, brand_id, &query, pb::ExportFormat::Pdf).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_bounded_and_named() {
        assert_eq!(parse_days(None).ok(), Some(30));
        assert_eq!(parse_days(Some("1")).ok(), Some(1));
        assert_eq!(parse_days(Some("365")).ok(), Some(365));
        for bad in ["0", "366", "-1", "abc", "", "1.5", "99999999999999999999"] {
            let e = parse_days(Some(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("days"), "{bad}");
        }
    }
}
