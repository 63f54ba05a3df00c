use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use uuid::Uuid;

pub use haven_shopify::CatalogShape;

use crate::binary::{self, Rows, push_u64};
use crate::{HOSTILE_TEXT, SeedError, indexes};

/// The kinds of data an export reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataKind {
    Leads,
    Customers,
    Orders,
    Pins,
    Quotes,
    Assets,
    Analytics,
    /// AI usage events, for the billing export.
    Usage,
    /// Brands, their personas and agents, and the agents' calls, for brand reports.
    Calls,
    /// Storefront A/B test events of one Shopify shop, for the daily product statistics.
    AbTests,
}

impl DataKind {
    pub const ALL: [DataKind; 10] = [
        DataKind::Leads,
        DataKind::Customers,
        DataKind::Orders,
        DataKind::Pins,
        DataKind::Quotes,
        DataKind::Assets,
        DataKind::Analytics,
        DataKind::Usage,
        DataKind::Calls,
        DataKind::AbTests,
    ];

    /// The export type key (README, "Exports"); `usage` and `calls` feed the billing export
    /// and brand reports, `ab_tests` the daily product statistics.
    pub fn key(self) -> &'static str {
        match self {
            DataKind::Leads => "leads",
            DataKind::Customers => "customers",
            DataKind::Orders => "orders",
            DataKind::Pins => "pins",
            DataKind::Quotes => "quotes",
            DataKind::Assets => "assets",
            DataKind::Analytics => "analytics",
            DataKind::Usage => "usage",
            DataKind::Calls => "calls",
            DataKind::AbTests => "ab_tests",
        }
    }
}

impl std::str::FromStr for DataKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataKind::ALL
            .into_iter()
            .find(|k| k.key() == s)
            .ok_or_else(|| format!("unknown type `{s}`: expected one of leads, customers, orders, pins, quotes, assets, analytics, usage, calls, ab_tests"))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SeedOptions {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    /// Rows per kind (analytics: one row per day, at most `days`; calls: call logs).
    pub rows: u64,
    /// Brands made by the `calls` kind, each with two personas.
    pub brands: u64,
    /// Agents per brand, spread over its personas; the calls go to random agents.
    pub agents_per_brand: u64,
    /// The shop and catalogue the `ab_tests` kind's events are about.
    pub catalog: CatalogShape,
    pub kinds: Vec<DataKind>,
    /// Rows are spread over this many days back from now.
    pub days: u32,
    /// Fraction of text cells replaced by a hostile value.
    pub hostile_ratio: f64,
    /// Seeds the generator; `None` picks one, so repeated runs add new rows.
    pub seed: Option<u64>,
    /// A load of at least this many rows that at least doubles its table drops the
    /// table's indexes, keys and foreign keys and rebuilds them at the end; smaller loads
    /// keep them (the DDL is not worth it).
    pub rebuild_from: u64,
}

impl SeedOptions {
    pub fn new(tenant_id: Uuid, tenant_name: impl Into<String>, rows: u64) -> Self {
        SeedOptions {
            tenant_id,
            tenant_name: tenant_name.into(),
            rows,
            brands: 3,
            agents_per_brand: 8,
            catalog: CatalogShape::demo(tenant_id),
            kinds: DataKind::ALL.to_vec(),
            days: 90,
            hostile_ratio: 0.03,
            seed: None,
            rebuild_from: 100_000,
        }
    }
}

/// What was written, and how fast.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub tables: Vec<TableLoad>,
    pub elapsed: Duration,
}

/// One table's load, index and key rebuilds included.
#[derive(Clone, Debug)]
pub struct TableLoad {
    pub table: &'static str,
    pub rows: u64,
    pub elapsed: Duration,
}

