//! Downloads (README, "Exports"): `GET /api/export` streams the export service's
//! rendered file into the HTTP body as it arrives; `GET /api/export/configs` (and seed 000's
//! `POST /api/export`) serve the catalogue; `GET /api/export/history[/{export_id}]` the
//! tenant's past exports. Errors before the first byte are JSON; a failure after it aborts the
//! connection, so no client can take a partial file for a complete one. No timeout cuts a
//! long download.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use http_body::Frame;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::json::{nonempty, time_str};
use crate::{ApiError, AppState, upstream};

pub const RECORD_COUNT: HeaderName = HeaderName::from_static("x-record-count");
pub const TRUNCATED: HeaderName = HeaderName::from_static("x-export-truncated");

/// How long the download waits, after the summary, for the export service to end its stream
/// (it does so once the history row is written, so the page can read it at once).
const HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const DEFAULT_HISTORY_LIMIT: i32 = 20;
const MAX_HISTORY_LIMIT: i32 = 1000;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(download, catalogue))
        .routes(routes!(configs))
        .routes(routes!(history))
        .routes(routes!(history_entry))
}

/// Query parameters arrive as text so that a bad one gets our JSON error naming it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Export type key from the catalogue, e.g. `orders`.
    r#type: Option<String>,
    /// `csv` (default), `json` or `ndjson`.
    format: Option<String>,
    /// Comma-separated field keys; empty means the type's default fields.
    fields: Option<String>,
    /// First day (`YYYY-MM-DD`, UTC) or RFC 3339 instant; default: the type's default range.
    #[serde(rename = "startDate")]
    #[param(rename = "startDate")]
    start_date: Option<String>,
    /// Last day, included (`YYYY-MM-DD`, UTC) or RFC 3339 instant; default: now.
    #[serde(rename = "endDate")]
    #[param(rename = "endDate")]
    end_date: Option<String>,
    /// At most this many rows; 0 or unset means the type's maximum, which also caps it.
    limit: Option<String>,
    /// `true` puts a UTF-8 byte order mark before a CSV file (for Excel).
    bom: Option<String>,
}

/// `2026-01-31` (the whole day) or an RFC 3339 instant.
fn parse_time(
    field: &str,
    value: &str,
    end_of_day: bool,
) -> Result<prost_types::Timestamp, ApiError> {
    let at: DateTime<Utc> = if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let time = if end_of_day {
            date.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            date.and_hms_opt(0, 0, 0)
        };
        time.ok_or_else(|| ApiError::invalid(field, "is not a valid date"))?
            .and_utc()
    } else {
        DateTime::parse_from_rfc3339(value)
            .map_err(|_| {
                ApiError::invalid(
                    field,
                    format!("`{value}` is neither YYYY-MM-DD nor an RFC 3339 time"),
                )
            })?
            .with_timezone(&Utc)
    };
    Ok(haven_proto::time::timestamp(at))
}

fn to_request(q: &ExportQuery) -> Result<pb::ExportRequest, ApiError> {
    let export_type = q
        .r#type
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("type", "is required"))?;
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" => pb::ExportFormat::Csv,
        "json" => pb::ExportFormat::Json,
        "ndjson" => pb::ExportFormat::Ndjson,
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("unknown format `{other}`; expected csv, json or ndjson"),
            ));
        }
    };
    let fields = q
        .fields
        .as_deref()
        .map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let limit = match q.limit.as_deref() {
        None | Some("") => 0,
        Some(l) => l
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("limit", format!("`{l}` is not a whole number")))?,
    };
    let bom = match q.bom.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "bom",
                format!("`{other}` is not true or false"),
            ));
        }
    };
    Ok(pb::ExportRequest {
        export_type,
        format: format as i32,
        fields,
        start_time: q
            .start_date
            .as_deref()
            .map(|v| parse_time("startDate", v, false))
            .transpose()?,
        end_time: q
            .end_date
            .as_deref()
            .map(|v| parse_time("endDate", v, true))
            .transpose()?,
        limit,
        bom,
    })
}

