use anyhow::Context;
use clap::Parser;

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
