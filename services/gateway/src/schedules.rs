//! Scheduled exports over REST (README, "Scheduled exports"), in seed 001's snake_case:
//! `GET/POST /api/scheduled-exports`, `GET/PATCH/DELETE /api/scheduled-exports/{id}`. A PATCH
//! changes exactly the keys its body carries.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::json::{nonempty, time_str};
use crate::{ApiError, AppState, upstream};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(runs))
}

fn client(state: &AppState) -> ExportServiceClient<Channel> {
    ExportServiceClient::new(state.upstreams.export.clone())
}

/// The gRPC field names are the REST ones but for these.
fn rename(e: ApiError) -> ApiError {
    e.rename_field(|field| match field {
        "fields" => Some("field_selection"),
        "date_range" => Some("date_range_type"),
        "scheduled_export.id" => Some("id"),
        _ => None,
    })
}

/// A scheduled export as the web app's `scheduled_exports` row.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    id: String,
    user_id: String,
    export_type: String,
    /// `csv`, `json` or `ndjson`.
    format: String,
    field_selection: Vec<String>,
    /// `last_week`, `last_month` or `all_time`.
    date_range_type: String,
    /// `weekly` or `monthly`.
    frequency: String,
    /// Weekly: 1 = Monday … 7 = Sunday.
    weekday: Option<i32>,
    /// Monthly: 1–31.
    day_of_month: Option<i32>,
    /// Local `HH:MM`.
    time_of_day: String,
    /// IANA zone.
    time_zone: String,
    enabled: bool,
    /// `email` or `download`.
    delivery_method: String,
    delivery_email: Option<String>,
    last_run_at: Option<String>,
    next_run_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

fn format_name(v: i32) -> &'static str {
    match pb::ExportFormat::try_from(v) {
        Ok(pb::ExportFormat::Csv) => "csv",
        Ok(pb::ExportFormat::Json) => "json",
        Ok(pb::ExportFormat::Ndjson) => "ndjson",
        Ok(pb::ExportFormat::Pdf | pb::ExportFormat::Unspecified) | Err(_) => "unknown",
    }
}

impl From<pb::ScheduledExport> for ScheduleView {
    fn from(s: pb::ScheduledExport) -> Self {
        let range = match pb::DateRangePreset::try_from(s.date_range) {
            Ok(pb::DateRangePreset::LastWeek) => "last_week",
            Ok(pb::DateRangePreset::LastMonth) => "last_month",
            Ok(pb::DateRangePreset::AllTime) => "all_time",
            Ok(pb::DateRangePreset::Unspecified) | Err(_) => "unknown",
        };
        let frequency = match pb::ScheduleFrequency::try_from(s.frequency) {
            Ok(pb::ScheduleFrequency::Weekly) => "weekly",
            Ok(pb::ScheduleFrequency::Monthly) => "monthly",
            Ok(pb::ScheduleFrequency::Unspecified) | Err(_) => "unknown",
        };
        let delivery = match pb::DeliveryMethod::try_from(s.delivery_method) {
            Ok(pb::DeliveryMethod::Email) => "email",
            Ok(pb::DeliveryMethod::Download) => "download",
            Ok(pb::DeliveryMethod::Unspecified) | Err(_) => "unknown",
        };
        ScheduleView {
            id: s.id,
            user_id: s.user_id,
            export_type: s.export_type,
            format: format_name(s.format).to_owned(),
            field_selection: s.fields,
            date_range_type: range.to_owned(),
            frequency: frequency.to_owned(),
            weekday: (s.weekday != 0).then_some(s.weekday),
            day_of_month: (s.day_of_month != 0).then_some(s.day_of_month),
            time_of_day: s.time_of_day,
            time_zone: s.time_zone,
            enabled: s.enabled,
            delivery_method: delivery.to_owned(),
            delivery_email: nonempty(s.delivery_email),
            last_run_at: time_str(s.last_run_at),
            next_run_at: time_str(s.next_run_at),
            created_at: time_str(s.created_at),
            updated_at: time_str(s.updated_at),
        }
    }
}

