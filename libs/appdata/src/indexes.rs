//! Indexes that a large load drops and rebuilds, as the migrations define them: every
//! secondary index, and the primary keys no foreign key points at.
//!
//! A drop commits on its own (parallel COPYs cannot share one transaction), so a seed that
//! dies mid-load leaves a table without them; every seed therefore starts by rebuilding
//! whatever is missing, and each step is idempotent.

use sqlx::PgPool;

use crate::SeedError;

/// How an index is defined.
#[derive(Clone, Copy)]
enum Def {
    /// `CREATE INDEX IF NOT EXISTS ...`.
    Secondary(&'static str),
    /// A primary key on this column.
    Primary(&'static str),
}

/// (table, index or constraint name, definition), exactly as in `migrations/`; a test
/// checks that dropping and restoring them gives the migrated schema back.
const INDEXES: &[(&str, &str, Def)] = &[
    (
        "leads",
        "leads_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS leads_tenant_created ON app.leads (tenant_id, created_at DESC)",
        ),
    ),
    ("leads", "leads_pkey", Def::Primary("id")),
    (
        "customers",
        "customers_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS customers_tenant_created ON app.customers (tenant_id, created_at DESC)",
        ),
    ),
    (
        "customer_loyalty",
        "customer_loyalty_pkey",
        Def::Primary("customer_id"),
    ),
    (
        "customer_orders",
        "customer_orders_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS customer_orders_tenant_created ON app.customer_orders (tenant_id, created_at DESC)",
        ),
    ),
    (
        "customer_orders",
        "customer_orders_pkey",
        Def::Primary("id"),
    ),
    (
        "boards",
        "boards_tenant",
        Def::Secondary("CREATE INDEX IF NOT EXISTS boards_tenant ON app.boards (tenant_id)"),
    ),
    (
        "pins",
        "pins_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS pins_tenant_created ON app.pins (tenant_id, created_at DESC)",
        ),
    ),
    (
        "pin_analytics",
        "pin_analytics_pkey",
        Def::Primary("pin_id"),
    ),
    (
        "quotes",
        "quotes_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS quotes_tenant_created ON app.quotes (tenant_id, created_at DESC)",
        ),
    ),
    (
        "assets",
        "assets_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS assets_tenant_created ON app.assets (tenant_id, created_at DESC)",
        ),
    ),
    (
        "assets",
        "assets_quote",
        Def::Secondary("CREATE INDEX IF NOT EXISTS assets_quote ON app.assets (quote_id)"),
    ),
    ("assets", "assets_pkey", Def::Primary("id")),
    (
        "daily_metrics",
        "daily_metrics_tenant_date",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS daily_metrics_tenant_date ON app.daily_metrics (tenant_id, date DESC)",
        ),
    ),
];

/// Serialises DDL on one index between concurrent seeders (bind the index name).
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('haven.appdata.index.' || $1))";

/// Rows per heap page assumed for a table PostgreSQL has not analysed yet.
const ROWS_PER_PAGE: f64 = 50.0;

/// Drops `table`'s rebuildable indexes when loading `rows` at least doubles it; returns
/// whether any were dropped, i.e. whether [`restore`] must follow the load.
pub(crate) async fn drop_for_load(
    pool: &PgPool,
    table: &str,
    rows: u64,
) -> Result<bool, SeedError> {
    let own: Vec<&(&str, &str, Def)> = INDEXES.iter().filter(|(t, _, _)| *t == table).collect();
    if own.is_empty() {
        return Ok(false);
    }
    // Like the planner: the analysed density times the table's current size, so a table
    // filled since its last ANALYZE is not taken for empty.
    let existing: f64 = sqlx::query_scalar(
        "SELECT CASE WHEN c.relpages > 0 AND c.reltuples > 0
                     THEN c.reltuples / c.relpages ELSE $2 END
                * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
         FROM pg_class c WHERE c.oid = to_regclass('app.' || $1)",
    )
    .bind(table)
    .bind(ROWS_PER_PAGE)
    .fetch_one(pool)
    .await?;
    if (rows as f64) < existing {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    for (_, name, def) in own {
        sqlx::query(LOCK).bind(name).execute(&mut *tx).await?;
        let sql = match def {
            Def::Secondary(_) => format!("DROP INDEX IF EXISTS app.{name}"),
            Def::Primary(_) => format!("ALTER TABLE app.{table} DROP CONSTRAINT IF EXISTS {name}"),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Builds the indexes of `table` (of every table when `None`) that are missing, each on
/// its own connection so that one table's indexes are sorted side by side.
pub(crate) async fn restore(pool: &PgPool, table: Option<&str>) -> Result<(), SeedError> {
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'app'::regnamespace AND c.relkind = 'i'
         UNION ALL
         SELECT conname::text FROM pg_constraint
         WHERE connamespace = 'app'::regnamespace AND contype = 'p'",
    )
    .fetch_all(pool)
    .await?;
    let missing = INDEXES.iter().filter(|(t, name, def)| {
        table.is_none_or(|only| only == *t)
            && match def {
                // The constraint, not just its index: a crash may fall between the two.
                Def::Primary(_) => present.iter().filter(|p| p == name).count() < 2,
                Def::Secondary(_) => !present.iter().any(|p| p == name),
            }
    });
    let builds = missing.map(|&(table, name, def)| build(pool, table, name, def));
    for result in futures::future::join_all(builds).await {
        result?;
    }
    Ok(())
}

async fn build(pool: &PgPool, table: &str, name: &str, def: Def) -> Result<(), SeedError> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK).bind(name).execute(&mut *tx).await?;
    // One sort of the whole table; give it room to stay in memory.
    sqlx::raw_sql("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    match def {
        Def::Secondary(definition) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(definition))
                .execute(&mut *tx)
                .await?;
        }
        Def::Primary(column) => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_constraint
                 WHERE connamespace = 'app'::regnamespace AND conname = $1)",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                // A uuid key sorts cheaply: one process is enough, which leaves the
                // parallel workers to the other index building beside it.
                sqlx::raw_sql("SET LOCAL max_parallel_maintenance_workers = 0")
                    .execute(&mut *tx)
                    .await?;
                // Build the unique index under a share lock (the table's other index can
                // build beside it), then make it the key, which only needs a brief
                // exclusive lock.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {name} ON app.{table} ({column})"
                )))
                .execute(&mut *tx)
                .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE app.{table} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"
                )))
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
