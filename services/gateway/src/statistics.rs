//! Daily product statistics (README, "Daily product statistics"): seed 004's cron and
//! manual endpoints, and the runs and stored exports behind them.
//!
//! `GET /api/statistics-export/daily` is for an external scheduler (Vercel Cron and the
//! like): it carries no user token, only `Authorization: Bearer $HAVEN_CRON_SECRET`, checked
//! in constant time; the gateway then starts the day's run with a service credential of its
//! own. The run is claimed once per day, so a cron retry or the service's own scheduler never
//! makes a second one.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use haven_auth::ServiceCredentials;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tonic::transport::Channel;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::json::{nonempty, time_str};
use crate::{ApiError, AppState, upstream};

/// What the cron route needs: its secret and the gateway's own service identity.
#[derive(Clone)]
pub struct Cron {
    pub secret: SecretString,
    pub credentials: ServiceCredentials,
}

/// Routes a signed-in user or admin calls.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(manual))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(variant_exports))
}

/// The cron route, authenticated by its own secret instead of a user token.
pub fn public_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(daily))
}

fn client(state: &AppState) -> ExportServiceClient<Channel> {
    ExportServiceClient::new(state.upstreams.export.clone())
}

fn rename(e: ApiError) -> ApiError {
    e.rename_field(|field| match field {
        "product_id" => Some("productId"),
        "variant_id" => Some("variantId"),
        "shopify_product_id" => Some("shopifyProductId"),
        "shopify_variant_id" => Some("shopifyVariantId"),
        "page_token" => Some("pageToken"),
        _ => None,
    })
}

/// A statistics run and its counts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    id: String,
    /// The UTC day exported, `YYYY-MM-DD`.
    date: String,
    /// `daily` (once per day) or `admin`.
    kind: String,
    /// `running`, `completed` or `failed`.
    status: String,
    shop_domain: Option<String>,
    product_id: Option<String>,
    variant_id: Option<String>,
    shops: u32,
    products: u64,
    variants: u64,
    images: u64,
    /// Variants handed to the retry queue, and shops that could not be read.
    failures: u64,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: u64,
    error: Option<String>,
    shop_progress: Vec<ShopView>,
}

/// A run's progress in one shop.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShopView {
    shop_domain: String,
    tenant_id: String,
    status: String,
    products: u64,
    variants: u64,
    images: u64,
    failures: u64,
    error: Option<String>,
}

impl From<pb::StatisticsRun> for RunView {
    fn from(r: pb::StatisticsRun) -> Self {
        let status = match pb::StatisticsRunStatus::try_from(r.status) {
            Ok(pb::StatisticsRunStatus::Running) => "running",
            Ok(pb::StatisticsRunStatus::Completed) => "completed",
            Ok(pb::StatisticsRunStatus::Failed) => "failed",
            Ok(pb::StatisticsRunStatus::Unspecified) | Err(_) => "unknown",
        };
        RunView {
            id: r.id,
            date: r.date,
            kind: r.kind,
            status: status.to_owned(),
            shop_domain: nonempty(r.shop_domain),
            product_id: nonempty(r.product_id),
            variant_id: nonempty(r.variant_id),
            shops: r.shops,
            products: r.products,
            variants: r.variants,
            images: r.images,
            failures: r.failures,
            started_at: time_str(r.started_at),
            finished_at: time_str(r.finished_at),
            duration_ms: r.duration_ms,
            error: nonempty(r.error),
            shop_progress: r
                .shop_progress
                .into_iter()
                .map(|s| ShopView {
                    shop_domain: s.shop_domain,
                    tenant_id: s.tenant_id,
                    status: s.status,
                    products: s.products,
                    variants: s.variants,
                    images: s.images,
                    failures: s.failures,
                    error: nonempty(s.error),
                })
                .collect(),
        }
    }
}

/// The cron route's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyView {
    success: bool,
    /// False when the day's run already existed (started by the scheduler or an earlier call).
    created: bool,
    run: RunView,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// Start the day's statistics run (cron)
///
/// For an external scheduler at 00:00 UTC: exports yesterday (UTC) for every shop. Answers
/// at once with the run; a second call the same day returns the same run. Authorised by
/// `Authorization: Bearer $HAVEN_CRON_SECRET`, not a user token; without `HAVEN_CRON_SECRET`
/// the route does not exist.
#[utoipa::path(get, operation_id = "statisticsDailyCron", path = "/statistics-export/daily", tag = "statistics",
    security(("cron_secret" = [])),
    responses(
        (status = 200, description = "The day's run", body = DailyView),
        (status = 401, description = "Missing or wrong cron secret", body = ErrorBody),
        (status = 404, description = "HAVEN_CRON_SECRET is not set", body = ErrorBody),
        (status = 503, description = "The export service is unavailable", body = ErrorBody)))]