/// A schedule as sent: every key optional in a PATCH; POST requires export_type, format,
/// date_range_type and frequency (and delivery_email for email delivery).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    export_type: Option<String>,
    format: Option<String>,
    field_selection: Option<Vec<String>>,
    date_range_type: Option<String>,
    frequency: Option<String>,
    weekday: Option<i32>,
    day_of_month: Option<i32>,
    time_of_day: Option<String>,
    time_zone: Option<String>,
    enabled: Option<bool>,
    delivery_method: Option<String>,
    delivery_email: Option<String>,
}

fn parse_body(body: &[u8]) -> Result<ScheduleBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde names an unknown key without echoing values; other errors get our words.
        let text = e.to_string();
        if text.starts_with("unknown field") {
            ApiError::bad_request(
                text.split(", expected")
                    .next()
                    .unwrap_or("unknown field")
                    .to_owned(),
            )
        } else {
            ApiError::bad_request("the body must be a JSON object of schedule fields")
        }
    })
}

fn choice<T: Copy>(field: &'static str, value: &str, options: &[(&str, T)]) -> Result<T, ApiError> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            ApiError::invalid(field, format!("must be one of {}", names.join(", ")))
        })
}

/// The body as a protobuf schedule, and the gRPC field names it sets (the update mask).
fn to_proto(b: ScheduleBody) -> Result<(pb::ScheduledExport, Vec<String>), ApiError> {
    let mut s = pb::ScheduledExport::default();
    let mut mask = Vec::new();
    if let Some(v) = b.export_type {
        s.export_type = v;
        mask.push("export_type");
    }
    if let Some(v) = b.format {
        s.format = choice(
            "format",
            &v,
            &[
                ("csv", pb::ExportFormat::Csv),
                ("json", pb::ExportFormat::Json),
                ("ndjson", pb::ExportFormat::Ndjson),
            ],
        )? as i32;
        mask.push("format");
    }
    if let Some(v) = b.field_selection {
        s.fields = v;
        mask.push("fields");
    }
    if let Some(v) = b.date_range_type {
        s.date_range = choice(
            "date_range_type",
            &v,
            &[
                ("last_week", pb::DateRangePreset::LastWeek),
                ("last_month", pb::DateRangePreset::LastMonth),
                ("all_time", pb::DateRangePreset::AllTime),
            ],
        )? as i32;
        mask.push("date_range");
    }
    if let Some(v) = b.frequency {
        s.frequency = choice(
            "frequency",
            &v,
            &[
                ("weekly", pb::ScheduleFrequency::Weekly),
                ("monthly", pb::ScheduleFrequency::Monthly),
            ],
        )? as i32;
        mask.push("frequency");
    }
    if let Some(v) = b.weekday {
        s.weekday = v;
        mask.push("weekday");
    }
    if let Some(v) = b.day_of_month {
        s.day_of_month = v;
        mask.push("day_of_month");
    }
    if let Some(v) = b.time_of_day {
        s.time_of_day = v;
        mask.push("time_of_day");
    }
    if let Some(v) = b.time_zone {
        s.time_zone = v;
        mask.push("time_zone");
    }
    if let Some(v) = b.enabled {
        s.enabled = v;
        mask.push("enabled");
    }
    if let Some(v) = b.delivery_method {
        s.delivery_method = choice(
            "delivery_method",
            &v,
            &[
                ("email", pb::DeliveryMethod::Email),
                ("download", pb::DeliveryMethod::Download),
            ],
        )? as i32;
        mask.push("delivery_method");
    }
    if let Some(v) = b.delivery_email {
        s.delivery_email = v;
        mask.push("delivery_email");
    }
    Ok((s, mask.into_iter().map(str::to_owned).collect()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–1000, default 50.
    limit: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// A page of schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView {
    scheduled_exports: Vec<ScheduleView>,
    next_page_token: Option<String>,
}

/// The tenant's scheduled exports, oldest first
#[utoipa::path(get, operation_id = "listScheduledExports", path = "/scheduled-exports", tag = "schedules",
    params(ListQuery),
    responses((status = 200, body = ListView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListView>, ApiError> {
    let page_size = match q.limit.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<i32>()
                .map_err(|_| ApiError::invalid("limit", "must be a number from 1 to 1000"))?,
        ),
    };
    let page = client(&state)
        .list_scheduled_exports(upstream::request(
            &headers,
            pb::ListScheduledExportsRequest {
                page_size,
                page_token: q.page_token.unwrap_or_default(),
            },
        ))
        .await
        .map_err(|s| {
            ApiError::from(s).rename_field(|f| match f {
                "page_size" => Some("limit"),
                _ => None,
            })
        })?
        .into_inner();
    Ok(Json(ListView {
        scheduled_exports: page
            .scheduled_exports
            .into_iter()
            .map(ScheduleView::from)
            .collect(),
        next_page_token: nonempty(page.next_page_token),
    }))
}

/// Create a scheduled export
///
/// `enabled` defaults to true and `delivery_method` to `email`; the answer carries
/// `next_run_at`, computed in `time_zone`.
#[utoipa::path(post, operation_id = "createScheduledExport", path = "/scheduled-exports", tag = "schedules",
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses((status = 201, body = ScheduleView), (status = 400, description = "A bad field, named in `field`", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let mut body = parse_body(&body)?;
    body.enabled.get_or_insert(true);
    body.delivery_method
        .get_or_insert_with(|| "email".to_owned());
    let (schedule, _) = to_proto(body)?;
    let made = client(&state)
        .create_scheduled_export(upstream::request(
            &headers,
            pb::CreateScheduledExportRequest {
                scheduled_export: Some(schedule),
            },
        ))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(made.into())))
}

/// One scheduled export
#[utoipa::path(get, operation_id = "getScheduledExport", path = "/scheduled-exports/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such schedule of this tenant", body = ErrorBody)))]
async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let s = client(&state)
        .get_scheduled_export(upstream::request(
            &headers,
            pb::GetScheduledExportRequest { id },
        ))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner();
    Ok(Json(s.into()))
}

