//! Identity for every Haven call: JWT verification, the [`Principal`] it yields, a tower
//! layer that guards tonic and axum services alike, and token minting for dev and tests.
//!
//! Services never trust a tenant id taken from a request body: they take it from the
//! [`Principal`] this crate puts into the request extensions.

mod claims;
mod layer;
mod service;
mod verify;

pub use claims::{
    AUDIENCE_INTERNAL, AUDIENCE_USERS, Audience, Claims, Principal, Role, RoleParseError,
    TenantScope,
};
pub use layer::{AuthLayer, AuthService, GrpcRejection, JsonRejection, Rejection, principal_of};
pub use service::{ServiceCredentials, ServiceTokenArgs};
pub use verify::{
    AuthError, DEFAULT_MAX_TTL, MAX_AUTHORIZATION_LEN, MIN_SECRET_LEN, Minter, Verifier,
};

/// Token settings, shared by every binary's `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthArgs {
    /// Shared HS256 secret for Haven JWTs (at least 32 bytes). Optional where
    /// HAVEN_JWT_PUBLIC_KEY_FILE is set: a process without it verifies RS256 tokens only and
    /// holds no key that can mint one.
    #[arg(long = "jwt-secret", env = "HAVEN_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<secrecy::SecretString>,
    /// Optional PEM file with an RS256 public key whose tokens are also accepted.
    #[arg(long = "jwt-public-key-file", env = "HAVEN_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// The longest lifetime (`exp - iat`) a token may have.
    #[arg(long = "jwt-max-ttl", env = "HAVEN_JWT_MAX_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub jwt_max_ttl: std::time::Duration,
}

impl AuthArgs {
    pub fn new(secret: impl Into<String>) -> Self {
        AuthArgs {
            jwt_secret: Some(secrecy::SecretString::from(secret.into())),
            jwt_public_key_file: None,
            jwt_max_ttl: DEFAULT_MAX_TTL,
        }
    }

    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        use secrecy::ExposeSecret;
        let pem =
            match &self.jwt_public_key_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    AuthError::Config(format!("cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
        let verifier = match (&self.jwt_secret, pem) {
            (Some(secret), None) => Verifier::hs256(secret.expose_secret().as_bytes())?,
            (Some(secret), Some(pem)) => {
                Verifier::hs256(secret.expose_secret().as_bytes())?.with_rs256_pem(&pem)?
            }
            (None, Some(pem)) => Verifier::rs256_pem(&pem)?,
            (None, None) => {
                return Err(AuthError::Config(
                    "set HAVEN_JWT_SECRET (HS256) or HAVEN_JWT_PUBLIC_KEY_FILE (RS256), or both"
                        .into(),
                ));
            }
        };
        Ok(verifier.with_max_ttl(self.jwt_max_ttl))
    }
}

/// clap parser that keeps a secret wrapped from the moment it is read.
pub fn parse_secret(s: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(secrecy::SecretString::from(s))
}
