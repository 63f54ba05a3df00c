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
    /// The integrations service, which lists the connected Shopify shops and hands out
    /// their tokens for the daily product statistics.
    #[arg(
        long,
        env = "HAVEN_INTEGRATIONS_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub integrations_url: String,
    /// Shopify Admin API base, `{shop}` replaced by the shop's domain (tests and the dev
    /// stack point it at the fake providers).
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_URL_TEMPLATE",
        default_value = "https://{shop}"
    )]
    pub shopify_url_template: String,
    /// Shopify Admin API version of the catalogue query.
    #[arg(long, env = "HAVEN_SHOPIFY_API_VERSION", default_value = "2025-10")]
    pub shopify_api_version: String,
    /// Images or variants a statistics run handles at once.
    #[arg(long, env = "HAVEN_STATISTICS_CONCURRENCY", default_value_t = 8)]
    pub statistics_concurrency: usize,
    /// Start the day's statistics run at 00:00 UTC (once per day across replicas).
    #[arg(long, env = "HAVEN_STATISTICS_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub statistics_scheduler: bool,
    /// A statistics run whose replica has shown no sign of life for this long is taken
    /// over and resumed by another.
    #[arg(long, env = "HAVEN_STATISTICS_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub statistics_lease: std::time::Duration,
    /// Lifetime of links to stored statistics files.
    #[arg(long, env = "HAVEN_STATISTICS_LINK_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub statistics_link_ttl: std::time::Duration,
    /// Run scheduled exports (claim due slots and run them); off for a replica that should
    /// only serve calls.
    #[arg(long, env = "HAVEN_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// How often the scheduler looks for due slots.
    #[arg(long, env = "HAVEN_SCHEDULER_TICK", default_value = "15s", value_parser = humantime::parse_duration)]
    pub scheduler_tick: std::time::Duration,
    /// A claimed scheduled export whose replica has not renewed it for this long (the replica
    /// died mid-export or mid-send) is taken over by another.
    #[arg(long, env = "HAVEN_SCHEDULER_LEASE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub scheduler_lease: std::time::Duration,
    /// The scheduler's clock: the system's, or one a test moves by hand.
    #[arg(skip)]
    pub clock: crate::schedule::Clock,
    /// Resend's API base, for scheduled exports delivered by email.
    #[arg(
        long,
        env = "HAVEN_RESEND_URL",
        default_value = "https://api.resend.com"
    )]
    pub resend_url: String,
    /// From address of scheduled-export emails (a domain verified in the tenant's Resend).
    #[arg(
        long,
        env = "HAVEN_EMAIL_FROM",
        default_value = "Haven Exports <exports@havenhold.com>"
    )]
    pub email_from: String,
    /// Largest file attached to a scheduled-export email, in bytes; larger ones are sent as a
    /// signed link (Resend takes 40 MB of attachments after base64).
    #[arg(long, env = "HAVEN_EMAIL_ATTACHMENT_LIMIT", default_value_t = 20 * 1024 * 1024)]
    pub email_attachment_limit: u64,
    #[command(flatten)]
    pub objects: haven_objects::ObjectsArgs,
    #[command(flatten)]
    pub service_token: haven_auth::ServiceTokenArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// Settings for tests: the given servers, ephemeral ports, a memory object store of its
    /// own, no statistics scheduler.
    pub fn for_test(common: CommonArgs) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: "127.0.0.1:0".into(),
            max_records: String::new(),
            max_concurrent_per_tenant: 4,
            max_concurrent: 12,
            stall_timeout: std::time::Duration::from_secs(60),
            integrations_url: "http://127.0.0.1:9".into(),
            shopify_url_template: "https://{shop}".into(),
            shopify_api_version: "2025-10".into(),
            statistics_concurrency: 8,
            statistics_scheduler: false,
            statistics_lease: std::time::Duration::from_secs(60),
            statistics_link_ttl: std::time::Duration::from_secs(3600),
            scheduler: true,
            resend_url: "https://api.resend.com".into(),
            email_from: "Haven Exports <exports@havenhold.com>".into(),
            email_attachment_limit: 20 * 1024 * 1024,
            scheduler_tick: std::time::Duration::from_millis(200),
            scheduler_lease: std::time::Duration::from_secs(60),
            clock: crate::schedule::Clock::System,
            objects: haven_objects::ObjectsArgs::memory(
                &uuid::Uuid::new_v4().simple().to_string(),
                "export-test-object-link-secret-0123456789",
                "http://localhost:8080",
            ),
            service_token: haven_auth::ServiceTokenArgs {
                service_token: None,
            },
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