/// Change a scheduled export: pause (`{"enabled": false}`), resume, or edit
///
/// Exactly the keys in the body change; the result is checked as a whole.
#[utoipa::path(patch, operation_id = "updateScheduledExport", path = "/scheduled-exports/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn patch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ScheduleView>, ApiError> {
    let (mut schedule, paths) = to_proto(parse_body(&body)?)?;
    if paths.is_empty() {
        return Err(ApiError::bad_request("send at least one field to change"));
    }
    schedule.id = id;
    let updated = client(&state)
        .update_scheduled_export(upstream::request(
            &headers,
            pb::UpdateScheduledExportRequest {
                scheduled_export: Some(schedule),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
        ))
        .await
        .map_err(|s| rename(s.into()))?
        .into_inner();
    Ok(Json(updated.into()))
}

/// Delete a scheduled export (its runs go with it)
#[utoipa::path(delete, operation_id = "deleteScheduledExport", path = "/scheduled-exports/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    client(&state)
        .delete_scheduled_export(upstream::request(
            &headers,
            pb::DeleteScheduledExportRequest { id },
        ))
        .await
        .map_err(|s| rename(s.into()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One slot of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    id: String,
    scheduled_for: Option<String>,
    /// `pending`, `delivered`, `failed` or `skipped`.
    status: String,
    late: bool,
    export_id: Option<String>,
    /// Time-limited link to the stored file.
    download_url: Option<String>,
    link_expires_at: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// 1–100, default 20.
    limit: Option<String>,
}

/// A schedule's runs, latest slot first, with links to the stored files
#[utoipa::path(get, operation_id = "listScheduledExportRuns", path = "/scheduled-exports/{id}/runs", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id"), RunsQuery),
    responses((status = 200, body = [RunView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| ApiError::invalid("limit", "must be a number from 1 to 100"))?,
    };
    let runs = client(&state)
        .list_scheduled_export_runs(upstream::request(
            &headers,
            pb::ListScheduledExportRunsRequest {
                schedule_id: id,
                limit,
            },
        ))
        .await
        .map_err(|s| {
            ApiError::from(s).rename_field(|f| match f {
                "schedule_id" => Some("id"),
                _ => None,
            })
        })?
        .into_inner()
        .runs;
    Ok(Json(
        runs.into_iter()
            .map(|r| RunView {
                id: r.id,
                scheduled_for: time_str(r.scheduled_for),
                status: r.status,
                late: r.late,
                export_id: nonempty(r.export_id),
                download_url: nonempty(r.download_url),
                link_expires_at: time_str(r.link_expires_at),
                attempts: r.attempts,
                last_error: nonempty(r.last_error),
                created_at: time_str(r.created_at),
                updated_at: time_str(r.updated_at),
            })
            .collect(),
    ))
}
