//! HTTP clients for the providers tenants connect: Shopify and Pinterest (OAuth), Klaviyo,
//! Dynamic Mockups, Resend and Sky Pilot (API keys), and Shopify's product catalogue (GraphQL,
//! paced by query cost).
//!
//! Every client takes its base URL from configuration, so the same code talks to the real
//! provider in production and to `haven-fake-providers` in tests and the dev stack. Every
//! failure is a [`ProviderError`] that says whether a retry can help, and no error ever
//! carries a token, key or client secret: token-endpoint bodies are reduced to their OAuth
//! `error`/`error_description`, and other bodies are scrubbed of the credential that was sent.
//!
//! The [`Provider`] enum is always available; the clients sit behind the default `clients`
//! feature, so the gateway can name providers without linking an HTTP client.

mod provider;

pub use provider::{Provider, UnknownProvider};

#[cfg(feature = "clients")]
mod error;
#[cfg(feature = "clients")]
mod http;
#[cfg(feature = "clients")]
mod token;

#[cfg(feature = "clients")]
pub mod dynamic_mockups;
#[cfg(feature = "clients")]
pub mod klaviyo;
#[cfg(feature = "clients")]
pub mod pinterest;
#[cfg(feature = "clients")]
pub mod pkce;
#[cfg(feature = "clients")]
pub mod resend;
#[cfg(feature = "clients")]
pub mod shopify;
#[cfg(feature = "clients")]
pub mod shopify_catalog;
#[cfg(feature = "clients")]
pub mod sky_pilot;

#[cfg(feature = "clients")]
use std::time::Duration;

#[cfg(feature = "clients")]
pub use error::ProviderError;
#[cfg(feature = "clients")]
pub use secrecy::{ExposeSecret, SecretString};
#[cfg(feature = "clients")]
pub use token::TokenSet;

/// Timeouts shared by every client.
///
/// A provider that hangs must not hold a refresher or an RPC forever; the connect timeout is
/// shorter so an unreachable host fails fast and the caller can retry.
#[cfg(feature = "clients")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whole-request deadline, body included.
    pub timeout: Duration,
    /// TCP + TLS connect deadline.
    pub connect_timeout: Duration,
}

#[cfg(feature = "clients")]
impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}
