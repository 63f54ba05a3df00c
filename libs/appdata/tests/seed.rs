//! The generator fills every table for one tenant, with related rows pointing at each other.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use haven_appdata::{DataKind, HOSTILE_TEXT, SeedOptions, migrate, seed};
use haven_testkit::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn seeds_every_kind_for_one_tenant() {
    let db = TestDb::new().await;
    migrate(&db.pool).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut options = SeedOptions::new(tenant, "Acme Prints", 500);
    options.hostile_ratio = 0.2;
    options.seed = Some(42);
    let report = seed(&db.pool, &options).await.unwrap();

    let count = |table: &str| {
        let sql = format!("SELECT count(*) FROM app.{table} WHERE tenant_id = $1");
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for table in [
        "leads",
        "customers",
        "customer_orders",
        "pins",
        "quotes",
        "assets",
    ] {
        assert_eq!(count(table).await, 500, "{table}");
    }
    assert_eq!(count("boards").await, 12);
    assert_eq!(count("daily_metrics").await, 90);
    assert!(count("customer_loyalty").await > 250);
    assert!(count("pin_analytics").await > 300);
    assert_eq!(
        report.total(),
        report.tables.iter().map(|t| t.rows).sum::<u64>()
    );

    // Orders point at this run's customers; assets at its quotes.
    let orphan_orders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM app.customer_orders o LEFT JOIN app.customers c ON c.id = o.customer_id
         WHERE o.tenant_id = $1 AND c.id IS NULL",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphan_orders, 0);

    // Hostile text survives COPY byte for byte.
    let segments: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT segment FROM app.leads WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        segments.iter().any(|s| HOSTILE_TEXT.contains(&s.as_str())),
        "{segments:?}"
    );

    // A second run adds rows instead of colliding with the first.
    let mut only_orders = SeedOptions::new(tenant, "Acme Prints", 100);
    only_orders.kinds = vec![DataKind::Orders];
    seed(&db.pool, &only_orders).await.unwrap();
    assert_eq!(count("customer_orders").await, 600);
}

/// Binary COPY writes numerics, timestamps and booleans as the columns mean them.
#[tokio::test]
async fn values_are_what_they_claim() {
    let db = TestDb::new().await;
    migrate(&db.pool).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut options = SeedOptions::new(tenant, "Values", 2_000);
    options.kinds = vec![
        DataKind::Orders,
        DataKind::Customers,
        DataKind::Assets,
        DataKind::AbTests,
    ];
    options.days = 30;
    options.seed = Some(7);
    seed(&db.pool, &options).await.unwrap();
    // A/B test events: about the configured shop's catalogue (a few about products it no
    // longer has), revenue on orders only, a few exactly on a UTC midnight.
    let shape = &options.catalog;
    let (events, bad, unknown, midnight): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE shop_domain <> $2 OR (revenue > 0) <> (event_type = 'order')
                                 OR variant_id::int8 NOT BETWEEN $3 + 1000000 AND $3 + 1000000 + $4 * $5 - 1),
                count(*) FILTER (WHERE product_id::int8 NOT BETWEEN $3 AND $3 + $4 - 1),
                count(*) FILTER (WHERE created_at = date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
         FROM app.ab_test_events WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(&shape.shop_domain)
    .bind(shape.base as i64)
    .bind(shape.products as i64)
    .bind(shape.variants_per_product as i64)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(events, 2_000);
    assert_eq!(bad, 0);
    assert!(unknown > 0 && unknown < 100, "{unknown}");
    assert!(midnight > 0, "{midnight}");
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM app.customer_orders WHERE tenant_id = $1 AND NOT (
             total = subtotal - discount_total AND subtotal BETWEEN 10 AND 500
             AND discount_total >= 0 AND scale(total) = 2 AND item_count BETWEEN 1 AND 7
             AND created_at BETWEEN now() - interval '30 days 1 minute' AND now()
             AND (coupon_code IS NOT NULL) = (discount_total > 0)
             AND shopify_order_id ~ '^5[0-9]{9}$' AND customer_email LIKE '%@example.com')",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(bad, 0);
    // Some totals have cents, some are whole: both encodings round-trip.
    let (fractional, whole): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE total <> trunc(total)), count(*) FILTER (WHERE total = trunc(total))
         FROM app.customer_orders WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(fractional > 1_000 && whole > 0, "{fractional} {whole}");
    let bad_assets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM app.assets WHERE tenant_id = $1
         AND NOT (quality_score IS NULL OR quality_score BETWEEN 40 AND 99.99)",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(bad_assets, 0);
    let bad_customers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM app.customers WHERE tenant_id = $1 AND NOT (
             (order_count > 0) = (first_order_at IS NOT NULL) AND total_spent BETWEEN 0 AND 5000)",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(bad_customers, 0);
}

