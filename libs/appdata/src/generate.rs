use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use uuid::Uuid;

use crate::{HOSTILE_TEXT, SeedError};

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
}

impl DataKind {
    pub const ALL: [DataKind; 7] = [
        DataKind::Leads,
        DataKind::Customers,
        DataKind::Orders,
        DataKind::Pins,
        DataKind::Quotes,
        DataKind::Assets,
        DataKind::Analytics,
    ];

    /// The export type key of seed 000.
    pub fn key(self) -> &'static str {
        match self {
            DataKind::Leads => "leads",
            DataKind::Customers => "customers",
            DataKind::Orders => "orders",
            DataKind::Pins => "pins",
            DataKind::Quotes => "quotes",
            DataKind::Assets => "assets",
            DataKind::Analytics => "analytics",
        }
    }
}

impl std::str::FromStr for DataKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataKind::ALL
            .into_iter()
            .find(|k| k.key() == s)
            .ok_or_else(|| format!("unknown type `{s}`: expected one of leads, customers, orders, pins, quotes, assets, analytics"))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SeedOptions {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    /// Rows per kind (analytics: one row per day, at most `days`).
    pub rows: u64,
    pub kinds: Vec<DataKind>,
    /// Rows are spread over this many days back from now.
    pub days: u32,
    /// Fraction of text cells replaced by a hostile value.
    pub hostile_ratio: f64,
    /// Seeds the generator; `None` picks one, so repeated runs add new rows.
    pub seed: Option<u64>,
}

impl SeedOptions {
    pub fn new(tenant_id: Uuid, tenant_name: impl Into<String>, rows: u64) -> Self {
        SeedOptions {
            tenant_id,
            tenant_name: tenant_name.into(),
            rows,
            kinds: DataKind::ALL.to_vec(),
            days: 90,
            hostile_ratio: 0.03,
            seed: None,
        }
    }
}

/// What was written, and how fast.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub rows: Vec<(&'static str, u64)>,
    pub elapsed: Duration,
}