impl SeedReport {
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

fn load(table: &'static str, rows: u64, started: Instant) -> TableLoad {
    TableLoad {
        table,
        rows,
        elapsed: started.elapsed(),
    }
}

/// How many groups of related tables load at once.
const CONCURRENT_CHAINS: usize = 2;

/// Runs `chain` (tables that depend on each other, in order) once `gate` lets it.
async fn gated<F>(gate: &tokio::sync::Semaphore, chain: F) -> Result<Vec<TableLoad>, SeedError>
where
    F: Future<Output = Result<Vec<TableLoad>, SeedError>>,
{
    let _permit = gate
        .acquire()
        .await
        .map_err(|e| SeedError::Generate(e.to_string()))?;
    chain.await
}

const CHUNK_ROWS: u64 = 20_000;

/// Generates data for one tenant. Creates the tenant row if it does not exist.
pub async fn seed(pool: &PgPool, options: &SeedOptions) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    let run = options.seed.unwrap_or_else(rand::random);
    let slug = format!("tenant-{}", options.tenant_id.simple());
    sqlx::query!(
        "INSERT INTO app.tenants (id, name, slug) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        options.tenant_id,
        options.tenant_name,
        slug,
    )
    .execute(pool)
    .await?;
    // An earlier seed that died mid-load may have left its table without its indexes.
    indexes::restore(pool, None).await?;
    let mut report = SeedReport::default();
    let ctx = Ctx {
        tenant: options.tenant_id,
        run,
        days: options.days.max(1),
        hostile: options.hostile_ratio,
        rows: options.rows,
        now_us: Utc::now().timestamp_micros(),
        rebuild_from: options.rebuild_from,
    };
    let has = |k| options.kinds.contains(&k);
    let n = options.rows;

