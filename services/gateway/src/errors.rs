//! The error-queue page's API (README, "Retry queue"), backed by the retry service:
//! `GET /api/errors`, `GET /api/errors/{id}` (with its attempts),
//! `POST /api/errors/{id}/retry`, `POST /api/errors/{id}/cancel`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use haven_proto::retry::v1 as pb;
use haven_proto::retry::v1::retry_service_client::RetryServiceClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::json::{nonempty, time_str};
use crate::{ApiError, AppState, upstream};

/// The error page's default page size (README, "Retry queue"); the retry service allows up to 1000.
const DEFAULT_LIMIT: i32 = 20;
const MAX_LIMIT: i32 = 1000;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_item))
        .routes(routes!(retry))
        .routes(routes!(cancel))
}

/// Query parameters arrive as text so that a bad one gets our JSON error naming it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending (default), processing, resolved, failed, cancelled, or all.
    status: Option<String>,
    /// Only items of this operation type.
    operation_type: Option<String>,
    /// Items per page, 1..=1000; default 20.
    limit: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Items per status, as the page's tabs show them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    pending: i64,
    processing: i64,
    resolved: i64,
    failed: i64,
    cancelled: i64,
}

/// A page of the error queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    items: Vec<Item>,
    /// Items matching the filters, over every page.
    total: i64,
    counts: Counts,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// The answer to Retry now and Cancel.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acted {
    success: bool,
    item: Item,
}

/// As the web app's error page expects, no status means the pending tab; `all` (or empty)
/// means every status.
fn parse_status(status: Option<&str>) -> Result<pb::RetryStatus, ApiError> {
    Ok(match status {
        None => pb::RetryStatus::Pending,
        Some("" | "all") => pb::RetryStatus::Unspecified,
        Some("pending") => pb::RetryStatus::Pending,
        Some("processing") => pb::RetryStatus::Processing,
        Some("resolved") => pb::RetryStatus::Resolved,
        Some("failed") => pb::RetryStatus::Failed,
        Some("cancelled") => pb::RetryStatus::Cancelled,
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!(
                    "unknown value `{other}`; expected pending, processing, resolved, failed, cancelled or all"
                ),
            ));
        }
    })
}

fn parse_limit(limit: Option<&str>) -> Result<i32, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    let n: i32 = limit
        .parse()
        .map_err(|_| ApiError::invalid("limit", format!("`{limit}` is not a whole number")))?;
    if !(1..=MAX_LIMIT).contains(&n) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}, got {n}"),
        ));
    }
    Ok(n)
}

