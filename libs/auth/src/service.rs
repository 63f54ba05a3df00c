//! A service's own identity for calls to other services (the export service reading shops and
//! their tokens from the integrations service, the gateway starting the daily run for a cron
//! caller): a fixed service token, or short-lived ones minted from the shared HS256 secret.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{AuthArgs, AuthError, Claims, Minter, Role};

/// Lifetime of a minted token: short, since one is minted per call.
const MINTED_TTL: Duration = Duration::from_secs(300);

/// How this process authenticates to other services.
#[derive(Clone, Debug, clap::Args)]
pub struct ServiceTokenArgs {
    /// Bearer token for calls to other services (`havenctl token --role service
    /// --all-tenants`). Without it, short-lived ones are minted from HAVEN_JWT_SECRET.
    #[arg(
        long = "service-token",
        env = "HAVEN_SERVICE_TOKEN",
        hide_env_values = true,
        value_parser = crate::parse_secret
    )]
    pub service_token: Option<SecretString>,
}

/// Hands out a bearer token for each outgoing call.
#[derive(Clone)]
pub struct ServiceCredentials {
    source: Source,
    name: String,
}

#[derive(Clone)]
enum Source {
    Fixed(SecretString),
    Minted(Minter),
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    /// `name` is the `sub` of minted tokens, so the callee's logs say who called.
    pub fn new(
        args: &ServiceTokenArgs,
        auth: &AuthArgs,
        name: &str,
    ) -> Result<ServiceCredentials, AuthError> {
        let source = match (&args.service_token, &auth.jwt_secret) {
            (Some(token), _) => Source::Fixed(token.clone()),
            (None, Some(secret)) => {
                Source::Minted(Minter::hs256(secret.expose_secret().as_bytes())?)
            }
            (None, None) => {
                return Err(AuthError::Config(
                    "calls to other services need HAVEN_SERVICE_TOKEN or HAVEN_JWT_SECRET".into(),
                ));
            }
        };
        Ok(ServiceCredentials {
            source,
            name: name.to_owned(),
        })
    }

    /// `Bearer …` for the `authorization` header of one call.
    pub fn authorization(&self) -> Result<SecretString, AuthError> {
        let token = match &self.source {
            Source::Fixed(token) => token.expose_secret().to_owned(),
            Source::Minted(minter) => minter.mint(
                &Claims::new(
                    Uuid::nil(),
                    self.name.clone(),
                    vec![Role::Service],
                    MINTED_TTL,
                )
                .for_all_tenants(),
            )?,
        };
        Ok(SecretString::from(format!("Bearer {token}")))
    }
}
