use anyhow::Context;
use clap::Parser;

/// mimalloc, not glibc's malloc: under load the latter took a third of the service's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = haven_retry::Config::parse();
    let _telemetry = haven_telemetry::init("haven-retry", &config.common.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    haven_retry::serve(config, listener, haven_server::shutdown_signal()).await?;
    Ok(())
}
