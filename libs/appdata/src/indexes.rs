//! Secondary indexes that a large load drops and rebuilds, as the migrations define them.
//!
//! A drop commits on its own (parallel COPYs cannot share one transaction), so a seed that
//! dies mid-load leaves a table without them; every seed therefore starts by rebuilding
//! whatever is missing, and `IF NOT EXISTS` makes that idempotent.

use sqlx::PgPool;

use crate::SeedError;

/// (table, index, definition), exactly as in `migrations/`; a test checks they agree.
pub(crate) const SECONDARY: &[(&str, &str, &str)] = &[
    (
        "leads",
        "leads_tenant_created",
        "CREATE INDEX IF NOT EXISTS leads_tenant_created ON app.leads (tenant_id, created_at DESC)",
    ),
    (
        "customers",
        "customers_tenant_created",
        "CREATE INDEX IF NOT EXISTS customers_tenant_created ON app.customers (tenant_id, created_at DESC)",
    ),
    (
        "customer_orders",
        "customer_orders_tenant_created",
        "CREATE INDEX IF NOT EXISTS customer_orders_tenant_created ON app.customer_orders (tenant_id, created_at DESC)",
    ),
    (
        "boards",
        "boards_tenant",
        "CREATE INDEX IF NOT EXISTS boards_tenant ON app.boards (tenant_id)",
    ),
    (
        "pins",
        "pins_tenant_created",
        "CREATE INDEX IF NOT EXISTS pins_tenant_created ON app.pins (tenant_id, created_at DESC)",
    ),
    (
        "quotes",
        "quotes_tenant_created",
        "CREATE INDEX IF NOT EXISTS quotes_tenant_created ON app.quotes (tenant_id, created_at DESC)",
    ),
    (
        "assets",
        "assets_tenant_created",
        "CREATE INDEX IF NOT EXISTS assets_tenant_created ON app.assets (tenant_id, created_at DESC)",
    ),
    (
        "assets",
        "assets_quote",
        "CREATE INDEX IF NOT EXISTS assets_quote ON app.assets (quote_id)",
    ),
    (
        "daily_metrics",
        "daily_metrics_tenant_date",
        "CREATE INDEX IF NOT EXISTS daily_metrics_tenant_date ON app.daily_metrics (tenant_id, date DESC)",
    ),
];

/// Serialises index DDL between concurrent seeders.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('haven.appdata.indexes'))";

/// Rows per heap page assumed for a table PostgreSQL has not analysed yet.
const ROWS_PER_PAGE: f64 = 50.0;

/// Drops `table`'s secondary indexes when loading `rows` at least doubles it; returns
/// whether any were dropped, i.e. whether [`restore`] must follow the load.
pub(crate) async fn drop_for_load(
    pool: &PgPool,
    table: &str,
    rows: u64,
) -> Result<bool, SeedError> {
    let names: Vec<&str> = SECONDARY
        .iter()
        .filter(|(t, _, _)| *t == table)
        .map(|(_, name, _)| *name)
        .collect();
    if names.is_empty() {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK).execute(&mut *tx).await?;
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
    .fetch_one(&mut *tx)
    .await?;
    if (rows as f64) < existing {
        return Ok(false);
    }
    for name in names {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS app.{name}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Builds the secondary indexes of `table` (of every table when `None`) that are missing.
pub(crate) async fn restore(pool: &PgPool, table: Option<&str>) -> Result<(), SeedError> {
    let present: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'app'")
            .fetch_all(pool)
            .await?;
    let missing: Vec<&str> = SECONDARY
        .iter()
        .filter(|(t, name, _)| {
            table.is_none_or(|only| only == *t) && !present.iter().any(|p| p == name)
        })
        .map(|(_, _, definition)| *definition)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK).execute(&mut *tx).await?;
    // One sort of the whole table; give it room to stay in memory.
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    for definition in missing {
        sqlx::query(sqlx::AssertSqlSafe(definition))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
