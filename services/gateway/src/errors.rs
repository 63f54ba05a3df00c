//! The error-queue page's API (README, "Retry queue"), backed by the retry service:
//! `GET /api/errors`, `POST /api/errors/{id}/retry`, `POST /api/errors/{id}/cancel`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use haven_proto::retry::v1 as pb;
use haven_proto::retry::v1::retry_service_client::RetryServiceClient;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::json::{text, time};
use crate::{ApiError, AppState, upstream};

/// The error page's default page size (README, "Retry queue"); the retry service allows up to 1000.
const DEFAULT_LIMIT: i32 = 20;
const MAX_LIMIT: i32 = 1000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/errors", get(list))
        .route("/errors/{id}/retry", post(retry))
        .route("/errors/{id}/cancel", post(cancel))
}

/// Query parameters arrive as text so that a bad one gets our JSON error naming it.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    operation_type: Option<String>,
    limit: Option<String>,
    page_token: Option<String>,
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

async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "items": page.items.iter().map(item_json).collect::<Vec<_>>(),
        "total": page.total,
        "counts": {
            "pending": counts.pending,
            "processing": counts.processing,
            "resolved": counts.resolved,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
        },
        "next_page_token": (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })))
}

async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let item = client
        .retry_now(upstream::request(&headers, pb::RetryNowRequest { id }))
        .await?
        .into_inner();
    Ok(Json(json!({ "success": true, "item": item_json(&item) })))
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut client = RetryServiceClient::new(state.upstreams.retry.clone());
    let item = client
        .cancel_retry_item(upstream::request(
            &headers,
            pb::CancelRetryItemRequest { id },
        ))
        .await?
        .into_inner();
    Ok(Json(json!({ "success": true, "item": item_json(&item) })))
}

/// The web app's `RetryItem` shape (snake_case, payload as an object), plus our additions.
fn item_json(item: &pb::RetryItem) -> Value {
    let status = pb::RetryStatus::try_from(item.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("RETRY_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    json!({
        "id": item.id,
        "tenant_id": item.tenant_id,
        "user_id": text(&item.user_id),
        "operation_type": item.operation_type,
        "payload": serde_json::from_str::<Value>(&item.payload_json).unwrap_or(Value::Null),
        "status": status,
        "attempts": item.attempts,
        "max_attempts": item.max_attempts,
        "last_error": text(&item.last_error),
        "next_retry_at": time(item.next_retry_at),
        "worker_id": text(&item.worker_id),
        "claimed_at": time(item.claimed_at),
        "lease_expires_at": time(item.lease_expires_at),
        "reference_id": text(&item.reference_id),
        "reference_table": text(&item.reference_table),
        "idempotency_key": text(&item.idempotency_key),
        "created_at": time(item.created_at),
        "updated_at": time(item.updated_at),
        "resolved_at": time(item.resolved_at),
    })
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
