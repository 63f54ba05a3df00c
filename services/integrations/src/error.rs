//! What can go wrong, typed, and how each case reaches a gRPC caller.

use haven_providers::ProviderError;
use haven_vault::VaultError;

/// An integrations failure. Messages are shown to users: they say what to do and never carry
/// a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such integration (or step) for the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The integration is not in a state that allows this (e.g. not connected, expired).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The provider refused or failed; `context` says what we were doing.
    #[error("{context}: {source}")]
    Provider {
        context: String,
        #[source]
        source: ProviderError,
    },
    /// A stored credential cannot be opened (wrong owner, missing key, tampering).
    #[error("stored credential is unreadable: {0}")]
    Vault(#[from] VaultError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("message bus error: {0}")]
    Bus(#[from] haven_bus::BusError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn provider(context: impl Into<String>, source: ProviderError) -> Self {
        Error::Provider {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Status;
        match &err {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Provider { source, .. } if source.is_retryable() => {
                Status::unavailable(err.to_string())
            }
            Error::Provider { .. } => Status::failed_precondition(err.to_string()),
            Error::Vault(e) => {
                tracing::error!(error = %e, "credential cannot be decrypted");
                Status::failed_precondition(
                    "the stored credential cannot be decrypted; reconnect the integration",
                )
            }
            // A stored value this code cannot read (e.g. a status it does not know) is a bug
            // or a newer writer, not an outage: say which value, do not invite a retry.
            Error::Db(e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))) => {
                tracing::error!(error = %e, "stored data is unreadable");
                Status::internal(format!("stored data is unreadable: {e}"))
            }
            Error::Db(e) => {
                tracing::error!(error = %e, "database error");
                Status::unavailable("database unavailable; try again")
            }
            Error::Bus(e) => {
                tracing::error!(error = %e, "bus error");
                Status::unavailable("message bus unavailable; try again")
            }
        }
    }
}
