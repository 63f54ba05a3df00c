use std::net::SocketAddr;

use haven_server::CommonArgs;

/// haven-integrations: Tenant connections to Shopify, Pinterest, Klaviyo, Dynamic Mockups, Resend and Sky Pilot: OAuth and API keys, the encrypted credential vault, token lifecycle, webhooks and setup progress.
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
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// Settings for tests: the given servers, ephemeral ports.
    pub fn for_test(common: CommonArgs) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: "127.0.0.1:0".into(),
            common,
        }
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
