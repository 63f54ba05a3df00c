//! Indexes, keys and foreign keys that a large load drops and rebuilds, as the migrations
//! define them. PostgreSQL's own advice for bulk loads ("Populating a Database"): building
//! an index once costs a sort, keeping it up to date costs a btree descent per row, and
//! checking a foreign key per row costs a lookup plus a row lock on the parent; adding the
//! key afterwards checks every row in one join.
//!
//! A drop commits on its own (parallel COPYs cannot share one transaction), so a seed that
//! dies mid-load leaves a table without them; every seed therefore starts by rebuilding
//! whatever is missing, and each step is idempotent.

use sqlx::PgPool;

use crate::SeedError;

/// How an index or constraint is defined.
#[derive(Clone, Copy)]
enum Def {
    /// `CREATE INDEX IF NOT EXISTS ...`.
    Secondary(&'static str),
    /// A primary key on this column.
    Primary(&'static str),
    /// A unique constraint on these columns (what a composite foreign key points at).
    Unique(&'static str),
    /// A foreign key to `parent`, added by `sql`.
    Foreign {
        parent: &'static str,
        sql: &'static str,
    },
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
    ("customers", "customers_pkey", Def::Primary("id")),
    (
        "customers",
        "customers_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "customer_loyalty",
        "customer_loyalty_pkey",
        Def::Primary("customer_id"),
    ),
    (
        "customer_loyalty",
        "customer_loyalty_customer_id_fkey",
        Def::Foreign {
            parent: "customers",
            sql: "ALTER TABLE app.customer_loyalty ADD CONSTRAINT customer_loyalty_customer_id_fkey
                  FOREIGN KEY (tenant_id, customer_id) REFERENCES app.customers (tenant_id, id) ON DELETE CASCADE",
        },
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
    ("boards", "boards_pkey", Def::Primary("id")),
    (
        "boards",
        "boards_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "pins",
        "pins_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS pins_tenant_created ON app.pins (tenant_id, created_at DESC)",
        ),
    ),
    ("pins", "pins_pkey", Def::Primary("id")),
    (
        "pins",
        "pins_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "pins",
        "pins_board_id_fkey",
        Def::Foreign {
            parent: "boards",
            sql: "ALTER TABLE app.pins ADD CONSTRAINT pins_board_id_fkey
                  FOREIGN KEY (tenant_id, board_id) REFERENCES app.boards (tenant_id, id) ON DELETE SET NULL (board_id)",
        },
    ),
    (
        "pin_analytics",
        "pin_analytics_pkey",
        Def::Primary("pin_id"),
    ),
    (
        "pin_analytics",
        "pin_analytics_pin_id_fkey",
        Def::Foreign {
            parent: "pins",
            sql: "ALTER TABLE app.pin_analytics ADD CONSTRAINT pin_analytics_pin_id_fkey
                  FOREIGN KEY (tenant_id, pin_id) REFERENCES app.pins (tenant_id, id) ON DELETE CASCADE",
        },
    ),
    (
        "quotes",
        "quotes_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS quotes_tenant_created ON app.quotes (tenant_id, created_at DESC)",
        ),
    ),
    ("quotes", "quotes_pkey", Def::Primary("id")),
    (
        "quotes",
        "quotes_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
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
        "assets",
        "assets_quote_id_fkey",
        Def::Foreign {
            parent: "quotes",
            sql: "ALTER TABLE app.assets ADD CONSTRAINT assets_quote_id_fkey
                  FOREIGN KEY (tenant_id, quote_id) REFERENCES app.quotes (tenant_id, id) ON DELETE SET NULL (quote_id)",
        },
    ),
    (
        "usage_events",
        "usage_events_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS usage_events_created ON app.usage_events (created_at)",
        ),
    ),
    (
        "usage_events",
        "usage_events_tenant_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS usage_events_tenant_created ON app.usage_events (tenant_id, created_at DESC)",
        ),
    ),
    ("usage_events", "usage_events_pkey", Def::Primary("id")),
    (
        "usage_events",
        "usage_events_tenant_id_fkey",
        Def::Foreign {
            parent: "tenants",
            sql: "ALTER TABLE app.usage_events ADD CONSTRAINT usage_events_tenant_id_fkey
                  FOREIGN KEY (tenant_id) REFERENCES app.tenants (id)",
        },
    ),
    (
        "ab_test_events",
        "ab_test_events_shop_product_created",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS ab_test_events_shop_product_created ON app.ab_test_events (tenant_id, shop_domain, product_id, created_at) INCLUDE (variant_id, event_type, revenue)",
        ),
    ),
    ("ab_test_events", "ab_test_events_pkey", Def::Primary("id")),
    (
        "ab_test_events",
        "ab_test_events_tenant_id_fkey",
        Def::Foreign {
            parent: "tenants",
            sql: "ALTER TABLE app.ab_test_events ADD CONSTRAINT ab_test_events_tenant_id_fkey
                  FOREIGN KEY (tenant_id) REFERENCES app.tenants (id)",
        },
    ),
    (
        "brands",
        "brands_tenant_created",
        Def::Secondary("CREATE INDEX IF NOT EXISTS brands_tenant_created ON app.brands (tenant_id, created_at DESC)"),
    ),
    ("brands", "brands_pkey", Def::Primary("id")),
    (
        "brands",
        "brands_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "personas",
        "personas_brand",
        Def::Secondary("CREATE INDEX IF NOT EXISTS personas_brand ON app.personas (brand_id)"),
    ),
    ("personas", "personas_pkey", Def::Primary("id")),
    (
        "personas",
        "personas_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "personas",
        "personas_tenant_id_brand_id_fkey",
        Def::Foreign {
            parent: "brands",
            sql: "ALTER TABLE app.personas ADD CONSTRAINT personas_tenant_id_brand_id_fkey
                  FOREIGN KEY (tenant_id, brand_id) REFERENCES app.brands (tenant_id, id) ON DELETE CASCADE",
        },
    ),
    (
        "agents",
        "agents_persona",
        Def::Secondary("CREATE INDEX IF NOT EXISTS agents_persona ON app.agents (persona_id)"),
    ),
    ("agents", "agents_pkey", Def::Primary("id")),
    (
        "agents",
        "agents_tenant_id_id_key",
        Def::Unique("tenant_id, id"),
    ),
    (
        "agents",
        "agents_tenant_id_persona_id_fkey",
        Def::Foreign {
            parent: "personas",
            sql: "ALTER TABLE app.agents ADD CONSTRAINT agents_tenant_id_persona_id_fkey
                  FOREIGN KEY (tenant_id, persona_id) REFERENCES app.personas (tenant_id, id) ON DELETE CASCADE",
        },
    ),
    (
        "call_logs",
        "call_logs_agent_started",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS call_logs_agent_started ON app.call_logs (agent_id, started_at)",
        ),
    ),
    (
        "call_logs",
        "call_logs_tenant_started",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS call_logs_tenant_started ON app.call_logs (tenant_id, started_at DESC)",
        ),
    ),
    ("call_logs", "call_logs_pkey", Def::Primary("id")),
    (
        "call_logs",
        "call_logs_tenant_id_agent_id_fkey",
        Def::Foreign {
            parent: "agents",
            sql: "ALTER TABLE app.call_logs ADD CONSTRAINT call_logs_tenant_id_agent_id_fkey
                  FOREIGN KEY (tenant_id, agent_id) REFERENCES app.agents (tenant_id, id) ON DELETE CASCADE",
        },
    ),
    (
        "daily_metrics",
        "daily_metrics_tenant_date",
        Def::Secondary(
            "CREATE INDEX IF NOT EXISTS daily_metrics_tenant_date ON app.daily_metrics (tenant_id, date DESC)",
        ),
    ),
];