/// Downloads an export as a file, streamed as it is produced.
///
/// `X-Export-Id` names the export: once the body has ended, its record count and whether the
/// limit cut it are at `GET /api/export/history/{export_id}` (and in the `x-record-count`
/// and `x-export-truncated` trailers for clients that read trailers).
#[utoipa::path(get, operation_id = "downloadExport", path = "/export", tag = "exports", params(ExportQuery),
    responses(
        (status = 200, description = "The file, streamed", content_type = "text/csv",
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"…\""),
                ("X-Export-Id" = String, description = "Export id for the history lookup"),
                ("X-Export-Limit" = u64, description = "Row limit after defaults and the cap"),
            )),
        (status = 400, description = "A bad parameter, named in `field`", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 429, description = "Too many exports running", body = ErrorBody),
    ))]
async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let request = to_request(&query)?;
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let call = client
        .stream_export(upstream::request(&headers, request))
        .await;
    file_response(call, rename).await
}

/// Streams a file from the export service into the HTTP body as it arrives: headers from its
/// start message, then its chunks, then the record count as a trailer. An error of the call
/// or before the first message is our JSON error (fields renamed by `rename`); a failure
/// after it aborts the body, so no client can take a partial file for a complete one.
pub async fn file_response(
    call: Result<tonic::Response<tonic::Streaming<pb::StreamExportResponse>>, tonic::Status>,
    rename: fn(ApiError) -> ApiError,
) -> Result<Response, ApiError> {
    use pb::stream_export_response::Part;
    let mut stream = call.map_err(|s| rename(ApiError::from(s)))?.into_inner();
    let start = match stream
        .message()
        .await
        .map_err(|s| rename(ApiError::from(s)))?
    {
        Some(pb::StreamExportResponse {
            part: Some(Part::Start(start)),
        }) => start,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                "the export service sent no file",
            ));
        }
    };

    let body = futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.message().await {
            Ok(Some(pb::StreamExportResponse {
                part: Some(Part::Chunk(bytes)),
            })) => Some((Ok(Frame::data(bytes)), Some(stream))),
            Ok(Some(pb::StreamExportResponse {
                part: Some(Part::Summary(summary)),
            })) => {
                // The service ends its stream once the history row is in: waiting for that
                // before the body ends lets the page look the export up at once.
                let ended = tokio::time::timeout(HISTORY_WAIT, stream.message()).await;
                if !matches!(ended, Ok(Ok(None))) {
                    tracing::debug!("the export stream did not end cleanly after its summary");
                }
                let mut trailers = HeaderMap::new();
                trailers.insert(RECORD_COUNT, HeaderValue::from(summary.record_count));
                trailers.insert(
                    TRUNCATED,
                    HeaderValue::from_static(if summary.truncated { "true" } else { "false" }),
                );
                Some((Ok(Frame::trailers(trailers)), None))
            }
            Ok(Some(_)) => Some((Ok(Frame::data(Bytes::new())), Some(stream))),
            // A stream that ends without its summary is incomplete: fail the body.
            Ok(None) => Some((
                Err(std::io::Error::other(
                    "the export ended without its summary",
                )),
                None,
            )),
            Err(status) => {
                tracing::warn!(status = ?status, "export failed mid-stream; aborting the download");
                Some((
                    Err(std::io::Error::other(status.message().to_owned())),
                    None,
                ))
            }
        }
    })
    .filter(|frame| {
        futures::future::ready(
            !matches!(frame, Ok(f) if f.data_ref().is_some_and(|d| d.is_empty())),
        )
    });

    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(body)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&start.content_type));
    h.insert(header::CONTENT_DISPOSITION, attachment(&start.filename));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::TRAILER,
        HeaderValue::from_static("x-record-count, x-export-truncated"),
    );
    h.insert(
        HeaderName::from_static("x-export-id"),
        header_value(&start.export_id),
    );
    h.insert(
        HeaderName::from_static("x-export-limit"),
        HeaderValue::from(start.limit),
    );
    Ok(response)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The gateway's parameter name for a field of `ExportRequest`, where they differ.
