//! Migrations land in the service's own schema, with their bookkeeping beside them; every
//! connection runs with the settings `connect` gives it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use haven_db::{DbArgs, connect, migrate, ready};
use haven_testkit::TestDb;

#[tokio::test]
async fn migrations_run_in_their_schema_and_are_idempotent() {
    let db = TestDb::new().await;
    let pool = connect(&DbArgs::new(&db.url)).await.unwrap();
    assert!(ready(&pool).await);

    migrate(&pool, "alpha", sqlx::migrate!("tests/migrations_a"))
        .await
        .unwrap();
    // Twice, and a second schema with the same migration versions: no conflict.
    migrate(&pool, "alpha", sqlx::migrate!("tests/migrations_a"))
        .await
        .unwrap();
    migrate(&pool, "beta", sqlx::migrate!("tests/migrations_a"))
        .await
        .unwrap();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
         WHERE table_schema IN ('alpha', 'beta', 'public') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "alpha._sqlx_migrations",
            "alpha.things",
            "beta._sqlx_migrations",
            "beta.things"
        ]
    );
}

#[tokio::test]
async fn bad_schema_names_are_refused() {
    let db = TestDb::new().await;
    let pool = connect(&DbArgs::new(&db.url)).await.unwrap();
    let err = migrate(
        &pool,
        "x; DROP TABLE y",
        sqlx::migrate!("tests/migrations_a"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("invalid schema name"));
}

#[tokio::test]
async fn every_connection_runs_without_jit() {
    let db = TestDb::new().await;
    let pool = connect(&DbArgs::new(&db.url)).await.unwrap();
    // More than one connection: the setting belongs to each, not to the first.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(jit, "off");
    }
}