impl SeedReport {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

const CHUNK_ROWS: u64 = 20_000;

/// Generates data for one tenant. Creates the tenant row if it does not exist.
pub async fn seed(pool: &PgPool, options: &SeedOptions) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    let run = options.seed.unwrap_or_else(rand::random);
    let slug = format!("tenant-{}", options.tenant_id.simple());
    sqlx::query(
        "INSERT INTO app.tenants (id, name, slug) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(options.tenant_id)
    .bind(&options.tenant_name)
    .bind(&slug)
    .execute(pool)
    .await?;
    let mut report = SeedReport::default();
    let ctx = Ctx {
        tenant: options.tenant_id,
        run,
        days: options.days.max(1),
        hostile: options.hostile_ratio,
        rows: options.rows,
        now: Utc::now(),
    };
    let has = |k| options.kinds.contains(&k);
    let n = options.rows;

    if has(DataKind::Leads) {
        let c = ctx.clone();
        let w = copy(pool, "COPY app.leads (id, tenant_id, email, segment, source, quiz_completed, converted, utm_source, utm_medium, utm_campaign, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 1, move |rng, i, out| {
            let utm = rng.random_bool(0.6);
            let rec = [
                c.id(1, i).to_string(),
                c.tenant.to_string(),
                email(rng, i),
                c.text(rng, &["quiz", "newsletter", "giveaway", "vip"]),
                c.text(rng, &["pinterest", "instagram", "organic", "referral"]),
                rng.random_bool(0.55).to_string(),
                rng.random_bool(0.12).to_string(),
                opt(utm, || c.text(rng, &["pinterest", "google", "klaviyo"])),
                opt(utm, || pick(rng, &["cpc", "email", "social"]).to_owned()),
                opt(utm, || c.text(rng, &["spring-sale", "holiday-2026", "launch"])),
                c.created_at(1, i),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("leads", w));
    }
    if has(DataKind::Customers) {
        let c = ctx.clone();
        let w = copy(pool, "COPY app.customers (id, tenant_id, email, shopify_customer_id, segment, order_count, total_spent, first_order_at, last_order_at, journey_stage, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 2, move |rng, i, out| {
            let orders = rng.random_range(0..40u32);
            let created = c.created_at(2, i);
            let rec = [
                c.id(2, i).to_string(),
                c.tenant.to_string(),
                email(rng, i),
                format!("{}", 6_000_000_000u64 + i),
                c.text(rng, &["new", "repeat", "vip", "at-risk", "lapsed"]),
                orders.to_string(),
                money(rng, 0, 500_000),
                opt(orders > 0, || created.clone()),
                opt(orders > 0, || c.created(rng)),
                c.text(rng, &["awareness", "consideration", "purchase", "loyalty"]),
                created,
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("customers", w));
        let c = ctx.clone();
        let w = copy(pool, "COPY app.customer_loyalty (customer_id, tenant_id, tier, lifetime_points) FROM STDIN WITH (FORMAT csv)", n, &ctx, 3, move |rng, i, out| {
            // About two customers in three have joined the loyalty programme.
            if i % 3 == 2 {
                return Ok(());
            }
            let rec = [
                c.id(2, i).to_string(),
                c.tenant.to_string(),
                pick(rng, &["bronze", "silver", "gold", "platinum"]).to_owned(),
                rng.random_range(0..50_000u32).to_string(),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("customer_loyalty", w));
    }
    if has(DataKind::Orders) {
        let c = ctx.clone();
        let linked = has(DataKind::Customers) && n > 0;
        let w = copy(pool, "COPY app.customer_orders (id, tenant_id, customer_id, shopify_order_id, customer_email, total, subtotal, discount_total, item_count, status, attribution_channel, coupon_code, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 4, move |rng, i, out| {
            let subtotal = rng.random_range(1_000..50_000i64);
            let discount = if rng.random_bool(0.3) { rng.random_range(0..subtotal / 4) } else { 0 };
            let coupon = discount > 0;
            let buyer = rng.random_range(0..1_000_000);
            let rec = [
                c.id(4, i).to_string(),
                c.tenant.to_string(),
                opt(linked, || c.id(2, rng.random_range(0..c.rows)).to_string()),
                format!("{}", 5_000_000_000u64 + i),
                email(rng, buyer),
                cents(subtotal - discount),
                cents(subtotal),
                cents(discount),
                rng.random_range(1..8u32).to_string(),
                pick(rng, &["paid", "paid", "paid", "fulfilled", "refunded", "pending", "cancelled"]).to_owned(),
                opt(rng.random_bool(0.7), || c.text(rng, &["pinterest", "email", "organic", "direct"])),
                opt(coupon, || c.text(rng, &["WELCOME10", "SPRING20", "VIP15"])),
                c.created_at(4, i),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("customer_orders", w));
    }
    if has(DataKind::Pins) {
        let boards = 12u64;
        let c = ctx.clone();
        let w = copy(pool, "COPY app.boards (id, tenant_id, name, pinterest_board_id, created_at) FROM STDIN WITH (FORMAT csv)", boards, &ctx, 5, move |rng, i, out| {
            let rec = [
                c.id(5, i).to_string(),
                c.tenant.to_string(),
                c.text(rng, &["Quotes to Live By", "Home Decor", "Gift Ideas", "Wall Art", "Motivation"]),
                format!("{}", 900_000_000_000u64 + i),
                c.created_at(5, i),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("boards", w));
        let c = ctx.clone();
        let w = copy(pool, "COPY app.pins (id, tenant_id, board_id, title, status, link, pinterest_pin_id, published_at, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 6, move |rng, i, out| {
            let published = rng.random_bool(0.8);
            let created = c.created_at(6, i);
            let rec = [
                c.id(6, i).to_string(),
                c.tenant.to_string(),
                c.id(5, rng.random_range(0..boards)).to_string(),
                c.text(rng, &["Morning motivation print", "Minimalist quote poster", "Cozy reading nook art"]),
                pick(rng, &["published", "published", "scheduled", "draft", "failed"]).to_owned(),
                opt(rng.random_bool(0.9), || format!("https://shop.example.com/products/p{}", i % 5000)),
                opt(published, || format!("{}", 800_000_000_000u64 + i)),
                opt(published, || created.clone()),
                created,
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("pins", w));
        let c = ctx.clone();
        let w = copy(pool, "COPY app.pin_analytics (pin_id, tenant_id, impressions, saves, clicks) FROM STDIN WITH (FORMAT csv)", n, &ctx, 7, move |rng, i, out| {
            // One pin in five has no analytics yet: exports must show zeros for it.
            if i % 5 == 4 {
                return Ok(());
            }
            let impressions = rng.random_range(0..200_000u64);
            let rec = [
                c.id(6, i).to_string(),
                c.tenant.to_string(),
                impressions.to_string(),
                rng.random_range(0..=impressions / 20 + 1).to_string(),
                rng.random_range(0..=impressions / 30 + 1).to_string(),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("pin_analytics", w));
    }
    let quotes_made = has(DataKind::Quotes);
    if quotes_made {
        let c = ctx.clone();
        let w = copy(pool, "COPY app.quotes (id, tenant_id, text, attribution, collection, mood, status, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 8, move |rng, i, out| {
            let rec = [
                c.id(8, i).to_string(),
                c.tenant.to_string(),
                c.text(rng, &["Be the energy you want to attract.", "Small steps every day.", "Bloom where you are planted."]),
                opt(rng.random_bool(0.7), || c.text(rng, &["Unknown", "Maya Angelou", "Rumi"])),
                c.text(rng, &["growth", "grounding", "wholeness"]),
                c.text(rng, &["calm", "bold", "hopeful", "playful"]),
                pick(rng, &["approved", "approved", "draft", "archived"]).to_owned(),
                c.created_at(8, i),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("quotes", w));
    }
    if has(DataKind::Assets) {
        let c = ctx.clone();
        let w = copy(pool, "COPY app.assets (id, tenant_id, quote_id, format, status, quality_score, url, created_at) FROM STDIN WITH (FORMAT csv)", n, &ctx, 9, move |rng, i, out| {
            let rec = [
                c.id(9, i).to_string(),
                c.tenant.to_string(),
                opt(quotes_made && c.rows > 0, || c.id(8, rng.random_range(0..c.rows)).to_string()),
                pick(rng, &["pin_2x3", "story_9x16", "print_8x10", "square_1x1"]).to_owned(),
                pick(rng, &["ready", "ready", "generating", "failed"]).to_owned(),
                opt(rng.random_bool(0.9), || format!("{}.{:02}", rng.random_range(40..100u32), rng.random_range(0..100u32))),
                opt(rng.random_bool(0.95), || format!("https://cdn.example.com/assets/{}.png", c.id(9, i).simple())),
                c.created_at(9, i),
            ];
            out.write_record(&rec)
        })
        .await?;
        report.rows.push(("assets", w));
    }
    if has(DataKind::Analytics) {
        let days = i64::try_from(options.rows.min(u64::from(ctx.days))).unwrap_or(0);
        let written = sqlx::query(
            "INSERT INTO app.daily_metrics
                 (tenant_id, date, revenue, orders, new_customers, new_leads, quiz_completions, pin_impressions, pin_clicks)
             SELECT $1, (current_date - d::int)::date,
                    round((random() * 5000)::numeric, 2), (random() * 60)::int, (random() * 20)::int,
                    (random() * 80)::int, (random() * 50)::int, (random() * 90000)::bigint, (random() * 3000)::bigint
             FROM generate_series(0, $2 - 1) AS d
             ON CONFLICT (tenant_id, date) DO NOTHING",
        )
        .bind(options.tenant_id)
        .bind(days)
        .execute(pool)
        .await?
        .rows_affected();
        report.rows.push(("daily_metrics", written));
    }
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
    now: DateTime<Utc>,
}

impl Ctx {
    /// When row `i` of table `kind` was created: rows are generated oldest first across the
    /// `days` window (with jitter inside each row's slot), so that PostgreSQL appends to its
    /// indexes instead of inserting all over them; exports still see rows spread over days.
    fn time_of(&self, kind: u64, i: u64) -> DateTime<Utc> {
        let span_us = i64::from(self.days) * 86_400_000_000;
        let rows = i64::try_from(self.rows.max(1)).unwrap_or(i64::MAX);
        let slot = span_us / rows;
        let i = i64::try_from(i).unwrap_or(0);
        let jitter = i64::try_from(
            splitmix(self.run ^ kind ^ (i as u64).wrapping_mul(31)) % slot.max(1) as u64,
        )
        .unwrap_or(0);
        self.now - chrono::Duration::microseconds(span_us)
            + chrono::Duration::microseconds(slot.saturating_mul(i) + jitter)
    }

    /// A stable id for row `i` of table `kind` in this run, so related rows can point at
    /// each other without a lookup. Time-ordered (UUIDv7 of the row's creation), as new
    /// systems mint them, which also keeps primary-key inserts local.
    fn id(&self, kind: u64, i: u64) -> Uuid {
        let hi = splitmix(
            self.run ^ self.tenant.as_u64_pair().0 ^ kind.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let lo = splitmix(hi ^ i);
        let millis = u64::try_from(self.time_of(kind, i).timestamp_millis()).unwrap_or(0);
        let random = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
        let mut rand_bytes = [0u8; 10];
        rand_bytes.copy_from_slice(&random[..10]);
        uuid::Builder::from_unix_timestamp_millis(millis, &rand_bytes).into_uuid()
    }

    /// `created_at` of row `i` of `kind`, as COPY reads it.
    fn created_at(&self, kind: u64, i: u64) -> String {
        timestamp_text(self.time_of(kind, i))
    }

    /// A random time in the window, for columns no index orders.
    fn created(&self, rng: &mut SmallRng) -> String {
        let secs = rng.random_range(0..i64::from(self.days) * 86_400);
        timestamp_text(self.now - chrono::Duration::seconds(secs))
    }

    /// One of `normal`, or now and then a hostile value.
    fn text(&self, rng: &mut SmallRng, normal: &[&str]) -> String {
        if self.hostile > 0.0 && rng.random_bool(self.hostile) {
            pick(rng, HOSTILE_TEXT).to_owned()
        } else {
            pick(rng, normal).to_owned()
        }
    }
}

/// `2026-11-22 21:00:00.123456+00`, written by hand: chrono's format strings are parsed on
/// every call, which is most of a row's cost.
fn timestamp_text(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let mut out = String::with_capacity(32);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_micros()
    );
    out
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pick<'a>(rng: &mut SmallRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn opt(present: bool, value: impl FnOnce() -> String) -> String {
    // An empty unquoted CSV field is NULL to COPY; generated values are never empty.
    if present { value() } else { String::new() }
}

fn email(rng: &mut SmallRng, i: u64) -> String {
    let first = pick(
        rng,
        &["ava", "liam", "noah", "mia", "zoë", "o'brien", "jean-luc"],
    );
    format!("{first}.{i}@example.com")
}

fn money(rng: &mut SmallRng, lo: i64, hi: i64) -> String {
    cents(rng.random_range(lo..hi))
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Streams `rows` generated rows into PostgreSQL. Large tables go in two COPYs side by
/// side (one per half of the rows), each fed by a blocking thread that renders CSV chunks
/// while its connection sends the previous one.
async fn copy<F>(
    pool: &PgPool,
    statement: &'static str,
    rows: u64,
    ctx: &Ctx,
    stream: u64,
    row: F,
) -> Result<u64, SeedError>
where
    F: FnMut(&mut SmallRng, u64, &mut csv::Writer<Vec<u8>>) -> csv::Result<()>
        + Clone
        + Send
        + 'static,
{
    if rows < PARALLEL_FROM {
        return copy_part(pool, statement, 0..rows, ctx, stream, row).await;
    }
    let half = rows / 2;
    let (a, b) = tokio::join!(
        copy_part(pool, statement, 0..half, ctx, stream, row.clone()),
        copy_part(pool, statement, half..rows, ctx, stream ^ 0x5eed, row),
    );
    Ok(a? + b?)
}

/// Tables at least this large are loaded by two COPYs at once.
const PARALLEL_FROM: u64 = 200_000;

async fn copy_part<F>(
    pool: &PgPool,
    statement: &'static str,
    range: std::ops::Range<u64>,
    ctx: &Ctx,
    stream: u64,
    mut row: F,
) -> Result<u64, SeedError>
where
    F: FnMut(&mut SmallRng, u64, &mut csv::Writer<Vec<u8>>) -> csv::Result<()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
    let mut rng = SmallRng::seed_from_u64(splitmix(ctx.run ^ stream));
    let producer = tokio::task::spawn_blocking(move || {
        let mut start = range.start;
        while start < range.end {
            let end = (start + CHUNK_ROWS).min(range.end);
            let mut out = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::with_capacity(4 << 20));
            for i in start..end {
                if let Err(e) = row(&mut rng, i, &mut out) {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return;
                }
            }
            let chunk = out.into_inner().map_err(|e| e.to_string());
            if tx.blocking_send(chunk).is_err() {
                return;
            }
            start = end;
        }
    });
    let mut copy = pool.copy_in_raw(statement).await?;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(bytes) => {
                copy.send(bytes).await?;
            }
            Err(e) => {
                let _ = copy.abort(e.clone()).await;
                return Err(SeedError::Generate(e));
            }
        }
    }
    producer
        .await
        .map_err(|e| SeedError::Generate(e.to_string()))?;
    Ok(copy.finish().await?)
}
