//! The start-up every gRPC service shares: configuration, database and migrations, the bus
//! and its streams, metrics, and readiness.

use std::time::Duration;

use haven_auth::AuthArgs;
use haven_bus::{Bus, BusError, NatsArgs, StreamSpec};
use haven_db::{DbArgs, DbError};
use haven_telemetry::TelemetryArgs;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{GrpcServer, ServerError, poll_readiness, spawn_metrics};

/// Settings every gRPC service reads, documented in each binary's `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// How long in-flight calls may finish after SIGTERM before they are cut off.
    #[arg(long, env = "HAVEN_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl CommonArgs {
    /// Settings for tests and embedding: everything explicit, nothing from the environment.
    pub fn new(database_url: &str, nats_url: &str, nats_prefix: &str, jwt_secret: &str) -> Self {
        CommonArgs {
            db: DbArgs::new(database_url),
            nats: NatsArgs::new(nats_url, nats_prefix),
            auth: AuthArgs::new(jwt_secret),
            telemetry: TelemetryArgs {
                log_filter: "info".into(),
                log_format: "text".into(),
                otlp_endpoint: None,
            },
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Auth(#[from] haven_auth::AuthError),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// What a service owns, given to [`Base::start`].
pub struct ServiceSpec {
    /// The process name, e.g. `haven-retry`.
    pub name: &'static str,
    /// The schema its migrations own.
    pub schema: &'static str,
    pub migrator: Migrator,
    /// Streams it owns; re-created whenever the bus reconnects (a NATS that lost its store
    /// gets them back without a restart of ours).
    pub streams: Vec<StreamSpec>,
}

/// A started service's shared parts.
#[derive(Clone)]
pub struct Base {
    pub name: &'static str,
    pub pool: PgPool,
    pub bus: Bus,
    pub token: CancellationToken,
    db_ready: watch::Receiver<bool>,
    grace: Duration,
    verifier: haven_auth::Verifier,
}

impl Base {
    /// Connects to PostgreSQL and NATS, migrates, creates streams and starts `/metrics`.
    pub async fn start(
        spec: ServiceSpec,
        args: &CommonArgs,
        metrics_addr: &str,
        token: CancellationToken,
    ) -> Result<Base, StartError> {
        let verifier = args.auth.verifier()?;
        let pool = haven_db::connect(&args.db).await?;
        haven_db::migrate(&pool, spec.schema, spec.migrator).await?;
        let bus = Bus::connect(&args.nats.config(spec.name)?).await?;
        for stream in &spec.streams {
            bus.ensure_stream(stream).await?;
        }
        spawn_stream_keeper(bus.clone(), spec.streams, token.clone());
        let metrics = spawn_metrics(metrics_addr, token.clone()).await?;
        tracing::info!(service = spec.name, %metrics, "metrics endpoint listening");
        let db_ready = {
            let pool = pool.clone();
            poll_readiness(Duration::from_secs(2), token.clone(), move || {
                let pool = pool.clone();
                async move { haven_db::ready(&pool).await }
            })
        };
        Ok(Base {
            name: spec.name,
            pool,
            bus,
            token,
            db_ready,
            grace: args.shutdown_grace,
            verifier,
        })
    }

    /// A gRPC server whose health follows the database and the bus.
    pub fn grpc(&self) -> GrpcServer {
        GrpcServer::new(self.name, self.verifier.clone())
            .readiness(self.db_ready.clone())
            .readiness(self.bus.connected())
            .grace(self.grace)
    }
}

fn spawn_stream_keeper(bus: Bus, streams: Vec<StreamSpec>, token: CancellationToken) {
    tokio::spawn(async move {
        bus.each_reconnect(token.cancelled(), || async {
            for stream in &streams {
                if let Err(e) = bus.ensure_stream(stream).await {
                    tracing::warn!(error = %e, "cannot re-create stream after reconnect");
                }
            }
        })
        .await;
    });
}
