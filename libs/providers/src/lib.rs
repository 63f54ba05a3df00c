//! HTTP clients for the providers tenants connect: Shopify and Pinterest (OAuth), Klaviyo,
//! Dynamic Mockups, Resend and Sky Pilot (API keys).
//!
//! Every client takes its base URL from configuration, so the same code talks to the real
//! provider in production and to `haven-fake-providers` in tests and the dev stack. Every
//! failure is a [`ProviderError`] that says whether a retry can help, and no error ever
//! carries a token, key or client secret: token-endpoint bodies are reduced to their OAuth
//! `error`/`error_description`, and other bodies are scrubbed of the credential that was sent.

mod error;
mod http;
mod token;

pub mod dynamic_mockups;
pub mod klaviyo;
pub mod pinterest;
pub mod pkce;
pub mod resend;
pub mod shopify;
pub mod sky_pilot;

use std::time::Duration;

pub use error::ProviderError;
pub use haven_vault::Secret;
pub use token::TokenSet;

/// Timeouts shared by every client.
///
/// A provider that hangs must not hold a refresher or an RPC forever; the connect timeout is
/// shorter so an unreachable host fails fast and the caller can retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whole-request deadline, body included.
    pub timeout: Duration,
    /// TCP + TLS connect deadline.
    pub connect_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}
