//! `haven-fake-providers`: the fake provider servers as a process, so the dev stack can click
//! through Shopify and Pinterest OAuth and connect API keys without the internet.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use haven_fake_providers::{FakeCatalog, FakeConfig, FakeProviders};
use secrecy::SecretString;

#[derive(Parser, Debug)]
#[command(about = "Local fake Shopify, Pinterest, Klaviyo, Dynamic Mockups, Resend and Sky Pilot")]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "HAVEN_FAKE_PROVIDERS_ADDR",
        default_value = "127.0.0.1:9090"
    )]
    addr: SocketAddr,
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_CLIENT_ID",
        default_value = "fake-shopify-client-id"
    )]
    shopify_client_id: String,
    #[arg(
        long,
        env = "HAVEN_SHOPIFY_CLIENT_SECRET",
        default_value = "fake-shopify-client-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    shopify_client_secret: SecretString,
    #[arg(
        long,
        env = "HAVEN_PINTEREST_CLIENT_ID",
        default_value = "fake-pinterest-client-id"
    )]
    pinterest_client_id: String,
    #[arg(
        long,
        env = "HAVEN_PINTEREST_CLIENT_SECRET",
        default_value = "fake-pinterest-client-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    pinterest_client_secret: SecretString,
    /// A valid key, as `provider=key` (klaviyo, dynamic_mockups, resend, sky_pilot); repeatable.
    #[arg(long = "api-key", value_parser = parse_api_key)]
    api_keys: Vec<(String, String)>,
    /// A Resend key with sending access only; repeatable.
    #[arg(long = "resend-send-only-key")]
    resend_send_only_keys: Vec<String>,
    /// A demo tenant's shop (`demo-{last 8 hex digits}.myshopify.com`) with the catalogue
    /// `havenctl seed --type ab_tests` seeds events for; repeatable.
    #[arg(long = "demo-shop")]
    demo_shops: Vec<uuid::Uuid>,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    access_token_ttl_secs: u64,
}

fn parse_api_key(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((p, k)) if !p.trim().is_empty() && !k.is_empty() => {
            Ok((p.trim().to_owned(), k.to_owned()))
        }
        _ => Err("expected provider=key".into()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fake = FakeProviders::start_on(
        args.addr,
        FakeConfig {
            shopify_client_id: args.shopify_client_id,
            shopify_client_secret: args.shopify_client_secret,
            pinterest_client_id: args.pinterest_client_id,
            pinterest_client_secret: args.pinterest_client_secret,
            access_token_ttl: Duration::from_secs(args.access_token_ttl_secs),
        },
    )
    .await?;
    for (provider, key) in &args.api_keys {
        fake.add_api_key(provider, key);
    }
    for key in &args.resend_send_only_keys {
        fake.add_resend_send_only_key(key);
    }
    for tenant in &args.demo_shops {
        let shape = haven_shopify::CatalogShape::demo(*tenant);
        fake.set_shopify_catalog(&shape.shop_domain, FakeCatalog::shaped(&shape, 2));
        println!(
            "  demo shop              {} ({} products)",
            shape.shop_domain, shape.products
        );
    }
    println!("haven-fake-providers listening on {}", fake.base_url());
    println!("  shopify url template   {}", fake.shopify_url_template());
    println!("  pinterest api base     {}", fake.pinterest_api_base());
    println!(
        "  pinterest authorize    {}",
        fake.pinterest_authorize_url()
    );
    println!("  klaviyo base           {}", fake.klaviyo_base());
    println!("  dynamic mockups base   {}", fake.dynamic_mockups_base());
    println!("  resend base            {}", fake.resend_base());
    println!("  sky pilot base         {}", fake.sky_pilot_base());
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(())
}
