//! Downloads (README, "Exports"): `GET /api/export` streams the export service's
//! rendered file into the HTTP body as it arrives, and `GET /api/export/configs` serves the
//! catalogue. Errors before the first byte are JSON; a failure after it aborts the
//! connection, so no client can take a partial file for a complete one. No timeout cuts a
//! long download.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use http_body::Frame;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, upstream};

pub const RECORD_COUNT: HeaderName = HeaderName::from_static("x-record-count");
pub const TRUNCATED: HeaderName = HeaderName::from_static("x-export-truncated");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/export", get(download))
        .route("/export/configs", get(configs))
}

#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    r#type: Option<String>,
    format: Option<String>,
    fields: Option<String>,
    #[serde(rename = "startDate")]
    start_date: Option<String>,
    #[serde(rename = "endDate")]
    end_date: Option<String>,
    limit: Option<String>,
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

async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    use pb::stream_export_response::Part;
    let request = to_request(&query)?;
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let mut stream = client
        .stream_export(upstream::request(&headers, request))
        .await
        .map_err(|s| rename(ApiError::from(s)))?
        .into_inner();
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

    let disposition = format!(
        "attachment; filename=\"{}\"",
        start.filename.replace('"', "")
    );
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(body)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&start.content_type));
    h.insert(header::CONTENT_DISPOSITION, header_value(&disposition));
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

/// The catalogue in the JSON shape the web app's export form reads.
async fn configs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mut client = ExportServiceClient::new(state.upstreams.export.clone());
    let types = client
        .list_export_types(upstream::request(&headers, pb::ListExportTypesRequest {}))
        .await?
        .into_inner();
    Ok(Json(Value::Array(
        types
            .export_types
            .iter()
            .map(|t| {
                json!({
                    "type": t.key,
                    "label": t.label,
                    "description": t.description,
                    "fields": t.fields.iter().map(|f| json!({ "key": f.key, "label": f.label, "default": f.default })).collect::<Vec<_>>(),
                    "defaultDateRange": t.default_date_range_days,
                    "maxRecords": t.max_records,
                })
            })
            .collect(),
    )))
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