    let leads = async {
        let mut loads = Vec::new();
        if has(DataKind::Leads) {
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(pool, "leads", "id, tenant_id, email, segment, source, quiz_completed, converted, utm_source, utm_medium, utm_campaign, created_at", n, &ctx, 1, move |rng, i, out| {
                let utm = rng.random_bool(0.6);
                out.row(11);
                out.uuid(c.id(1, i));
                out.uuid(c.tenant);
                email(out, rng, i);
                c.text(out, rng, &["quiz", "newsletter", "giveaway", "vip"]);
                c.text(out, rng, &["pinterest", "instagram", "organic", "referral"]);
                out.bool(rng.random_bool(0.55));
                out.bool(rng.random_bool(0.12));
                if utm {
                    c.text(out, rng, &["pinterest", "google", "klaviyo"]);
                    out.text(pick(rng, &["cpc", "email", "social"]));
                    c.text(out, rng, &["spring-sale", "holiday-2026", "launch"]);
                } else {
                    out.null();
                    out.null();
                    out.null();
                }
                out.timestamptz(c.time_of(1, i));
            })
            .await?;
            loads.push(load("leads", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let customers = async {
        let mut loads = Vec::new();
        if has(DataKind::Customers) {
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(pool, "customers", "id, tenant_id, email, shopify_customer_id, segment, order_count, total_spent, first_order_at, last_order_at, journey_stage, created_at", n, &ctx, 2, move |rng, i, out| {
                let orders = rng.random_range(0..40i32);
                let created = c.time_of(2, i);
                out.row(11);
                out.uuid(c.id(2, i));
                out.uuid(c.tenant);
                email(out, rng, i);
                out.text_with(|b| push_u64(b, 6_000_000_000u64 + i));
                c.text(out, rng, &["new", "repeat", "vip", "at-risk", "lapsed"]);
                out.int4(orders);
                out.cents(rng.random_range(0..500_000));
                if orders > 0 {
                    out.timestamptz(created);
                    out.timestamptz(c.random_time(rng));
                } else {
                    out.null();
                    out.null();
                }
                c.text(out, rng, &["awareness", "consideration", "purchase", "loyalty"]);
                out.timestamptz(created);
            })
            .await?;
            loads.push(load("customers", w, t));
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "customer_loyalty",
                "customer_id, tenant_id, tier, lifetime_points",
                n,
                &ctx,
                3,
                move |rng, i, out| {
                    // About two customers in three have joined the loyalty programme.
                    if i % 3 == 2 {
                        return;
                    }
                    out.row(4);
                    out.uuid(c.id(2, i));
                    out.uuid(c.tenant);
                    out.text(pick(rng, &["bronze", "silver", "gold", "platinum"]));
                    out.int4(rng.random_range(0..50_000));
                },
            )
            .await?;
            loads.push(load("customer_loyalty", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let orders = async {
        let mut loads = Vec::new();
        if has(DataKind::Orders) {
            let c = ctx.clone();
            let linked = has(DataKind::Customers) && n > 0;
            let t = Instant::now();
            let w = copy(pool, "customer_orders", "id, tenant_id, customer_id, shopify_order_id, customer_email, total, subtotal, discount_total, item_count, status, attribution_channel, coupon_code, created_at", n, &ctx, 4, move |rng, i, out| {
                let subtotal = rng.random_range(1_000..50_000i64);
                let discount = if rng.random_bool(0.3) { rng.random_range(0..subtotal / 4) } else { 0 };
                let buyer = rng.random_range(0..1_000_000);
                out.row(13);
                out.uuid(c.id(4, i));
                out.uuid(c.tenant);
                if linked {
                    out.uuid(c.id(2, rng.random_range(0..c.rows)));
                } else {
                    out.null();
                }
                out.text_with(|b| push_u64(b, 5_000_000_000u64 + i));
                email(out, rng, buyer);
                out.cents(subtotal - discount);
                out.cents(subtotal);
                out.cents(discount);
                out.int4(rng.random_range(1..8));
                out.text(pick(rng, &["paid", "paid", "paid", "fulfilled", "refunded", "pending", "cancelled"]));
                if rng.random_bool(0.7) {
                    c.text(out, rng, &["pinterest", "email", "organic", "direct"]);
                } else {
                    out.null();
                }
                if discount > 0 {
                    c.text(out, rng, &["WELCOME10", "SPRING20", "VIP15"]);
                } else {
                    out.null();
                }
                out.timestamptz(c.time_of(4, i));
            })
            .await?;
            loads.push(load("customer_orders", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let pins = async {
        let mut loads = Vec::new();
        if has(DataKind::Pins) {
            let boards = 12u64;
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "boards",
                "id, tenant_id, name, pinterest_board_id, created_at",
                boards,
                &ctx,
                5,
                move |rng, i, out| {
                    out.row(5);
                    out.uuid(c.id(5, i));
                    out.uuid(c.tenant);
                    c.text(
                        out,
                        rng,
                        &[
                            "Quotes to Live By",
                            "Home Decor",
                            "Gift Ideas",
                            "Wall Art",
                            "Motivation",
                        ],
                    );
                    out.text_with(|b| push_u64(b, 900_000_000_000u64 + i));
                    out.timestamptz(c.time_of(5, i));
                },
            )
            .await?;
            loads.push(load("boards", w, t));
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(pool, "pins", "id, tenant_id, board_id, title, status, link, pinterest_pin_id, published_at, created_at", n, &ctx, 6, move |rng, i, out| {
                let published = rng.random_bool(0.8);
                let created = c.time_of(6, i);
                out.row(9);
                out.uuid(c.id(6, i));
                out.uuid(c.tenant);
                out.uuid(c.id(5, rng.random_range(0..boards)));
                c.text(out, rng, &["Morning motivation print", "Minimalist quote poster", "Cozy reading nook art"]);
                out.text(pick(rng, &["published", "published", "scheduled", "draft", "failed"]));
                if rng.random_bool(0.9) {
                    out.text_with(|b| {
                        b.extend_from_slice(b"https://shop.example.com/products/p");
                        push_u64(b, i % 5000);
                    });
                } else {
                    out.null();
                }
                if published {
                    out.text_with(|b| push_u64(b, 800_000_000_000u64 + i));
                    out.timestamptz(created);
                } else {
                    out.null();
                    out.null();
                }
                out.timestamptz(created);
            })
            .await?;
            loads.push(load("pins", w, t));
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "pin_analytics",
                "pin_id, tenant_id, impressions, saves, clicks",
                n,
                &ctx,
                7,
                move |rng, i, out| {
                    // One pin in five has no analytics yet: exports must show zeros for it.
                    if i % 5 == 4 {
                        return;
                    }
                    let impressions = rng.random_range(0..200_000i64);
                    out.row(5);
                    out.uuid(c.id(6, i));
                    out.uuid(c.tenant);
                    out.int8(impressions);
                    out.int8(rng.random_range(0..=impressions / 20 + 1));
                    out.int8(rng.random_range(0..=impressions / 30 + 1));
                },
            )
            .await?;
            loads.push(load("pin_analytics", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let quotes = async {
        let mut loads = Vec::new();
        let quotes_made = has(DataKind::Quotes);
        if quotes_made {
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "quotes",
                "id, tenant_id, text, attribution, collection, mood, status, created_at",
                n,
                &ctx,
                8,
                move |rng, i, out| {
                    out.row(8);
                    out.uuid(c.id(8, i));
                    out.uuid(c.tenant);
                    c.text(
                        out,
                        rng,
                        &[
                            "Be the energy you want to attract.",
                            "Small steps every day.",
                            "Bloom where you are planted.",
                        ],
                    );
                    if rng.random_bool(0.7) {
                        c.text(out, rng, &["Unknown", "Maya Angelou", "Rumi"]);
                    } else {
                        out.null();
                    }
                    c.text(out, rng, &["growth", "grounding", "wholeness"]);
                    c.text(out, rng, &["calm", "bold", "hopeful", "playful"]);
                    out.text(pick(rng, &["approved", "approved", "draft", "archived"]));
                    out.timestamptz(c.time_of(8, i));
                },
            )
            .await?;
            loads.push(load("quotes", w, t));
        }
        if has(DataKind::Assets) {
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "assets",
                "id, tenant_id, quote_id, format, status, quality_score, url, created_at",
                n,
                &ctx,
                9,
                move |rng, i, out| {
                    let id = c.id(9, i);
                    out.row(8);
                    out.uuid(id);
                    out.uuid(c.tenant);
                    if quotes_made && c.rows > 0 {
                        out.uuid(c.id(8, rng.random_range(0..c.rows)));
                    } else {
                        out.null();
                    }
                    out.text(pick(
                        rng,
                        &["pin_2x3", "story_9x16", "print_8x10", "square_1x1"],
                    ));
                    out.text(pick(rng, &["ready", "ready", "generating", "failed"]));
                    if rng.random_bool(0.9) {
                        out.cents(rng.random_range(4_000..10_000));
                    } else {
                        out.null();
                    }
                    if rng.random_bool(0.95) {
                        out.text_with(|b| {
                            b.extend_from_slice(b"https://cdn.example.com/assets/");
                            b.extend_from_slice(
                                id.simple()
                                    .encode_lower(&mut Uuid::encode_buffer())
                                    .as_bytes(),
                            );
                            b.extend_from_slice(b".png");
                        });
                    } else {
                        out.null();
                    }
                    out.timestamptz(c.time_of(9, i));
                },
            )
            .await?;
            loads.push(load("assets", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let analytics = async {
        let mut loads = Vec::new();
        if has(DataKind::Analytics) {
            let days = i64::try_from(options.rows.min(u64::from(ctx.days))).unwrap_or(0);
            let t = Instant::now();
            let written = sqlx::query!(
                "INSERT INTO app.daily_metrics
                     (tenant_id, date, revenue, orders, new_customers, new_leads, quiz_completions, pin_impressions, pin_clicks)
                 SELECT $1, (current_date - d::int)::date,
                        round((random() * 5000)::numeric, 2), (random() * 60)::int, (random() * 20)::int,
                        (random() * 80)::int, (random() * 50)::int, (random() * 90000)::bigint, (random() * 3000)::bigint
                 FROM generate_series(0, $2::int8 - 1) AS d
                 ON CONFLICT (tenant_id, date) DO NOTHING",
                options.tenant_id,
                days,
            )
            .execute(pool)
            .await?
            .rows_affected();
            loads.push(load("daily_metrics", written, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let usage = async {
        let mut loads = Vec::new();
        if has(DataKind::Usage) {
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "usage_events",
                "id, tenant_id, model, input_tokens, output_tokens, cost_cents, created_at",
                n,
                &ctx,
                10,
                move |rng, i, out| {
                    let input = rng.random_range(100..20_000i64);
                    let output = rng.random_range(50..4_000i64);
                    out.row(7);
                    out.uuid(c.id(10, i));
                    out.uuid(c.tenant);
                    c.text(out, rng, MODELS);
                    out.int8(input);
                    out.int8(output);
                    // About $3 per million input tokens and $15 per million output tokens.
                    out.int8((input * 3 + output * 15) / 10_000);
                    out.timestamptz(c.time_of(10, i));
                },
            )
            .await?;
            loads.push(load("usage_events", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    let calls = async {
        let mut loads = Vec::new();
        if has(DataKind::Calls) {
            let brands = options.brands;
            let personas = brands * 2;
            let agents = brands * options.agents_per_brand;
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "brands",
                "id, tenant_id, company_name, created_at",
                brands,
                &ctx,
                11,
                move |rng, i, out| {
                    out.row(4);
                    out.uuid(c.id(11, i));
                    out.uuid(c.tenant);
                    c.text(
                        out,
                        rng,
                        &[
                            "Acme Corp",
                            "Bloom & Co.",
                            "Northwind Voice",
                            "Café Lumière",
                        ],
                    );
                    out.timestamptz(c.time_of(11, i));
                },
            )
            .await?;
            loads.push(load("brands", w, t));
            let c = ctx.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "personas",
                "id, tenant_id, brand_id, name, created_at",
                personas,
                &ctx,
                12,
                move |rng, i, out| {
                    out.row(5);
                    out.uuid(c.id(12, i));
                    out.uuid(c.tenant);
                    out.uuid(c.id(11, i / 2));
                    c.text(out, rng, &["Friendly concierge", "Sales closer", "Support"]);
                    out.timestamptz(c.time_of(12, i));
                },
            )
            .await?;
            loads.push(load("personas", w, t));
            let c = ctx.clone();
            let per_brand = options.agents_per_brand.max(1);
            let t = Instant::now();
            let w = copy(
                pool,
                "agents",
                "id, tenant_id, persona_id, name, created_at",
                agents,
                &ctx,
                13,
                move |rng, i, out| {
                    out.row(5);
                    out.uuid(c.id(13, i));
                    out.uuid(c.tenant);
                    // Agents of brand b belong to its two personas in turn.
                    out.uuid(c.id(12, (i / per_brand) * 2 + i % 2));
                    if c.hostile > 0.0 && rng.random_bool(c.hostile) {
                        out.text(pick(rng, HOSTILE_TEXT));
                    } else {
                        let first = pick(rng, &["Ava", "Sam", "Noor", "Léa", "Kenji", "Zoë"]);
                        out.text_with(|b| {
                            b.extend_from_slice(first.as_bytes());
                            b.extend_from_slice(b" #");
                            push_u64(b, i + 1);
                        });
                    }
                    out.timestamptz(c.time_of(13, i));
                },
            )
            .await?;
            loads.push(load("agents", w, t));
            if agents > 0 {
                let c = ctx.clone();
                let t = Instant::now();
                let w = copy(
                    pool,
                    "call_logs",
                    "id, tenant_id, agent_id, outcome, duration_s, cost, phone_number, started_at",
                    n,
                    &ctx,
                    14,
                    move |rng, i, out| {
                        let duration = rng.random_range(0..900i32);
                        out.row(8);
                        out.uuid(c.id(14, i));
                        out.uuid(c.tenant);
                        out.uuid(c.id(13, rng.random_range(0..agents)));
                        out.text(pick(rng, OUTCOMES));
                        out.int4(duration);
                        // Ten cents a minute, to the cent.
                        out.cents(i64::from(duration) * 10 / 60);
                        out.text_with(|b| {
                            b.extend_from_slice(b"+1-555-01");
                            push_u64(b, 10 + i % 90);
                            b.push(b'-');
                            push_u64(b, 1000 + i % 9000);
                        });
                        out.timestamptz(c.time_of(14, i));
                    },
                )
                .await?;
                loads.push(load("call_logs", w, t));
            }
        }
        Ok::<_, SeedError>(loads)
    };
    let ab_tests = async {
        let mut loads = Vec::new();
        if has(DataKind::AbTests) {
            let c = ctx.clone();
            let shape = options.catalog.clone();
            let t = Instant::now();
            let w = copy(
                pool,
                "ab_test_events",
                "id, tenant_id, shop_domain, product_id, variant_id, event_type, revenue, created_at",
                n,
                &ctx,
                15,
                move |rng, i, out| {
                    let products = shape.products.max(1);
                    let variants = shape.variants_per_product.max(1);
                    let hostile = c.hostile > 0.0 && rng.random_bool(c.hostile);
                    out.row(8);
                    out.uuid(c.id(15, i));
                    out.uuid(c.tenant);
                    out.text(&shape.shop_domain);
                    let p = rng.random_range(0..products);
                    if hostile && rng.random_bool(0.5) {
                        // Events about a product the shop no longer has.
                        out.text_with(|b| push_u64(b, shape.base + 900_000 + i));
                    } else {
                        out.text_with(|b| push_u64(b, shape.product_id(p)));
                    }
                    out.text_with(|b| push_u64(b, shape.variant_id(p, rng.random_range(0..variants))));
                    let roll = rng.random_range(0..100u32);
                    let (kind, cents) = match roll {
                        0..80 => ("impression", 0),
                        80..95 => ("add_to_cart", 0),
                        _ => ("order", rng.random_range(500..25_000i64)),
                    };
                    out.text(kind);
                    out.cents(cents);
                    let at = c.time_of(15, i);
                    // Now and then exactly on a UTC midnight, which belongs to the new day.
                    out.timestamptz(if hostile { at - at.rem_euclid(86_400_000_000) } else { at });
                },
            )
            .await?;
            loads.push(load("ab_test_events", w, t));
        }
        Ok::<_, SeedError>(loads)
    };
    // Independent tables load side by side, so one table's index builds and key checks
    // (partly single-threaded) overlap another's COPY.
    let gate = tokio::sync::Semaphore::new(CONCURRENT_CHAINS);
    let (leads, customers, orders, pins, quotes, analytics, usage, calls, ab_tests) = futures::try_join!(
        gated(&gate, leads),
        gated(&gate, customers),
        gated(&gate, orders),
        gated(&gate, pins),
        gated(&gate, quotes),
        gated(&gate, analytics),
        gated(&gate, usage),
        gated(&gate, calls),
        gated(&gate, ab_tests),
    )?;
    report.tables = [
        leads, customers, orders, pins, quotes, analytics, usage, calls, ab_tests,
    ]
    .concat();
    report.elapsed = started.elapsed();
    Ok(report)
}

#[derive(Clone)]
struct Ctx {
    tenant: Uuid,
    run: u64,
    days: u32,
    hostile: f64,
    rows: u64,
    /// Now, in microseconds since the Unix epoch.
    now_us: i64,
    rebuild_from: u64,
}

impl Ctx {
    /// When row `i` of table `kind` was created, in microseconds since the Unix epoch: rows
    /// are generated oldest first across the `days` window (with jitter inside each row's
    /// slot), so that PostgreSQL appends to its indexes instead of inserting all over them;
    /// exports still see rows spread over days.
    fn time_of(&self, kind: u64, i: u64) -> i64 {
        let span_us = i64::from(self.days) * 86_400_000_000;
        let rows = i64::try_from(self.rows.max(1)).unwrap_or(i64::MAX);
        let slot = span_us / rows;
        let i = i64::try_from(i).unwrap_or(0);
        let jitter = i64::try_from(
            splitmix(self.run ^ kind ^ (i as u64).wrapping_mul(31)) % slot.max(1) as u64,
        )
        .unwrap_or(0);
        self.now_us - span_us + slot.saturating_mul(i) + jitter
    }

    /// A stable id for row `i` of table `kind` in this run, so related rows can point at
    /// each other without a lookup. Time-ordered (UUIDv7 of the row's creation), as new
    /// systems mint them, which also keeps primary-key inserts local.
    fn id(&self, kind: u64, i: u64) -> Uuid {
        let hi = splitmix(
            self.run ^ self.tenant.as_u64_pair().0 ^ kind.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let lo = splitmix(hi ^ i);
        let millis = u64::try_from(self.time_of(kind, i).div_euclid(1000)).unwrap_or(0);
        let random = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
        let mut rand_bytes = [0u8; 10];
        rand_bytes.copy_from_slice(&random[..10]);
        uuid::Builder::from_unix_timestamp_millis(millis, &rand_bytes).into_uuid()
    }

    /// A random time in the window, for columns no index orders.
    fn random_time(&self, rng: &mut SmallRng) -> i64 {
        let secs = rng.random_range(0..i64::from(self.days) * 86_400);
        self.now_us - secs * 1_000_000
    }

    /// One of `normal`, or now and then a hostile value.
    fn text(&self, out: &mut Rows, rng: &mut SmallRng, normal: &[&str]) {
        if self.hostile > 0.0 && rng.random_bool(self.hostile) {
            out.text(pick(rng, HOSTILE_TEXT));
        } else {
            out.text(pick(rng, normal));
        }
    }
}

/// Models the usage events name, as the AI providers spell them.
const MODELS: &[&str] = &[
    "claude-sonnet-4-20250514",
    "claude-opus-4-20250514",
    "claude-3-5-haiku-20241022",
    "gpt-4o-2024-08-06",
];

/// Call outcomes, completed the most common.
const OUTCOMES: &[&str] = &[
    "completed",
    "completed",
    "completed",
    "completed",
    "failed",
    "no_answer",
    "voicemail",
    "busy",
];

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pick<'a>(rng: &mut SmallRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn email(out: &mut Rows, rng: &mut SmallRng, i: u64) {
    let first = pick(
        rng,
        &["ava", "liam", "noah", "mia", "zoë", "o'brien", "jean-luc"],
    );
    out.text_with(|b| {
        b.extend_from_slice(first.as_bytes());
        b.push(b'.');
        push_u64(b, i);
        b.extend_from_slice(b"@example.com");
    });
}

/// Streams `rows` generated rows into `app.{table}` with binary COPY. Large tables go in
/// two COPYs side by side (two cores: one per server backend), each fed by a blocking
/// thread that encodes chunks while its connection sends the previous one. A load that at
/// least doubles a table drops the table's indexes, keys and the foreign keys touching it
/// first and builds them once at the end: one sort costs far less than keeping a btree up
/// to date row by row, and one join less than a parent lookup and row lock per row.
async fn copy<F>(
    pool: &PgPool,
    table: &'static str,
    columns: &'static str,
    rows: u64,
    ctx: &Ctx,
    stream: u64,
    row: F,
) -> Result<u64, SeedError>
where
    F: FnMut(&mut SmallRng, u64, &mut Rows) + Clone + Send + 'static,
{
    let statement = format!("COPY app.{table} ({columns}) FROM STDIN (FORMAT binary)");
    let rebuild = rows >= ctx.rebuild_from && indexes::drop_for_load(pool, table, rows).await?;
    let streams = if rows >= PARALLEL_FROM { STREAMS } else { 1 };
    // Streams take chunks from one counter, so they finish together.
    let next = Arc::new(AtomicU64::new(0));
    let parts = (0..streams).map(|_| {
        copy_part(
            pool,
            &statement,
            rows,
            ctx,
            stream,
            next.clone(),
            row.clone(),
        )
    });
    let mut written = 0;
    let mut failed = None;
    for result in futures::future::join_all(parts).await {
        match result {
            Ok(n) => written += n,
            Err(e) => failed = Some(e),
        }
    }
    if rebuild {
        indexes::restore(pool, Some(table)).await?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Tables at least this large are loaded by several COPYs at once.
const PARALLEL_FROM: u64 = 200_000;
/// How many COPYs load one large table.
const STREAMS: u64 = 2;

async fn copy_part<F>(
    pool: &PgPool,
    statement: &str,
    rows: u64,
    ctx: &Ctx,
    stream: u64,
    next: Arc<AtomicU64>,
    mut row: F,
) -> Result<u64, SeedError>
where
    F: FnMut(&mut SmallRng, u64, &mut Rows) + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(3);
    // Sent chunks come back for reuse: fresh multi-megabyte buffers cost a page fault
    // per page.
    let (recycle, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
    let seed = ctx.run ^ stream;
    let producer = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(4 << 20);
        buf.extend_from_slice(binary::HEADER);
        loop {
            let chunk = next.fetch_add(1, Ordering::Relaxed);
            let start = chunk.saturating_mul(CHUNK_ROWS);
            if start >= rows {
                break;
            }
            let end = (start + CHUNK_ROWS).min(rows);
            // Seeded by chunk, not by stream: a given seed gives the same rows however
            // the chunks fall to streams.
            let mut rng = SmallRng::seed_from_u64(splitmix(seed ^ chunk.wrapping_mul(0x5eed)));
            let mut out = Rows { buf };
            for i in start..end {
                row(&mut rng, i, &mut out);
            }
            if tx.blocking_send(out.buf).is_err() {
                return;
            }
            buf = reuse
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(4 << 20));
            buf.clear();
        }
        buf.extend_from_slice(binary::TRAILER);
        let _ = tx.blocking_send(buf);
    });
    let mut copy = pool.copy_in_raw(statement).await?;
    while let Some(chunk) = rx.recv().await {
        copy.send(chunk.as_slice()).await?;
        let _ = recycle.send(chunk);
    }
    if let Err(e) = producer.await {
        let _ = copy.abort(e.to_string()).await;
        return Err(SeedError::Generate(e.to_string()));
    }
    Ok(copy.finish().await?)
}
