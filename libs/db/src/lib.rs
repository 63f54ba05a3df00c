//! PostgreSQL access shared by the services: a pool from `HAVEN_DATABASE_URL`, embedded
//! migrations into each service's own schema, and a readiness check.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use sqlx;

mod text_enum;
pub use text_enum::UnknownValue;

/// Database settings, shared by every binary's `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. `postgres://haven@127.0.0.1:15432/haven`.
    #[arg(id = "database_url",
        value_name = "URL", long = "database-url", env = "HAVEN_DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub url: SecretString,
    /// Most connections this process opens.
    #[arg(
        id = "database_max_connections",
        value_name = "N",
        long = "database-max-connections",
        env = "HAVEN_DATABASE_MAX_CONNECTIONS",
        default_value_t = 20
    )]
    pub max_connections: u32,
    /// How long to keep trying the first connection at start-up (PostgreSQL may be starting).
    #[arg(id = "database_connect_timeout",
        value_name = "DURATION", long = "database-connect-timeout", env = "HAVEN_DATABASE_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl DbArgs {
    pub fn new(url: impl Into<String>) -> Self {
        DbArgs {
            url: SecretString::from(url.into()),
            max_connections: 20,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrations of schema `{schema}` failed: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot create schema `{schema}`: {source}")]
    Schema { schema: String, source: sqlx::Error },
    #[error("invalid schema name `{0}`")]
    SchemaName(String),
}

/// The URL with its password replaced, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "[unparseable url]".into();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!(
            "{}://{user}:[redacted]@{}",
            &url[..scheme_end],
            &rest[at + 1..]
        ),
        None => url.to_owned(),
    }
}

/// Opens a pool, retrying the first connection until `connect_timeout`.
///
/// Every connection runs with `jit = off`. Our statements are short, or they are scans whose
/// expressions are a few column references, so JIT never pays for itself. It does cost
/// something, though: the estimated cost of a prepared statement's generic plan grows with
/// the table, and once it crosses `jit_above_cost`, every execution spends hundreds of
/// milliseconds in LLVM. With 1M items pending, that slowed the retry queue's claims from
/// about 3 ms to 150–400 ms.
pub async fn connect(args: &DbArgs) -> Result<PgPool, DbError> {
    let url = args.url.expose_secret();
    let options = PgConnectOptions::from_str(url)
        .map_err(|source| DbError::Connect {
            url: redact_url(url),
            source,
        })?
        .options([("jit", "off")]);
    let deadline = tokio::time::Instant::now() + args.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let result = PgPoolOptions::new()
            .max_connections(args.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match result {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(url = %redact_url(url), error = %e, "PostgreSQL not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(DbError::Connect {
                    url: redact_url(url),
                    source,
                });
            }
        }
    }
}

/// Runs `migrator` inside `schema`, keeping its bookkeeping table there too, so services
/// sharing one database never trip over each other's migration history.
pub async fn migrate(pool: &PgPool, schema: &str, mut migrator: Migrator) -> Result<(), DbError> {
    if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err(DbError::SchemaName(schema.to_owned()));
    }
    let schema_err = |source| DbError::Schema {
        schema: schema.to_owned(),
        source,
    };
    // Two replicas starting together would race on CREATE SCHEMA; serialise them.
    let mut tx = pool.begin().await.map_err(schema_err)?;
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock(hashtext('haven.schema.' || $1::text))::text AS "locked""#,
        schema
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(schema_err)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&mut *tx)
    .await
    .map_err(schema_err)?;
    tx.commit().await.map_err(schema_err)?;
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    // Unqualified names in a service's migrations land in its own schema: migrate over a
    // one-connection pool whose search_path is that schema.
    let options = (*pool.connect_options())
        .clone()
        .options([("search_path", schema)]);
    let migration_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(schema_err)?;
    let result = migrator.run(&migration_pool).await;
    migration_pool.close().await;
    result.map_err(|source| DbError::Migrate {
        schema: schema.to_owned(),
        source,
    })?;
    tracing::info!(schema, "migrations applied");
    Ok(())
}

/// True when the database answers a trivial query within a second.
pub async fn ready(pool: &PgPool) -> bool {
    let check = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(pool);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(1))
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_leave_redact_url() {
        assert_eq!(
            redact_url("postgres://haven:s3cret@db:5432/haven"),
            "postgres://haven:[redacted]@db:5432/haven"
        );
        assert_eq!(
            redact_url("postgres://haven@db/haven"),
            "postgres://haven@db/haven"
        );
    }
}
