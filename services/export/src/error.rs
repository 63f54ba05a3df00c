//! Everything that can go wrong in the export service, mapped to a gRPC status in one place.

use tonic::Status;

use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A documented value that is not served yet.
    #[error("{0}")]
    Unimplemented(&'static str),
    /// Unknown, or another tenant's: the same answer for both.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// Too many exports at once, for the tenant or the service.
    #[error("{0}")]
    Busy(String),
    /// More rows match than one export may hold, where cutting the file would mislead.
    #[error("{0}")]
    TooLarge(String),
    /// The caller took no data for this long.
    #[error("the client took no data for {} s; the export was ended", .0.as_secs())]
    Stalled(std::time::Duration),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The object store refused or failed.
    #[error("object store: {0}")]
    Storage(String),
}

impl ExportError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ExportError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<ExportError> for Status {
    fn from(e: ExportError) -> Status {
        match e {
            ExportError::Invalid { field, message } => {
                haven_server::invalid_argument(field, message)
            }
            ExportError::Unimplemented(m) => Status::unimplemented(m),
            ExportError::NotFound(m) => Status::not_found(m),
            ExportError::PermissionDenied(m) => Status::permission_denied(m),
            ExportError::Busy(m) => Status::resource_exhausted(m),
            ExportError::TooLarge(m) => Status::failed_precondition(m),
            e @ ExportError::Stalled(_) => Status::deadline_exceeded(e.to_string()),
            // A row this version cannot read (e.g. a status written by a newer one).
            ExportError::Database(e @ sqlx::Error::ColumnDecode { .. }) => {
                tracing::error!(error = %e, "exports hold a value this version cannot read");
                Status::internal(format!("a stored value this version cannot read: {e}"))
            }
            ExportError::Database(e) => {
                tracing::error!(error = %e, "export query failed");
                Status::unavailable("the export query failed; try again")
            }
            ExportError::Render(e) => {
                tracing::error!(error = %e, "export rendering failed");
                Status::internal(e.to_string())
            }
            ExportError::Storage(e) => {
                tracing::error!(error = %e, "object store failed");
                Status::unavailable("the object store is unavailable; try again")
            }
        }
    }
}

impl From<crate::statistics::StatError> for Status {
    fn from(e: crate::statistics::StatError) -> Status {
        use crate::statistics::StatError;
        use haven_providers::shopify_catalog::CatalogError;
        match e {
            StatError::NotFound(m) => Status::not_found(m),
            StatError::NoShop(m) => Status::failed_precondition(format!(
                "the tenant has no connected Shopify shop ({m}); connect one first"
            )),
            StatError::Catalog(CatalogError::TokenRefused) => {
                Status::failed_precondition("Shopify refused the shop's token; reconnect the shop")
            }
            StatError::Catalog(e) if e.is_retryable() => {
                Status::unavailable(format!("{e}; try again"))
            }
            StatError::Catalog(e) => Status::failed_precondition(e.to_string()),
            StatError::Integrations(m) => {
                tracing::error!(error = %m, "integrations service call failed");
                Status::unavailable("the integrations service is unavailable; try again")
            }
            StatError::Objects(e) => {
                tracing::error!(error = %e, "object store failed");
                Status::unavailable("the object store is unavailable; try again")
            }
            StatError::Database(e) => ExportError::Database(e).into(),
            e @ (StatError::Render(_) | StatError::Lost) => {
                tracing::error!(error = %e, "statistics export failed");
                Status::internal("internal error")
            }
        }
    }
}
