//! havenctl: the operator's command line. Reads the same HAVEN_* variables as the services.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use haven_appdata::{DataKind, SeedOptions};
use haven_auth::{Claims, Minter, Role};
use haven_db::DbArgs;
use secrecy::ExposeSecret;
use uuid::Uuid;

/// The demo tenants `./deploy/dev/up` seeds; fixed so tokens and bookmarks survive restarts.
const DEMO_TENANTS: [(&str, &str); 2] = [
    ("00000000-0000-4000-8000-00000000a001", "Acme Prints"),
    ("00000000-0000-4000-8000-00000000b002", "Bloom Studio"),
];

#[derive(Parser)]
#[command(
    name = "havenctl",
    version,
    about = "Operate a Haven backbone: tokens, demo data, the vault."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed JWT that the services accept (for dev and tests). Tokens with role
    /// user or admin get the audience haven-users; role service gets haven-internal and is
    /// limited to --tenant unless --all-tenants is given.
    Token {
        /// Tenant the token acts for.
        #[arg(long)]
        tenant: Uuid,
        /// User (or service) id.
        #[arg(long)]
        user: String,
        /// user, admin or service; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        /// Lifetime, e.g. 1h, 30m, 7d (at most the services' HAVEN_JWT_MAX_TTL, 30d by default).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A service token valid for every tenant (role service only).
        #[arg(long)]
        all_tenants: bool,
        /// The shared HS256 secret.
        #[arg(long = "jwt-secret", env = "HAVEN_JWT_SECRET", hide_env_values = true, value_parser = haven_auth::parse_secret)]
        jwt_secret: secrecy::SecretString,
    },
    /// Fill the `app` schema with realistic data (text salted with hostile values).
    Seed {
        /// Tenant to seed; without it, the two demo tenants.
        #[arg(long)]
        tenant: Option<Uuid>,
        /// Display name for a new tenant.
        #[arg(long, default_value = "Demo Tenant")]
        name: String,
        /// Rows per type.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Only these types (leads, customers, orders, pins, quotes, assets, analytics, usage,
        /// calls, ab_tests); repeatable. `usage` is AI usage for the billing export; `calls` is
        /// brands, personas, agents and `--rows` call logs for brand reports; `ab_tests` is
        /// `--rows` storefront events of the tenant's shop for the daily product statistics.
        #[arg(long = "type")]
        types: Vec<DataKind>,
        /// Brands per tenant (type calls).
        #[arg(long, default_value_t = 3)]
        brands: u64,
        /// Agents per brand (type calls).
        #[arg(long, default_value_t = 8)]
        agents_per_brand: u64,
        /// Shop of the A/B test events (type ab_tests); default `demo-{tenant's last 8 hex
        /// digits}.myshopify.com`, the dev stack's fake shop.
        #[arg(long)]
        shop_domain: Option<String>,
        /// Products of the shop's catalogue the events are about (type ab_tests).
        #[arg(long, default_value_t = 20)]
        products: u64,
        /// Variants per product (type ab_tests).
        #[arg(long, default_value_t = 3)]
        variants_per_product: u64,
        /// Spread rows over this many days back from now.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Generator seed, for repeatable data.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the demo tenants as shell variables and exit.
        #[arg(long)]
        list_demo: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Write the bus's credentials: one nkey seed per process (`<name>.nk`, kept if present)
    /// and `auth.conf`, the authorization block nats-server includes. Point each process's
    /// HAVEN_NATS_CREDS at its seed.
    NatsAuth {
        /// Directory for the seeds and auth.conf.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Manage the credential vault's keys.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Print a new random key entry (`id=base64`) to add to HAVEN_VAULT_KEYS.
    Keygen {
        /// Id of the new key, e.g. the month it was made.
        #[arg(long)]
        id: String,
    },
    /// Re-encrypt every stored credential under the active key of HAVEN_VAULT_KEYS. Safe
    /// while the services run; the old key can leave the ring once this reports zero left.
    Rotate {
        #[command(flatten)]
        vault: haven_vault::VaultArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Token {
            tenant,
            user,
            roles,
            ttl,
            all_tenants,
            jwt_secret,
        } => {
            if all_tenants && roles.iter().any(|r| *r != Role::Service) {
                anyhow::bail!("--all-tenants is for tokens with role service only");
            }
            if roles.contains(&Role::Service) && roles.len() > 1 {
                anyhow::bail!("role service cannot be combined with user or admin");
            }
            let minter = Minter::hs256(jwt_secret.expose_secret().as_bytes())?;
            let mut claims = Claims::new(tenant, user, roles, ttl);
            if all_tenants {
                claims = claims.for_all_tenants();
            }
            println!("{}", minter.mint(&claims)?);
        }
        Command::NatsAuth { dir } => {
            let conf = haven_bus::auth::write_credentials(&dir, haven_bus::auth::Naming::Plain)?;
            println!("{}", conf.display());
        }
        Command::Seed {
            tenant,
            name,
            rows,
            types,
            brands,
            agents_per_brand,
            shop_domain,
            products,
            variants_per_product,
            days,
            seed,
            list_demo,
            db,
        } => {
            if list_demo {
                for (i, (id, name)) in DEMO_TENANTS.iter().enumerate() {
                    println!("HAVEN_TENANT_{}={id}  # {name}", i + 1);
                }
                return Ok(());
            }
            let pool = haven_db::connect(&db).await?;
            haven_appdata::migrate(&pool).await?;
            let targets: Vec<(Uuid, String)> = match tenant {
                Some(t) => vec![(t, name)],
                None => DEMO_TENANTS
                    .iter()
                    .map(|(id, n)| Ok((id.parse::<Uuid>()?, (*n).to_owned())))
                    .collect::<anyhow::Result<_>>()?,
            };
            for (tenant_id, tenant_name) in targets {
                let mut options = SeedOptions::new(tenant_id, &tenant_name, rows);
                if !types.is_empty() {
                    options.kinds = types.clone();
                }
                options.days = days;
                options.seed = seed;
                options.brands = brands;
                options.agents_per_brand = agents_per_brand;
                if let Some(shop) = &shop_domain {
                    options.catalog.shop_domain = shop.clone();
                }
                options.catalog.products = products;
                options.catalog.variants_per_product = variants_per_product;
                let report = haven_appdata::seed(&pool, &options)
                    .await
                    .with_context(|| format!("seeding tenant {tenant_id}"))?;
                let secs = report.elapsed.as_secs_f64().max(1e-9);
                println!(
                    "seeded {tenant_name} ({tenant_id}): {} rows in {:.2}s ({:.0} rows/s)",
                    report.total(),
                    secs,
                    report.total() as f64 / secs
                );
                for load in &report.tables {
                    let secs = load.elapsed.as_secs_f64().max(1e-9);
                    println!(
                        "  app.{:<18} {:>10} rows in {:>6.2}s ({:>7.0} rows/s)",
                        load.table,
                        load.rows,
                        secs,
                        load.rows as f64 / secs
                    );
                }
            }
        }
        Command::Vault { command } => match command {
            VaultCommand::Keygen { id } => {
                let entry = haven_vault::KeyRing::generate_entry(&id);
                haven_vault::KeyRing::parse(&entry).context("key id")?;
                println!("{entry}");
            }
            VaultCommand::Rotate { vault, db } => {
                let pool = haven_db::connect(&db).await?;
                let report = haven_integrations::rotate(&pool, &vault.keys)
                    .await
                    .context("rotating credentials")?;
                println!(
                    "re-encrypted {} credentials under key `{}` ({} changed meanwhile and were already current)",
                    report.resealed,
                    vault.keys.active_id(),
                    report.raced
                );
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