async fn daily(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<DailyView>, ApiError> {
    let Some(cron) = &state.cron else {
        return Err(ApiError::not_found(
            "the statistics cron route is off: the gateway has no HAVEN_CRON_SECRET",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send `Authorization: Bearer <HAVEN_CRON_SECRET>`"))?;
    let expected = cron.secret.expose_secret().as_bytes();
    if !bool::from(given.as_bytes().ct_eq(expected)) {
        tracing::warn!("statistics cron called with a wrong secret");
        return Err(unauthorized("the cron secret does not match"));
    }
    let authorization = cron.credentials.authorization().map_err(|e| {
        tracing::error!(error = %e, "no service credential for the cron route");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway has no service credential",
        )
    })?;
    let mut request = tonic::Request::new(pb::TriggerStatisticsExportRequest {
        daily: true,
        ..Default::default()
    });
    if let Ok(value) = authorization.expose_secret().parse() {
        request.metadata_mut().insert("authorization", value);
    }
    let response = client(&state)
        .trigger_statistics_export(request)
        .await?
        .into_inner();
    let run = response.run.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "internal",
            "the export service sent no run",
        )
    })?;
    tracing::info!(run = %run.id, created = response.created, "statistics cron called");
    Ok(Json(DailyView {
        success: true,
        created: response.created,
        run: run.into(),
    }))
}

/// Seed 004's manual export request, as a form or JSON.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualBody {
    /// Shopify's numeric product id.
    product_id: Option<String>,
    /// `gid://shopify/Product/{productId}`; optional, checked when sent.
    shopify_product_id: Option<String>,
    /// Shopify's numeric variant id.
    variant_id: Option<String>,
    /// `gid://shopify/ProductVariant/{variantId}`; optional, checked when sent.
    shopify_variant_id: Option<String>,
    /// UTC day `YYYY-MM-DD`; default yesterday.
    date: Option<String>,
}

/// Seed 004's manual export answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManualView {
    success: bool,
    export: ManualExport,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualExport {
    variant_id: String,
    date: String,
    /// Time-limited link to the CSV.
    csv_url: String,
    /// Time-limited link to the JSON.
    json_url: String,
    #[serde(rename = "csvR2Key")]
    csv_r2_key: String,
    #[serde(rename = "jsonR2Key")]
    json_r2_key: String,
    /// When the links stop working.
    links_expire_at: Option<String>,
}

fn parse_manual(headers: &HeaderMap, body: &[u8]) -> Result<ManualBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut out = ManualBody::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = Some(v.into_owned());
            match k.as_ref() {
                "productId" => out.product_id = v,
                "shopifyProductId" => out.shopify_product_id = v,
                "variantId" => out.variant_id = v,
                "shopifyVariantId" => out.shopify_variant_id = v,
                "date" => out.date = v,
                _ => {}
            }
        }
        Ok(out)
    } else if content_type.starts_with("application/json") || content_type.is_empty() {
        serde_json::from_slice(body).map_err(|_| {
            ApiError::bad_request(
                "the body must be a JSON object with productId, variantId and optionally shopifyProductId, shopifyVariantId and date (or the same as a form)",
            )
        })
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            "send application/json or application/x-www-form-urlencoded",
        ))
    }
}

/// Export one variant's statistics now
///
/// Seed 004's manual trigger, for a signed-in user of the shop's tenant: computes the
/// variant's metrics for the day, backs up its images, stores the CSV and JSON (replacing
/// earlier ones) and answers with time-limited links. Form or JSON body.
#[utoipa::path(post, operation_id = "statisticsManualExport", path = "/statistics-export/manual", tag = "statistics",
    request_body(content = ManualBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = ManualView),
        (status = 400, description = "A bad field, named in `field`", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such product or variant in the tenant's shop", body = ErrorBody),
        (status = 409, description = "The tenant has no connected Shopify shop", body = ErrorBody)))]