fn rename(e: ApiError) -> ApiError {
    e.rename_field(|field| match field {
        "export_type" => Some("type"),
        "start_time" => Some("startDate"),
        "end_time" => Some("endDate"),
        _ => None,
    })
}

/// One field of an export type, as seed 000's `ExportField`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportField {
    key: String,
    label: String,
    /// Exported when the request names no fields.
    default: bool,
}

/// One export type, as seed 000's `ExportConfig`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportConfig {
    r#type: String,
    label: String,
    description: String,
    fields: Vec<ExportField>,
    /// Days covered when the request names no start date.
    default_date_range: u32,
    /// Rows at most, whatever the request's limit.
    max_records: u64,
}

/// Seed 000's `POST /api/export` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Catalogue {
    configs: Vec<ExportConfig>,
}

async fn export_configs(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Vec<ExportConfig>, ApiError> {
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let types = client
        .list_export_types(upstream::request(headers, pb::ListExportTypesRequest {}))
        .await?
        .into_inner();
    Ok(types
        .export_types
        .into_iter()
        .map(|t| ExportConfig {
            r#type: t.key,
            label: t.label,
            description: t.description,
            fields: t
                .fields
                .into_iter()
                .map(|f| ExportField {
                    key: f.key,
                    label: f.label,
                    default: f.default,
                })
                .collect(),
            default_date_range: t.default_date_range_days,
            max_records: t.max_records,
        })
        .collect())
}

/// The catalogue of export types: fields, default range and maximum rows of each.
#[utoipa::path(get, operation_id = "listExportConfigs", path = "/export/configs", tag = "exports",
    responses((status = 200, body = Vec<ExportConfig>), (status = 401, body = ErrorBody)))]
async fn configs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ExportConfig>>, ApiError> {
    Ok(Json(export_configs(&state, &headers).await?))
}

/// The catalogue as seed 000's export page loads it: `{"configs": [...]}`.
#[utoipa::path(post, operation_id = "getExportCatalogue", path = "/export", tag = "exports",
    responses((status = 200, body = Catalogue), (status = 401, body = ErrorBody)))]
async fn catalogue(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Catalogue>, ApiError> {
    Ok(Json(Catalogue {
        configs: export_configs(&state, &headers).await?,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Entries per page, 1..=1000; default 20.
    limit: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
    /// Only exports of this type.
    r#type: Option<String>,
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStatus {
    Completed,
    Failed,
    Cancelled,
}

/// One past export, in the snake_case of seed 000's `export_history` table.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    id: String,
    user_id: String,
    export_type: String,
    /// `csv`, `json` or `ndjson`; null for a typed (gRPC StreamRows) export.
    format: Option<String>,
    fields: Vec<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    /// Data rows sent (a CSV header is not counted).
    record_count: u64,
    bytes: u64,
    duration_ms: u64,
    status: Option<HistoryStatus>,
    /// Why a failed or cancelled export ended.
    error: Option<String>,
    /// True when the limit cut the result.
    truncated: bool,
    created_at: Option<String>,
}

impl From<pb::ExportHistoryEntry> for HistoryEntry {
    fn from(e: pb::ExportHistoryEntry) -> Self {
        let format = match pb::ExportFormat::try_from(e.format) {
            Ok(pb::ExportFormat::Csv) => Some("csv"),
            Ok(pb::ExportFormat::Json) => Some("json"),
            Ok(pb::ExportFormat::Ndjson) => Some("ndjson"),
            Ok(pb::ExportFormat::Pdf) => Some("pdf"),
            Ok(pb::ExportFormat::Unspecified) | Err(_) => None,
        };
        let status = match pb::ExportStatus::try_from(e.status) {
            Ok(pb::ExportStatus::Completed) => Some(HistoryStatus::Completed),
            Ok(pb::ExportStatus::Failed) => Some(HistoryStatus::Failed),
            Ok(pb::ExportStatus::Cancelled) => Some(HistoryStatus::Cancelled),
            Ok(pb::ExportStatus::Unspecified) | Err(_) => None,
        };
        let range = e.date_range.unwrap_or_default();
        HistoryEntry {
            id: e.id,
            user_id: e.user_id,
            export_type: e.export_type,
            format: format.map(str::to_owned),
            fields: e.fields,
            start_date: time_str(range.start),
            end_date: time_str(range.end),
            record_count: e.record_count,
            bytes: e.bytes,
            duration_ms: e.duration_ms,
            status,
            error: nonempty(e.error),
            truncated: e.truncated,
            created_at: time_str(e.created_at),
        }
    }
}

/// A page of the tenant's export history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    entries: Vec<HistoryEntry>,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

fn parse_history_limit(limit: Option<&str>) -> Result<i32, ApiError> {
    let Some(limit) = limit.filter(|l| !l.is_empty()) else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    let n: i32 = limit
        .parse()
        .map_err(|_| ApiError::invalid("limit", format!("`{limit}` is not a whole number")))?;
    if !(1..=MAX_HISTORY_LIMIT).contains(&n) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_LIMIT}, got {n}"),
        ));
    }
    Ok(n)
}

