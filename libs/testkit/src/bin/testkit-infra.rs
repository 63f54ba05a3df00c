//! Starts one PostgreSQL, one NATS and one S3 protocol server (moto) for a whole test run,
//! writes their URLs as a shell-sourceable file, and stops them when stdin closes or on SIGTERM/SIGINT.
//!
//! `./deploy/test` uses it so that every test process of a nextest run shares the servers.

use std::io::Read;

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: testkit-infra <env-file>"))?;
    let pg = haven_testkit::PostgresServer::start()?;
    let nats = haven_testkit::NatsServer::start()?;
    let s3 = haven_testkit::S3Server::start()?;
    let tmp = format!("{out}.tmp");
    std::fs::write(
        &tmp,
        format!(
            "export HAVEN_TEST_DATABASE_URL='{}'\nexport HAVEN_TEST_NATS_URL='{}'\nexport HAVEN_TEST_S3_ENDPOINT='{}'\n",
            pg.url(),
            nats.url(),
            s3.endpoint()
        ),
    )?;
    std::fs::rename(&tmp, &out)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        });
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = stdin_closed => {}
        }
        anyhow::Ok(())
    })?;
    drop(s3);
    drop(nats);
    drop(pg);
    Ok(())
}
