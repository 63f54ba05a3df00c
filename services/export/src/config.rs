use std::net::SocketAddr;

use haven_server::CommonArgs;

/// haven-export: Data exports: the catalogue of export types, typed and rendered row streams, export history and scheduled exports.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "haven-export", version, about, long_about = None)]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "HAVEN_EXPORT_ADDR", default_value = "127.0.0.1:50053")]
    pub addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        env = "HAVEN_EXPORT_METRICS_ADDR",
        default_value = "127.0.0.1:9153"
    )]
    pub metrics_addr: String,
    /// Row limits per type, overriding the catalogue's defaults, e.g. `orders=2000000,leads=100000`.
    #[arg(long, env = "HAVEN_EXPORT_MAX_RECORDS", default_value = "")]
    pub max_records: String,
    /// Exports one tenant may run at once; more get ResourceExhausted.
    #[arg(
        long,
        env = "HAVEN_EXPORT_MAX_CONCURRENT_PER_TENANT",
        default_value_t = 4
    )]
    pub max_concurrent_per_tenant: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// Settings for tests: the given servers, ephemeral ports.
    pub fn for_test(common: CommonArgs) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: "127.0.0.1:0".into(),
            max_records: String::new(),
            max_concurrent_per_tenant: 4,
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
