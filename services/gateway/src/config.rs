use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::AuthArgs;
use haven_bus::NatsArgs;
use haven_telemetry::TelemetryArgs;
use secrecy::SecretString;

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
    /// Base URL of the web app; OAuth callbacks redirect the browser back to its
    /// `/dashboard/settings/integrations` page.
    #[arg(long, env = "HAVEN_APP_URL", default_value = "http://localhost:3000")]
    pub app_url: String,
    /// Origins of web apps allowed to call the API from a browser, comma-separated
    /// (`https://app.example.com,http://localhost:3000`); empty: same origin only.
    #[arg(long, env = "HAVEN_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// The Shopify app's client secret, which Shopify signs webhooks with. Without it
    /// `POST /api/webhooks/shopify` answers 503 (Shopify retries).
    #[arg(
        long = "shopify-client-secret",
        env = "HAVEN_SHOPIFY_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub shopify_client_secret: Option<SecretString>,
    /// How long a webhook's body may take to arrive; a slower sender gets 408 and its
    /// connection back, so idle senders cannot hold buffers open.
    #[arg(long, env = "HAVEN_WEBHOOK_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_read_timeout: Duration,
    /// How long `/readyz` waits for each upstream's health answer.
    #[arg(long, env = "HAVEN_GATEWAY_READY_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// How long in-flight requests (downloads included) may finish after SIGTERM.
    #[arg(long, env = "HAVEN_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Verified webhooks are published here.
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Secret an external scheduler sends as `Authorization: Bearer …` to
    /// `GET /api/statistics-export/daily`; unset, that route does not exist.
    #[arg(
        long = "cron-secret",
        env = "HAVEN_CRON_SECRET",
        hide_env_values = true
    )]
    pub cron_secret: Option<SecretString>,
    /// The gateway's own credential for the calls it makes for the cron route.
    #[command(flatten)]
    pub service_token: haven_auth::ServiceTokenArgs,
    /// The store behind `/api/objects/` links (the export service's, with the same secret).
    #[command(flatten)]
    pub objects: haven_objects::ObjectsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Settings for tests: an ephemeral port, the given NATS and upstreams, no Shopify
    /// secret (see [`Config::with_shopify_client_secret`]).
    pub fn for_test(
        jwt_secret: &str,
        nats: NatsArgs,
        integrations_url: String,
        retry_url: String,
        export_url: String,
    ) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            integrations_url,
            retry_url,
            export_url,
            app_url: "http://localhost:3000".into(),
            cors_origins: String::new(),
            shopify_client_secret: None,
            webhook_read_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            nats,
            auth: AuthArgs::new(jwt_secret),
            cron_secret: None,
            service_token: haven_auth::ServiceTokenArgs {
                service_token: None,
            },
            objects: haven_objects::ObjectsArgs::memory(
                "gateway-default",
                "gateway-test-object-link-secret-0123456789",
                "http://localhost:8080",
            ),
            telemetry: TelemetryArgs {
                log_filter: "info".into(),
                log_format: "text".into(),
                otlp_endpoint: None,
            },
        }
    }

    /// The same settings with webhooks verified against `secret`.
    pub fn with_shopify_client_secret(mut self, secret: &str) -> Self {
        self.shopify_client_secret = Some(SecretString::from(secret));
        self
    }

    /// The same settings with another webhook body read timeout.
    pub fn with_webhook_read_timeout(mut self, timeout: Duration) -> Self {
        self.webhook_read_timeout = timeout;
        self
    }

    /// The same settings letting pages of `origins` (comma-separated) call the API.
    pub fn with_cors_origins(mut self, origins: &str) -> Self {
        self.cors_origins = origins.to_owned();
        self
    }

    /// The same settings with the cron route enabled by `secret`.
    pub fn with_cron_secret(mut self, secret: &str) -> Self {
        self.cron_secret = Some(SecretString::from(secret));
        self
    }

    /// The same settings serving links to `objects`.
    pub fn with_objects(mut self, objects: haven_objects::ObjectsArgs) -> Self {
        self.objects = objects;
        self
    }

    /// The same settings redirecting OAuth callbacks to `app_url`.
    pub fn with_app_url(mut self, app_url: &str) -> Self {
        self.app_url = app_url.to_owned();
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }

    #[test]
    fn the_shopify_secret_never_prints() {
        let config = super::Config::for_test(
            "x",
            haven_bus::NatsArgs::new("nats://127.0.0.1:9", ""),
            String::new(),
            String::new(),
            String::new(),
        )
        .with_shopify_client_secret("shpss_very_secret");
        assert!(!format!("{config:?}").contains("shpss_very_secret"));
    }
}
