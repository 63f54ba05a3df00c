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
        report.rows.iter().map(|(_, n)| n).sum::<u64>()
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
