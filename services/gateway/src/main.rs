use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = haven_gateway::Config::parse();
    let _telemetry = haven_telemetry::init("haven-gateway", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    haven_gateway::serve(config, listener, haven_server::shutdown_signal()).await?;
    Ok(())
}
