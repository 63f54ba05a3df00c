//! Signed object links (README, "Object storage"): `GET /api/objects/{key}?expires=&sig=`
//! serves an object of the file (or memory) store to whoever holds a link the export
//! service signed. The signature is the only credential, so it covers the key and the
//! expiry, and nothing else in the request is trusted.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_objects::{LinkError, ObjectKey, ObjectsError, VerifyError};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// Public: the link's signature is its authorisation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(object))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Unix time (seconds) after which the link no longer works.
    expires: Option<String>,
    /// Hex HMAC-SHA256 over the key and `expires`.
    sig: Option<String>,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission_denied", message)
}

/// Download an object through a signed link
///
/// The links the export service hands out for the file store (statistics exports, image
/// backups, scheduled exports). 403 when the link is expired, tampered with or unsigned.
#[utoipa::path(get, operation_id = "getObject", path = "/objects/{*key}", tag = "objects",
    security(()),
    params(("key" = String, Path, description = "Object key, e.g. `statistic-exports/{shopId}/{productId}/{variantId}/20261205.csv`"),
        LinkQuery),
    responses(
        (status = 200, description = "The object, as an attachment", content_type = "application/octet-stream"),
        (status = 400, description = "A key that could leave the store's root", body = ErrorBody),
        (status = 403, description = "Expired, tampered with or unsigned", body = ErrorBody),
        (status = 404, description = "No such object, or the store serves no links", body = ErrorBody)))]
async fn object(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    let key = ObjectKey::parse(&key).map_err(|e| ApiError::invalid("key", e))?;
    let (Some(expires), Some(sig)) = (q.expires.as_deref(), q.sig.as_deref()) else {
        return Err(forbidden(
            "this link is not signed (expires and sig are required)",
        ));
    };
    let expires: i64 = expires
        .parse()
        .map_err(|_| forbidden("the link's signature does not match"))?;
    match state.objects.verify_link(&key, expires, sig) {
        Ok(()) => {}
        Err(VerifyError::NoSecret) => {
            return Err(ApiError::not_found("this gateway serves no object links"));
        }
        Err(VerifyError::Link(LinkError::Expired)) => {
            return Err(forbidden("the link has expired; ask for a new one"));
        }
        Err(VerifyError::Link(LinkError::BadSignature)) => {
            return Err(forbidden("the link's signature does not match"));
        }
    }
    let download = state.objects.get(&key).await.map_err(|e| match e {
        ObjectsError::NotFound(_) => ApiError::not_found("no such object"),
        other => {
            tracing::error!(%key, error = %other, "object store read failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the object store is unavailable; try again",
            )
        }
    })?;
    let remaining = (expires - chrono::Utc::now().timestamp()).max(0);
    let mut response = Body::from_stream(download.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&download.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(download.size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        crate::export::attachment(key.file_name()),
    );
    // Stored files are data, never pages of ours: no sniffing, no scripts (an SVG image).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("private, max-age={remaining}"))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store")),
    );
    Ok(response)
}
