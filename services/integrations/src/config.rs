use std::net::SocketAddr;
use std::time::Duration;

use haven_server::CommonArgs;
use haven_vault::VaultArgs;
use secrecy::SecretString;

/// haven-integrations: tenant connections to Shopify, Pinterest, Klaviyo, Dynamic Mockups,
/// Resend and Sky Pilot: OAuth and API keys, the encrypted credential vault, token
/// lifecycle, webhooks and setup progress.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "haven-integrations", version, about, long_about = None)]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(
        long,
        env = "HAVEN_INTEGRATIONS_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        env = "HAVEN_INTEGRATIONS_METRICS_ADDR",
        default_value = "127.0.0.1:9151"
    )]
    pub metrics_addr: String,
    /// Public base URL of the gateway: OAuth callbacks go to
    /// `<url>/api/integrations/<provider>/callback`, Shopify webhooks to `<url>/api/webhooks/shopify`.
    #[arg(
        long,
        env = "HAVEN_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,
    /// Tokens expiring within this window are renewed by the background refresher.
    #[arg(long, env = "HAVEN_INTEGRATIONS_REFRESH_LEAD", default_value = "10m", value_parser = humantime::parse_duration)]
    pub refresh_lead: Duration,
    /// How often the background refresher looks for expiring tokens.
    #[arg(long, env = "HAVEN_INTEGRATIONS_REFRESH_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    #[command(flatten)]
    pub providers: ProviderArgs,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Provider apps and endpoints. Base URLs exist so tests and the dev stack can point the
/// clients at local fakes.
#[derive(Clone, Debug, clap::Args)]
pub struct ProviderArgs {
    /// Shopify app client id.
    #[arg(long, env = "HAVEN_SHOPIFY_CLIENT_ID", default_value = "")]
    pub shopify_client_id: String,
    /// Shopify app client secret (also signs OAuth callbacks and webhooks).
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub shopify_client_secret: SecretString,
    /// Scopes requested from Shopify, comma-separated.
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_SCOPES",
        value_delimiter = ',',
        default_value = "read_products,write_products,read_orders,read_customers,write_customers,read_inventory,write_inventory,read_content,write_content"
    )]
    pub shopify_scopes: Vec<String>,
    /// Shopify Admin API version.
    #[arg(long, env = "HAVEN_SHOPIFY_API_VERSION", default_value = "2025-10")]
    pub shopify_api_version: String,
    /// Base URL of a shop, `{shop}` replaced by its *.myshopify.com domain.
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_URL_TEMPLATE",
        default_value = "https://{shop}"
    )]
    pub shopify_url_template: String,
    /// Pinterest app client id.
    #[arg(long, env = "HAVEN_PINTEREST_CLIENT_ID", default_value = "")]
    pub pinterest_client_id: String,
    /// Pinterest app client secret.
    #[arg(
        long,
        env = "HAVEN_PINTEREST_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub pinterest_client_secret: SecretString,
    /// Scopes requested from Pinterest, comma-separated.
    #[arg(
        long,
        env = "HAVEN_PINTEREST_SCOPES",
        value_delimiter = ',',
        default_value = "boards:read,boards:write,pins:read,pins:write,user_accounts:read,ads:read,ads:write"
    )]
    pub pinterest_scopes: Vec<String>,
    /// Pinterest API base URL.
    #[arg(
        long,
        env = "HAVEN_PINTEREST_API_URL",
        default_value = "https://api.pinterest.com/v5"
    )]
    pub pinterest_api_url: String,
    /// Pinterest authorization page.
    #[arg(
        long,
        env = "HAVEN_PINTEREST_AUTHORIZE_URL",
        default_value = "https://www.pinterest.com/oauth/"
    )]
    pub pinterest_authorize_url: String,
    /// Klaviyo API base URL.
    #[arg(
        long,
        env = "HAVEN_KLAVIYO_URL",
        default_value = "https://a.klaviyo.com"
    )]
    pub klaviyo_url: String,
    /// Dynamic Mockups API base URL.
    #[arg(
        long,
        env = "HAVEN_DYNAMIC_MOCKUPS_URL",
        default_value = "https://app.dynamicmockups.com/api/v1"
    )]
    pub dynamic_mockups_url: String,
    /// Resend API base URL.
    #[arg(
        long,
        env = "HAVEN_RESEND_URL",
        default_value = "https://api.resend.com"
    )]
    pub resend_url: String,
    /// Sky Pilot API base URL.
    #[arg(
        long,
        env = "HAVEN_SKY_PILOT_URL",
        default_value = "https://api.skypilotapp.com"
    )]
    pub sky_pilot_url: String,
    /// Timeout of one provider HTTP call.
    #[arg(long, env = "HAVEN_PROVIDER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,
}

impl Config {
    /// Settings for tests: the given servers, ephemeral ports, a fresh random vault key and
    /// the providers' real base URLs (replace them with [`Config::with_providers`]).
    pub fn for_test(common: CommonArgs) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: "127.0.0.1:0".into(),
            public_url: "http://localhost:8080".into(),
            refresh_lead: Duration::from_secs(600),
            refresh_interval: Duration::from_secs(60),
            providers: ProviderArgs::defaults(),
            vault: VaultArgs {
                keys: haven_vault::KeyRing::random("test"),
            },
            common,
        }
    }

    /// The same settings with these providers.
    pub fn with_providers(mut self, providers: ProviderArgs) -> Self {
        self.providers = providers;
        self
    }

    /// The same settings with this key ring.
    pub fn with_vault(mut self, keys: haven_vault::KeyRing) -> Self {
        self.vault = VaultArgs { keys };
        self
    }
}

impl ProviderArgs {
    /// Every provider setting at its default (real endpoints, no app credentials).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            providers: ProviderArgs,
        }
        <Only as clap::Parser>::parse_from(["defaults"]).providers
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
