//! Servers the test kit starts listen below Linux's ephemeral port range, so a server that
//! crashed comes back on its port however hard clients are trying to reconnect meanwhile.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use haven_testkit::{NatsServer, PostgresServer, SERVER_PORTS};
use sqlx::Connection;

#[test]
fn servers_listen_outside_the_ephemeral_range() {
    let pg = PostgresServer::start().unwrap();
    assert!(SERVER_PORTS.contains(&pg.port()), "{}", pg.url());
    assert!(pg.port() < 32768, "{}", pg.url());
    let nats = NatsServer::start().unwrap();
    let port: u16 = nats.url().rsplit(':').next().unwrap().parse().unwrap();
    assert!(port < 32768, "{}", nats.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postgres_restarts_while_clients_reconnect_three_times_in_a_row() {
    let mut pg = PostgresServer::start().unwrap();
    let url = pg.url();
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    // Clients that reconnect as fast as they can, as the services' pools do after a crash.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop, connected) = (url.clone(), stop.clone(), connected.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                        connected.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.close().await;
                    }
                }
            })
        })
        .collect();
    for round in 1..=3 {
        pg.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = tokio::task::block_in_place(|| pg.restart());
        assert!(started.is_ok(), "round {round}: {started:?}");
        let before = connected.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while connected.load(Ordering::Relaxed) == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no client got back in"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
}
