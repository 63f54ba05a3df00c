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
    /// Exports the service runs at once across all tenants; more get ResourceExhausted. Each
    /// holds a database connection, so it must stay below HAVEN_DATABASE_MAX_CONNECTIONS.
    #[arg(long, env = "HAVEN_EXPORT_MAX_CONCURRENT", default_value_t = 12)]
    pub max_concurrent: usize,
    /// How long a caller may take no data before its export is ended as failed (its query
    /// cancelled, its slot and connection freed).
    #[arg(long, env = "HAVEN_EXPORT_STALL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_timeout: std::time::Duration,
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
            max_concurrent: 12,
            stall_timeout: std::time::Duration::from_secs(60),
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