/// The tenant's past exports, newest first, however they ended.
#[utoipa::path(get, operation_id = "listExportHistory", path = "/export/history", tag = "exports", params(HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let request = pb::ListExportHistoryRequest {
        export_type: query.r#type.unwrap_or_default(),
        page_size: Some(parse_history_limit(query.limit.as_deref())?),
        page_token: query.page_token.unwrap_or_default(),
    };
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let page = client
        .list_export_history(upstream::request(&headers, request))
        .await
        .map_err(|s| {
            ApiError::from(s).rename_field(|f| match f {
                "export_type" => Some("type"),
                "page_size" => Some("limit"),
                _ => None,
            })
        })?
        .into_inner();
    Ok(Json(HistoryPage {
        entries: page.entries.into_iter().map(HistoryEntry::from).collect(),
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One past export: what a page reads after a download, by its `X-Export-Id`. Another
/// tenant's export is 404, as an unknown one.
#[utoipa::path(get, operation_id = "getExportHistoryEntry", path = "/export/history/{export_id}", tag = "exports",
    params(("export_id" = String, Path, description = "The download's X-Export-Id")),
    responses((status = 200, body = HistoryEntry), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn history_entry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(export_id): Path<String>,
) -> Result<Json<HistoryEntry>, ApiError> {
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let entry = client
        .get_export_history_entry(upstream::request(
            &headers,
            pb::GetExportHistoryEntryRequest { id: export_id },
        ))
        .await
        .map_err(|s| {
            ApiError::from(s).rename_field(|f| match f {
                "id" => Some("export_id"),
                _ => None,
            })
        })?
        .into_inner();
    Ok(Json(entry.into()))
}

/// `attachment; filename="…"` for a file name of ours (quotes dropped).
pub(crate) fn attachment(filename: &str) -> HeaderValue {
    header_value(&format!(
        "attachment; filename=\"{}\"",
        filename.replace('"', "")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_touches_the_field_not_user_input() {
        // A user who asks for the type `start_time` must see their own text back unchanged.
        let upstream = haven_server::invalid_argument(
            "export_type",
            "unknown type `start_time`; expected one of orders",
        );
        let e = rename(ApiError::from(upstream));
        assert_eq!(e.field.as_deref(), Some("type"));
        assert_eq!(
            e.message,
            "type: unknown type `start_time`; expected one of orders"
        );
        let plain = rename(ApiError::from(tonic::Status::invalid_argument(
            "export_type: no details",
        )));
        assert_eq!(plain.field, None);
        assert_eq!(plain.message, "export_type: no details");
    }
}
