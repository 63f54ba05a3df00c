use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic_types::StatusExt;

/// An error as the gateway's clients see it: `{ "error": "<message>", "code", "field"? }`
/// with the HTTP status each gRPC code maps to (README, "Gateway").
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// The input at fault, in the gateway's own parameter names, when one is.
    pub field: Option<String>,
    /// What is wrong, as shown; with a `field` it reads `field: what is wrong`.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    /// 400 for one bad input, named as the client sent it.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: format!("{}: {message}", field),
            field: Some(field),
        }
    }

    /// 400 about the request as a whole (a missing header, a body that is not JSON).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The same error with its field renamed by `rename` (upstream names → the gateway's).
    /// Only the field and the message's `field: ` prefix change: the rest of the message may
    /// quote user input and is never rewritten.
    pub fn rename_field(mut self, rename: impl Fn(&str) -> Option<&'static str>) -> Self {
        let Some(old) = self.field.take() else {
            return self;
        };
        let new = rename(&old).unwrap_or(&old).to_owned();
        if let Some(rest) = self.message.strip_prefix(&format!("{old}: ")) {
            self.message = format!("{new}: {rest}");
        }
        self.field = Some(new);
        self
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::FailedPrecondition | Code::Aborted => {
                (StatusCode::CONFLICT, "failed_precondition")
            }
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // Internal details stay in our logs, not in the client's hands.
        if http == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = ?status, "upstream failed");
            return ApiError::new(http, code, "internal error");
        }
        // A single field violation carries the field as data, so it can be renamed without
        // parsing (or rewriting) the message.
        let field = status
            .get_details_bad_request()
            .filter(|b| b.field_violations.len() == 1)
            .and_then(|mut b| b.field_violations.pop())
            .map(|v| v.field);
        ApiError {
            status: http,
            code,
            field,
            message: status.message().to_owned(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person: the seeds' pages show `data.error` as it is.
    pub error: String,
    /// Machine-readable kind, e.g. `invalid_argument`, `not_found`, `unauthenticated`.
    pub code: String,
    /// The input at fault, in the request's own parameter names, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}
