//! Identity for every Haven call: JWT verification, the [`Principal`] it yields, a tower
//! layer that guards tonic and axum services alike, and token minting for dev and tests.
//!
//! Services never trust a tenant id taken from a request body: they take it from the
//! [`Principal`] this crate puts into the request extensions.

mod claims;
mod layer;
mod verify;

pub use claims::{Claims, Principal, Role, RoleParseError};
pub use layer::{AuthLayer, AuthService, GrpcRejection, JsonRejection, Rejection, principal_of};
pub use verify::{AuthError, MIN_SECRET_LEN, Minter, Verifier};

/// Token settings, shared by every binary's `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthArgs {
    /// Shared HS256 secret for Haven JWTs (at least 32 bytes).
    #[arg(long = "jwt-secret", env = "HAVEN_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: secrecy::SecretString,
    /// Optional PEM file with an RS256 public key whose tokens are also accepted.
    #[arg(long = "jwt-public-key-file", env = "HAVEN_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    pub fn new(secret: impl Into<String>) -> Self {
        AuthArgs {
            jwt_secret: secrecy::SecretString::from(secret.into()),
            jwt_public_key_file: None,
        }
    }

    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        use secrecy::ExposeSecret;
        let verifier = Verifier::hs256(self.jwt_secret.expose_secret().as_bytes())?;
        match &self.jwt_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    AuthError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                verifier.with_rs256_pem(&pem)
            }
            None => Ok(verifier),
        }
    }
}

/// clap parser that keeps a secret wrapped from the moment it is read.
pub fn parse_secret(s: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(secrecy::SecretString::from(s))
}
