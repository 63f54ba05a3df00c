//! Two tests running at once each see only their own database and their own stream.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use async_nats::jetstream;
use haven_testkit::{TestDb, namespace, nats_url};

/// Writes a marker into its own database and stream, waits for the sibling test to do the
/// same, then checks that only its own marker is visible.
async fn sees_only_its_own(marker: &str) {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE marker (value TEXT NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO marker VALUES ($1)")
        .bind(marker)
        .execute(&db.pool)
        .await
        .unwrap();

    let ns = namespace();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = jetstream::new(client);
    let stream_name = format!("{ns}_MARKERS");
    js.create_stream(jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{ns}.markers")],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(format!("{ns}.markers"), marker.to_owned().into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Overlap with the other test.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let values: Vec<String> = sqlx::query_scalar("SELECT value FROM marker")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(values, vec![marker.to_owned()]);
    let databases: Vec<String> = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(databases, vec![db.name.clone()]);

    let mut stream = js.get_stream(&stream_name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let msg = stream
        .get_last_raw_message_by_subject(&format!("{ns}.markers"))
        .await
        .unwrap();
    assert_eq!(&msg.payload[..], marker.as_bytes());
}

#[tokio::test]
async fn first_test_sees_only_its_own_database_and_stream() {
    sees_only_its_own("first").await;
}

#[tokio::test]
async fn second_test_sees_only_its_own_database_and_stream() {
    sees_only_its_own("second").await;
}
