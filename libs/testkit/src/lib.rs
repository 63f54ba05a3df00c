//! Real PostgreSQL and real `nats-server -js` for tests, on free loopback ports.
//!
//! The servers start once per test process (or once per test run: `./deploy/test` starts
//! them with the `testkit-infra` binary and passes `HAVEN_TEST_DATABASE_URL` and
//! `HAVEN_TEST_NATS_URL`). Each test then takes a fresh database ([`TestDb::new`]) and a
//! fresh NATS namespace ([`namespace`]), so tests run in parallel without seeing each
//! other. Servers this crate started are stopped, and their directories removed, when the
//! process exits.
#![allow(unsafe_code)] // fork/exec hooks and exit handlers need libc

mod process;
mod service;
mod shopify;

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

pub use process::{NatsServer, PostgresServer, S3Server, SERVER_PORTS};
pub use service::{
    JWT_SECRET, Running, all_tenants_token, channel, health, request, spawn, spawn_serving, token,
    token_for, wait_for, wait_health, wait_serving,
};
pub use shopify::connect_shopify;
pub use tonic_health::pb::health_check_response::ServingStatus;

/// Where the shared servers are.
#[derive(Clone, Debug)]
pub struct Infra {
    /// A superuser URL for creating test databases.
    pub database_url: String,
    pub nats_url: String,
}

/// The servers for this process: from the environment, or started on first use.
pub fn infra() -> &'static Infra {
    static INFRA: OnceLock<Infra> = OnceLock::new();
    INFRA.get_or_init(|| {
        let database_url = std::env::var("HAVEN_TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty());
        let nats_url = std::env::var("HAVEN_TEST_NATS_URL")
            .ok()
            .filter(|s| !s.is_empty());
        let database_url = database_url.unwrap_or_else(|| {
            process::keep_forever(
                PostgresServer::start().unwrap_or_else(|e| panic!("testkit: {e:#}")),
            )
        });
        let nats_url = nats_url.unwrap_or_else(|| {
            process::keep_forever(NatsServer::start().unwrap_or_else(|e| panic!("testkit: {e:#}")))
        });
        Infra {
            database_url,
            nats_url,
        }
    })
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn new() -> TestDb {
        let admin_url = infra().database_url.clone();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgConnectOptions::from_str(&admin_url)
            .expect("HAVEN_TEST_DATABASE_URL is not a postgres URL");
        let mut conn = connect_with_retry(&admin).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .expect("connect to test database");
        TestDb { name, url, pool }
    }
}

async fn connect_with_retry(options: &PgConnectOptions) -> sqlx::PgConnection {
    let mut last = None;
    for _ in 0..100 {
        match options.connect().await {
            Ok(conn) => return conn,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("testkit: PostgreSQL is not accepting connections: {last:?}");
}

/// `url` with its database path replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// The shared S3 protocol server's endpoint: `HAVEN_TEST_S3_ENDPOINT`, or a `moto_server`
/// started on first use.
pub fn s3_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            std::env::var("HAVEN_TEST_S3_ENDPOINT")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    process::keep_forever(
                        S3Server::start().unwrap_or_else(|e| panic!("testkit: {e:#}")),
                    )
                })
        })
        .clone()
}

/// A fresh, empty bucket on the shared S3 server, and the settings to reach it: the test's
/// own credentials are set in the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`), which any S3 client reads; moto accepts any.
pub async fn s3_bucket() -> (String, String) {
    let endpoint = s3_endpoint();
    let bucket = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let client = reqwest::Client::new();
    let mut last = None;
    for _ in 0..50 {
        match client.put(format!("{endpoint}/{bucket}")).send().await {
            Ok(r) if r.status().is_success() => return (endpoint, bucket),
            Ok(r) => last = Some(format!("HTTP {}", r.status())),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("testkit: cannot create bucket {bucket} at {endpoint}: {last:?}");
}

/// A fresh NATS namespace (subject and stream prefix) for one test.
pub fn namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// The shared NATS server's URL.
pub fn nats_url() -> String {
    infra().nats_url.clone()
}

/// Binds a listener on a free loopback port.
pub async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_database_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}

/// A shutdown switch for services run in-process: hand `wait()` to `serve`, `fire()` to stop.
#[derive(Clone, Debug)]
pub struct Switch(tokio::sync::watch::Sender<bool>);

impl Default for Switch {
    fn default() -> Self {
        Switch(tokio::sync::watch::channel(false).0)
    }
}

impl Switch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once `fire` has been called (at once if it already was).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}