/// The tenant's retry items, newest first, with counts by status.
#[utoipa::path(get, operation_id = "listRetryItems", path = "/errors", tag = "retry", params(ListQuery),
    responses((status = 200, body = ItemPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<ItemPage>, ApiError> {
    let request = pb::ListRetryItemsRequest {
        status: parse_status(query.status.as_deref())? as i32,
        operation_type: query.operation_type.unwrap_or_default(),
        page_size: Some(parse_limit(query.limit.as_deref())?),
        page_token: query.page_token.unwrap_or_default(),
        tenant_id: String::new(),
    };
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let page = client
        .list_retry_items(upstream::request(&headers, request))
        .await?
        .into_inner();
    let counts = page.counts.unwrap_or_default();
    Ok(Json(ItemPage {
        items: page
            .items
            .into_iter()
            .map(|i| Item {
                attempt_history: None,
                ..Item::from(i)
            })
            .collect(),
        total: page.total,
        counts: Counts {
            pending: counts.pending,
            processing: counts.processing,
            resolved: counts.resolved,
            failed: counts.failed,
            cancelled: counts.cancelled,
        },
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One item with every attempt made so far; another tenant's id is 404.
#[utoipa::path(get, operation_id = "getRetryItem", path = "/errors/{id}", tag = "retry",
    params(("id" = String, Path, description = "Retry item id")),
    responses((status = 200, body = Item), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_item(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Item>, ApiError> {
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let item = client
        .get_retry_item(upstream::request(&headers, pb::GetRetryItemRequest { id }))
        .await?
        .into_inner();
    Ok(Json(item.into()))
}

/// Makes a pending or failed item due now; an exhausted item gets one more attempt.
#[utoipa::path(post, operation_id = "retryNow", path = "/errors/{id}/retry", tag = "retry",
    params(("id" = String, Path, description = "Retry item id")),
    responses((status = 200, body = Acted), (status = 404, body = ErrorBody),
        (status = 409, description = "Resolved, cancelled or running", body = ErrorBody)))]
async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Acted>, ApiError> {
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let item = client
        .retry_now(upstream::request(&headers, pb::RetryNowRequest { id }))
        .await?
        .into_inner();
    Ok(Json(Acted {
        success: true,
        item: item.into(),
    }))
}

/// Cancels an item so it is never dispatched again.
#[utoipa::path(post, operation_id = "cancelRetryItem", path = "/errors/{id}/cancel", tag = "retry",
    params(("id" = String, Path, description = "Retry item id")),
    responses((status = 200, body = Acted), (status = 404, body = ErrorBody),
        (status = 409, description = "Already resolved", body = ErrorBody)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Acted>, ApiError> {
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let item = client
        .cancel_retry_item(upstream::request(
            &headers,
            pb::CancelRetryItemRequest { id },
        ))
        .await?
        .into_inner();
    Ok(Json(Acted {
        success: true,
        item: item.into(),
    }))
}

/// An enum's proto name without its prefix, in lower case (`RETRY_STATUS_FAILED` → `failed`).
fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// One dispatch of an item and how it ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    attempt: i32,
    started_at: Option<String>,
    /// Null while the attempt runs.
    finished_at: Option<String>,
    duration_ms: i64,
    /// running, succeeded, failed or expired.
    outcome: String,
    error: Option<String>,
    worker_id: Option<String>,
}

/// The web app's `RetryItem` shape (snake_case, payload as an object), plus our additions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Item {
    id: String,
    tenant_id: String,
    user_id: Option<String>,
    operation_type: String,
    /// The payload as it was enqueued.
    #[schema(value_type = Object)]
    payload: Value,
    /// pending, processing, resolved, failed or cancelled.
    status: String,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    next_retry_at: Option<String>,
    worker_id: Option<String>,
    claimed_at: Option<String>,
    lease_expires_at: Option<String>,
    reference_id: Option<String>,
    reference_table: Option<String>,
    idempotency_key: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    resolved_at: Option<String>,
    /// Every attempt, oldest first; only in `GET /api/errors/{id}`'s answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_history: Option<Vec<Attempt>>,
}

impl From<pb::RetryItem> for Item {
    fn from(item: pb::RetryItem) -> Self {
        let status = pb::RetryStatus::try_from(item.status)
            .map(|s| enum_name(s.as_str_name(), "RETRY_STATUS_"))
            .unwrap_or_default();
        Item {
            payload: serde_json::from_str::<Value>(&item.payload_json).unwrap_or(Value::Null),
            status,
            attempts: item.attempts,
            max_attempts: item.max_attempts,
            last_error: nonempty(item.last_error),
            next_retry_at: time_str(item.next_retry_at),
            worker_id: nonempty(item.worker_id),
            claimed_at: time_str(item.claimed_at),
            lease_expires_at: time_str(item.lease_expires_at),
            reference_id: nonempty(item.reference_id),
            reference_table: nonempty(item.reference_table),
            idempotency_key: nonempty(item.idempotency_key),
            created_at: time_str(item.created_at),
            updated_at: time_str(item.updated_at),
            resolved_at: time_str(item.resolved_at),
            attempt_history: Some(
                item.attempt_history
                    .into_iter()
                    .map(|a| Attempt {
                        attempt: a.attempt,
                        started_at: time_str(a.started_at),
                        finished_at: time_str(a.finished_at),
                        duration_ms: a.duration_ms,
                        outcome: pb::AttemptOutcome::try_from(a.outcome)
                            .map(|o| enum_name(o.as_str_name(), "ATTEMPT_OUTCOME_"))
                            .unwrap_or_default(),
                        error: nonempty(a.error),
                        worker_id: nonempty(a.worker_id),
                    })
                    .collect(),
            ),
            id: item.id,
            tenant_id: item.tenant_id,
            user_id: nonempty(item.user_id),
            operation_type: item.operation_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_limit_are_checked_and_named() {
        assert_eq!(parse_status(None).unwrap(), pb::RetryStatus::Pending);
        assert_eq!(
            parse_status(Some("all")).unwrap(),
            pb::RetryStatus::Unspecified
        );
        assert!(
            parse_status(Some("exploded"))
                .unwrap_err()
                .message
                .starts_with("status:")
        );
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert!(
            parse_limit(Some("0"))
                .unwrap_err()
                .message
                .starts_with("limit:")
        );
        assert!(
            parse_limit(Some("ten"))
                .unwrap_err()
                .message
                .starts_with("limit:")
        );
        assert!(
            parse_limit(Some("1000000000"))
                .unwrap_err()
                .message
                .starts_with("limit:")
        );
    }
}