async fn manual(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ManualView>, ApiError> {
    let body = parse_manual(&headers, &body)?;
    let required = |v: Option<String>, field: &'static str| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::invalid(field, "is required"))
    };
    let request = pb::ExportVariantStatisticsRequest {
        product_id: required(body.product_id, "productId")?,
        shopify_product_id: body.shopify_product_id.unwrap_or_default(),
        variant_id: required(body.variant_id, "variantId")?,
        shopify_variant_id: body.shopify_variant_id.unwrap_or_default(),
        date: body.date.unwrap_or_default(),
    };
    let export = client(&state)
        .export_variant_statistics(upstream::request(&headers, request))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner();
    Ok(Json(ManualView {
        success: true,
        export: ManualExport {
            variant_id: export.variant_id,
            date: export.date,
            csv_url: export.csv_url,
            json_url: export.json_url,
            csv_r2_key: export.csv_key,
            json_r2_key: export.json_key,
            links_expire_at: time_str(export.links_expire_at),
        },
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// 1–100, default 20.
    limit: Option<u32>,
    /// `nextPageToken` of the previous page.
    #[serde(rename = "pageToken")]
    #[param(rename = "pageToken")]
    page_token: Option<String>,
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunsView {
    runs: Vec<RunView>,
    next_page_token: Option<String>,
}

/// List statistics runs (admins)
#[utoipa::path(get, operation_id = "listStatisticsRuns", path = "/statistics-export/runs", tag = "statistics",
    params(RunsQuery),
    responses((status = 200, body = RunsView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)))]
async fn list_runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunsView>, ApiError> {
    let page = client(&state)
        .list_statistics_runs(upstream::request(
            &headers,
            pb::ListStatisticsRunsRequest {
                limit: q.limit.unwrap_or(0),
                page_token: q.page_token.unwrap_or_default(),
            },
        ))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner();
    Ok(Json(RunsView {
        runs: page.runs.into_iter().map(RunView::from).collect(),
        next_page_token: nonempty(page.next_page_token),
    }))
}

/// One statistics run with its per-shop progress (admins)
#[utoipa::path(get, operation_id = "getStatisticsRun", path = "/statistics-export/runs/{id}", tag = "statistics",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let run = client(&state)
        .get_statistics_run(upstream::request(
            &headers,
            pb::GetStatisticsRunRequest { id },
        ))
        .await?
        .into_inner();
    Ok(Json(run.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VariantQuery {
    /// 1–366, default 30.
    limit: Option<u32>,
}

/// One stored export of a variant and day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantExportView {
    variant_id: String,
    product_id: String,
    shop_domain: String,
    date: String,
    csv_url: String,
    json_url: String,
    #[serde(rename = "csvR2Key")]
    csv_r2_key: String,
    #[serde(rename = "jsonR2Key")]
    json_r2_key: String,
    metrics: Option<MetricsView>,
    exported_at: Option<String>,
    links_expire_at: Option<String>,
}

/// One variant's counts for the day, as its files carry them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsView {
    impressions: i64,
    add_to_carts: i64,
    ctr: f64,
    orders: i64,
    revenue: f64,
}

/// A variant's stored statistics exports, newest day first, with time-limited links
#[utoipa::path(get, operation_id = "listVariantStatistics", path = "/statistics-export/variants/{variant_id}", tag = "statistics",
    params(("variant_id" = String, Path, description = "Shopify's numeric variant id"), VariantQuery),
    responses((status = 200, body = [VariantExportView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn variant_exports(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(variant_id): Path<String>,
    Query(q): Query<VariantQuery>,
) -> Result<Json<Vec<VariantExportView>>, ApiError> {
    let exports = client(&state)
        .list_variant_statistics(upstream::request(
            &headers,
            pb::ListVariantStatisticsRequest {
                variant_id,
                limit: q.limit.unwrap_or(0),
            },
        ))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner()
        .exports;
    Ok(Json(
        exports
            .into_iter()
            .map(|e| VariantExportView {
                variant_id: e.variant_id,
                product_id: e.product_id,
                shop_domain: e.shop_domain,
                date: e.date,
                csv_url: e.csv_url,
                json_url: e.json_url,
                csv_r2_key: e.csv_key,
                json_r2_key: e.json_key,
                metrics: e.metrics.map(|m| MetricsView {
                    impressions: m.impressions,
                    add_to_carts: m.add_to_carts,
                    ctr: m.ctr,
                    orders: m.orders,
                    revenue: m.revenue,
                }),
                exported_at: time_str(e.exported_at),
                links_expire_at: time_str(e.links_expire_at),
            })
            .collect(),
    ))
}
