use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::AuthArgs;
use haven_telemetry::TelemetryArgs;

/// haven-gateway: the HTTP edge. Authenticates users, turns REST calls into gRPC calls,
/// streams exports as downloads and ingests provider webhooks.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "haven-gateway", version, about, long_about = None)]
pub struct Config {
    /// Address the HTTP server listens on (also serves `/metrics`).
    #[arg(long, env = "HAVEN_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// gRPC URL of the integrations service.
    #[arg(
        long,
        env = "HAVEN_INTEGRATIONS_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub integrations_url: String,
    /// gRPC URL of the retry service.
    #[arg(
        long,
        env = "HAVEN_RETRY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub retry_url: String,
    /// gRPC URL of the export service.
    #[arg(
        long,
        env = "HAVEN_EXPORT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub export_url: String,
    /// How long `/readyz` waits for each upstream's health answer.
    #[arg(long, env = "HAVEN_GATEWAY_READY_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// How long in-flight requests (downloads included) may finish after SIGTERM.
    #[arg(long, env = "HAVEN_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Settings for tests: an ephemeral port and the given upstreams.
    pub fn for_test(
        jwt_secret: &str,
        integrations_url: String,
        retry_url: String,
        export_url: String,
    ) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            integrations_url,
            retry_url,
            export_url,
            ready_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            auth: AuthArgs::new(jwt_secret),
            telemetry: TelemetryArgs {
                log_filter: "info".into(),
                log_format: "text".into(),
                otlp_endpoint: None,
            },
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