/// Whether loading `table` involves this entry: its own indexes and keys, and the foreign
/// keys that point at it (its primary key cannot go while they stand).
fn touches(entry: &(&str, &str, Def), table: &str) -> bool {
    entry.0 == table || matches!(entry.2, Def::Foreign { parent, .. } if parent == table)
}

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
    let mut own: Vec<&(&str, &str, Def)> = INDEXES.iter().filter(|e| touches(e, table)).collect();
    // Foreign keys first: a primary key they depend on cannot be dropped before them.
    own.sort_by_key(|(_, _, def)| !matches!(def, Def::Foreign { .. }));
    if own.is_empty() {
        return Ok(false);
    }
    // Like the planner: the analysed density times the table's current size, so a table
    // filled since its last ANALYZE is not taken for empty.
    let existing = sqlx::query_scalar!(
        r#"SELECT (CASE WHEN c.relpages > 0 AND c.reltuples > 0
                     THEN c.reltuples / c.relpages ELSE $2::float8 END
                * (pg_relation_size(c.oid) / current_setting('block_size')::float8))::float8 AS "rows!"
         FROM pg_class c WHERE c.oid = to_regclass('app.' || $1::text)"#,
        table,
        ROWS_PER_PAGE,
    )
    .fetch_one(pool)
    .await?;
    if (rows as f64) < existing {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    for (owner, name, def) in own {
        sqlx::query(LOCK).bind(name).execute(&mut *tx).await?;
        let sql = match def {
            Def::Secondary(_) => format!("DROP INDEX IF EXISTS app.{name}"),
            Def::Primary(_) | Def::Unique(_) | Def::Foreign { .. } => {
                format!("ALTER TABLE app.{owner} DROP CONSTRAINT IF EXISTS {name}")
            }
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Builds whatever is missing of `table`'s indexes and keys (of every table's when
/// `None`), each on its own connection so that one table's indexes are sorted side by
/// side; then the tenant keys, then the foreign keys that touch it, which need the parents'
/// keys in place.
pub(crate) async fn restore(pool: &PgPool, table: Option<&str>) -> Result<(), SeedError> {
    let present: Vec<String> = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_class c
         WHERE c.relnamespace = 'app'::regnamespace AND c.relkind = 'i'
         UNION ALL
         SELECT conname::text FROM pg_constraint
         WHERE connamespace = 'app'::regnamespace AND contype IN ('p', 'u', 'f')"#,
    )
    .fetch_all(pool)
    .await?;
    let missing: Vec<&(&str, &str, Def)> = INDEXES
        .iter()
        .filter(|entry| {
            let (owner, name, def) = entry;
            let wanted = match def {
                Def::Foreign { .. } => table.is_none_or(|only| touches(entry, only)),
                Def::Secondary(_) | Def::Primary(_) | Def::Unique(_) => {
                    table.is_none_or(|only| only == *owner)
                }
            };
            wanted
                && match def {
                    // The constraint, not just its index: a crash may fall between the two.
                    Def::Primary(_) | Def::Unique(_) => {
                        present.iter().filter(|p| p == name).count() < 2
                    }
                    Def::Secondary(_) | Def::Foreign { .. } => !present.iter().any(|p| p == name),
                }
        })
        .collect();
    // Three rounds: indexes and primary keys side by side; then the tenant keys (making one
    // a constraint takes the table's exclusive lock, which would deadlock against the
    // primary key doing the same beside it); then the foreign keys onto them.
    let round = |def: &Def| match def {
        Def::Secondary(_) | Def::Primary(_) => 0,
        Def::Unique(_) => 1,
        Def::Foreign { .. } => 2,
    };
    for current in 0..3 {
        let builds = missing
            .iter()
            .filter(|(_, _, def)| round(def) == current)
            .map(|&&(owner, name, def)| build(pool, owner, name, def));
        for result in futures::future::join_all(builds).await {
            result?;
        }
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
        Def::Foreign { sql, .. } => {
            if !constraint_exists(&mut tx, name).await? {
                // The check is one join of the whole table against its parent.
                sqlx::raw_sql("SET LOCAL work_mem = '256MB'")
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Def::Secondary(definition) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(definition))
                .execute(&mut *tx)
                .await?;
        }
        Def::Unique(columns) => {
            if !constraint_exists(&mut tx, name).await? {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {name} ON app.{table} ({columns})"
                )))
                .execute(&mut *tx)
                .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE app.{table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"
                )))
                .execute(&mut *tx)
                .await?;
            }
        }
        Def::Primary(column) => {
            if !constraint_exists(&mut tx, name).await? {
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

async fn constraint_exists(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
) -> Result<bool, SeedError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT FROM pg_constraint
         WHERE connamespace = 'app'::regnamespace AND conname = $1) AS "exists!""#,
        name,
    )
    .fetch_one(&mut **tx)
    .await?)
}