/// A large load into an empty table rebuilds the indexes, keys and foreign keys it
/// dropped, and the list the generator keeps matches the migrations.
#[tokio::test]
async fn large_loads_keep_the_schema() {
    let db = TestDb::new().await;
    migrate(&db.pool).await.unwrap();
    let schema = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'app'
             UNION ALL
             SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
             WHERE connamespace = 'app'::regnamespace
             ORDER BY 1",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let before = schema().await;
    let foreign_keys = before.iter().filter(|d| d.contains("FOREIGN KEY")).count();
    assert_eq!(foreign_keys, 9, "{before:?}");
    assert_eq!(
        before
            .iter()
            .filter(|d| d.contains("(tenant_id, id)"))
            .count(),
        21,
        "seven tenant keys (constraint and index) and seven foreign keys onto them: {before:?}"
    );
    // Objects get new oids when they are dropped and built again.
    let oids = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT relname || ' ' || oid FROM pg_class
             WHERE relnamespace = 'app'::regnamespace AND relkind = 'i'
             UNION ALL
             SELECT conname || ' ' || oid FROM pg_constraint
             WHERE connamespace = 'app'::regnamespace
             ORDER BY 1",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let oids_before = oids().await;
    let tenant = Uuid::new_v4();
    // Every kind counts as large: each table drops and rebuilds what it has, and the
    // foreign keys are checked again when they come back.
    let mut options = SeedOptions::new(tenant, "Big", 3_000);
    options.rebuild_from = 1_000;
    let report = seed(&db.pool, &options).await.unwrap();
    assert!(report.total() > 15_000);
    assert_eq!(schema().await, before);
    let oids_after = oids().await;
    for name in [
        "assets_quote ",
        "customers_pkey ",
        "customer_loyalty_customer_id_fkey ",
        "pins_board_id_fkey ",
        "pin_analytics_pin_id_fkey ",
        "assets_quote_id_fkey ",
        "usage_events_created ",
        "usage_events_tenant_id_fkey ",
        "call_logs_pkey ",
        "call_logs_tenant_id_agent_id_fkey ",
    ] {
        let of = |all: &[String]| all.iter().find(|o| o.starts_with(name)).cloned();
        assert!(of(&oids_before).is_some(), "{name}");
        assert_ne!(of(&oids_before), of(&oids_after), "{name} was not rebuilt");
    }

    // A seed that died after dropping indexes, keys and foreign keys: the next one puts
    // every one back as the migrations define it.
    let foreign: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint
         WHERE connamespace = 'app'::regnamespace AND contype = 'f'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (table, name) in foreign {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} DROP CONSTRAINT {name}"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let secondary: Vec<String> = sqlx::query_scalar(
        "SELECT x.indexrelid::regclass::text FROM pg_index x
         JOIN pg_class c ON c.oid = x.indrelid
         WHERE c.relnamespace = 'app'::regnamespace AND NOT x.indisunique",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(secondary.len(), 17, "{secondary:?}");
    for index in secondary {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for table in [
        "leads",
        "customers",
        "customer_orders",
        "customer_loyalty",
        "boards",
        "pins",
        "pin_analytics",
        "quotes",
        "assets",
        "usage_events",
        "call_logs",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE app.{table} DROP CONSTRAINT {table}_pkey"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // Between building a key's index and making it the key.
    sqlx::query("CREATE UNIQUE INDEX assets_pkey ON app.assets (id)")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_ne!(schema().await, before);
    let mut small = SeedOptions::new(tenant, "Big", 10);
    small.kinds = vec![DataKind::Leads];
    seed(&db.pool, &small).await.unwrap();
    assert_eq!(schema().await, before);
}

/// A foreign key that comes back checks every row: a row whose parent vanished while the
/// key was down fails the seed instead of slipping in.
#[tokio::test]
async fn restored_foreign_keys_check_the_rows() {
    let db = TestDb::new().await;
    migrate(&db.pool).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut options = SeedOptions::new(tenant, "Orphans", 2_000);
    options.kinds = vec![DataKind::Quotes, DataKind::Assets];
    seed(&db.pool, &options).await.unwrap();
    sqlx::query("ALTER TABLE app.assets DROP CONSTRAINT assets_quote_id_fkey")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "DELETE FROM app.quotes WHERE id = (SELECT quote_id FROM app.assets
         WHERE quote_id IS NOT NULL LIMIT 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut small = SeedOptions::new(tenant, "Orphans", 10);
    small.kinds = vec![DataKind::Leads];
    let err = seed(&db.pool, &small).await.unwrap_err().to_string();
    assert!(err.contains("assets_quote_id_fkey"), "{err}");
}
