//! Rows in, rows out for the statistics runs: the runs and their per-shop progress, the
//! stored exports, the image backups, and the day's event counts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::format::{ImageRef, Metrics};

type Result<T> = std::result::Result<T, sqlx::Error>;

haven_db::text_enum! {
    /// How a run stands, as `statistics_runs.status` stores it.
    pub enum RunStatus in "statistics_runs.status" {
        Running = "running",
        Completed = "completed",
        Failed = "failed",
    }
}

haven_db::text_enum! {
    /// `daily` runs are claimed once per day; `admin` runs are triggered at will.
    pub enum RunKind in "statistics_runs.kind" {
        Daily = "daily",
        Admin = "admin",
    }
}

haven_db::text_enum! {
    /// A run's state in one shop.
    pub enum ShopStatus in "statistics_run_shops.status" {
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub day: NaiveDate,
    pub kind: RunKind,
    pub shop_domain: Option<String>,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub requested_by: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A new run's narrowing and caller.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub day: NaiveDate,
    pub kind: RunKind,
    pub shop_domain: Option<String>,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub requested_by: String,
}

/// Inserts a run owned by `owner`. A daily run for a day already claimed returns the
/// existing run and `false`: the unique index is the once-per-day guarantee.
pub async fn insert_run(pool: &PgPool, run: &NewRun, owner: &str) -> Result<(RunRow, bool)> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query_scalar!(
        "INSERT INTO exports.statistics_runs
             (id, day, kind, shop_domain, product_id, variant_id, requested_by, status, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (day) WHERE kind = 'daily' DO NOTHING
         RETURNING id",
        id,
        run.day,
        run.kind as RunKind,
        run.shop_domain,
        run.product_id,
        run.variant_id,
        run.requested_by,
        RunStatus::Running as RunStatus,
        owner,
    )
    .fetch_optional(pool)
    .await?;
    match inserted {
        Some(id) => Ok((
            get_run(pool, id).await?.ok_or(sqlx::Error::RowNotFound)?,
            true,
        )),
        None => {
            let existing = sqlx::query_scalar!(
                "SELECT id FROM exports.statistics_runs WHERE day = $1 AND kind = 'daily'",
                run.day
            )
            .fetch_one(pool)
            .await?;
            Ok((
                get_run(pool, existing)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?,
                false,
            ))
        }
    }
}

pub async fn get_run(pool: &PgPool, id: Uuid) -> Result<Option<RunRow>> {
    sqlx::query_as!(
        RunRow,
        r#"SELECT id, day, kind AS "kind: RunKind", shop_domain, product_id, variant_id,
                  requested_by, status AS "status: RunStatus", started_at, finished_at, error
           FROM exports.statistics_runs WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Runs newest first, after `(started_at, id)` of the previous page's last.
pub async fn list_runs(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RunRow>> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        RunRow,
        r#"SELECT id, day, kind AS "kind: RunKind", shop_domain, product_id, variant_id,
                  requested_by, status AS "status: RunStatus", started_at, finished_at, error
           FROM exports.statistics_runs
           WHERE $1::timestamptz IS NULL OR (started_at, id) < ($1, $2)
           ORDER BY started_at DESC, id DESC
           LIMIT $3"#,
        at,
        id,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Takes over the oldest running run whose owner has shown no sign of life for `lease`
/// (killed, or cut off from the database), so it resumes here. One replica wins each.
pub async fn take_over_stale(pool: &PgPool, owner: &str, lease: Duration) -> Result<Option<Uuid>> {
    let lease = lease.as_secs_f64();
    sqlx::query_scalar!(
        "UPDATE exports.statistics_runs SET owner = $1, heartbeat_at = now()
         WHERE id = (SELECT id FROM exports.statistics_runs
                     WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $2)
                     ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id",
        owner,
        lease
    )
    .fetch_optional(pool)
    .await
}

/// Renews `owner`'s hold on a run; `false` when another replica has taken it over.
pub async fn heartbeat(pool: &PgPool, run: Uuid, owner: &str) -> Result<bool> {
    Ok(sqlx::query!(
        "UPDATE exports.statistics_runs SET heartbeat_at = now()
         WHERE id = $1 AND owner = $2 AND status = 'running'",
        run,
        owner
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub async fn finish_run(
    pool: &PgPool,
    run: Uuid,
    owner: &str,
    status: RunStatus,
    error: Option<&str>,
) -> Result<bool> {
    Ok(sqlx::query!(
        "UPDATE exports.statistics_runs SET status = $3, error = $4, finished_at = now()
         WHERE id = $1 AND owner = $2 AND status = 'running'",
        run,
        owner,
        status as RunStatus,
        error
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// A run's progress in one shop.
#[derive(Debug, Clone)]
pub struct ShopProgress {
    pub shop_domain: String,
    pub tenant_id: Uuid,
    pub status: ShopStatus,
    pub cursor: Option<String>,
    pub products: i32,
    pub variants: i32,
    pub images: i32,
    pub failures: i32,
    pub error: Option<String>,
}

pub async fn shops_of(pool: &PgPool, run: Uuid) -> Result<Vec<ShopProgress>> {
    sqlx::query_as!(
        ShopProgress,
        r#"SELECT shop_domain, tenant_id, status AS "status: ShopStatus", cursor, products,
                  variants, images, failures, error
           FROM exports.statistics_run_shops WHERE run_id = $1 ORDER BY shop_domain"#,
        run
    )
    .fetch_all(pool)
    .await
}

/// The shop's progress in the run, starting it if it has none yet.
pub async fn start_shop(
    pool: &PgPool,
    run: Uuid,
    shop: &str,
    tenant: Uuid,
) -> Result<ShopProgress> {
    sqlx::query!(
        "INSERT INTO exports.statistics_run_shops (run_id, shop_domain, tenant_id, status)
         VALUES ($1, $2, $3, 'running') ON CONFLICT (run_id, shop_domain) DO NOTHING",
        run,
        shop,
        tenant
    )
    .execute(pool)
    .await?;
    sqlx::query_as!(
        ShopProgress,
        r#"SELECT shop_domain, tenant_id, status AS "status: ShopStatus", cursor, products,
                  variants, images, failures, error
           FROM exports.statistics_run_shops WHERE run_id = $1 AND shop_domain = $2"#,
        run,
        shop
    )
    .fetch_one(pool)
    .await
}

/// Counts of one finished page.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageCounts {
    pub products: i32,
    pub variants: i32,
    pub images: i32,
    pub failures: i32,
}

/// Records a finished page: the cursor to resume after it and its counts, with the run's
/// heartbeat, in one transaction; `false` when the run is no longer ours.
pub async fn page_done(
    pool: &PgPool,
    run: Uuid,
    owner: &str,
    shop: &str,
    cursor: Option<&str>,
    counts: PageCounts,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let ours = sqlx::query!(
        "UPDATE exports.statistics_runs SET heartbeat_at = now()
         WHERE id = $1 AND owner = $2 AND status = 'running'",
        run,
        owner
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !ours {
        return Ok(false);
    }
    sqlx::query!(
        "UPDATE exports.statistics_run_shops
         SET cursor = COALESCE($3, cursor), products = products + $4, variants = variants + $5,
             images = images + $6, failures = failures + $7, updated_at = now()
         WHERE run_id = $1 AND shop_domain = $2",
        run,
        shop,
        cursor,
        counts.products,
        counts.variants,
        counts.images,
        counts.failures
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn finish_shop(
    pool: &PgPool,
    run: Uuid,
    shop: &str,
    status: ShopStatus,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE exports.statistics_run_shops SET status = $3, error = $4, updated_at = now()
         WHERE run_id = $1 AND shop_domain = $2",
        run,
        shop,
        status as ShopStatus,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The variants of `products` this run has already stored in `shop`: a resumed run skips them.
pub async fn stored_by_run(
    pool: &PgPool,
    run: Uuid,
    shop: &str,
    products: &[String],
) -> Result<HashSet<(String, String)>> {
    Ok(sqlx::query!(
        "SELECT product_id, variant_id FROM exports.statistics_exports
         WHERE run_id = $1 AND shop_domain = $2 AND product_id = ANY($3)",
        run,
        shop,
        products
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.product_id, r.variant_id))
    .collect())
}

/// One UTC day's counts per (product, variant) of `products`; variants without events are
/// absent (and count zero).
pub async fn day_metrics(
    pool: &PgPool,
    tenant: Uuid,
    shop: &str,
    day: NaiveDate,
    products: &[String],
) -> Result<HashMap<(String, String), Metrics>> {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = start + chrono::Duration::days(1);
    Ok(sqlx::query!(
        r#"SELECT product_id, variant_id,
                  count(*) FILTER (WHERE event_type = 'impression') AS "impressions!",
                  count(*) FILTER (WHERE event_type = 'add_to_cart') AS "add_to_carts!",
                  count(*) FILTER (WHERE event_type = 'order') AS "orders!",
                  (COALESCE(sum(revenue) FILTER (WHERE event_type = 'order'), 0) * 100)::int8 AS "revenue_cents!"
           FROM app.ab_test_events
           WHERE tenant_id = $1 AND shop_domain = $2 AND product_id = ANY($3)
             AND created_at >= $4 AND created_at < $5
           GROUP BY product_id, variant_id"#,
        tenant,
        shop,
        products,
        start,
        end
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| {
        (
            (r.product_id, r.variant_id),
            Metrics {
                impressions: r.impressions,
                add_to_carts: r.add_to_carts,
                orders: r.orders,
                revenue_cents: r.revenue_cents,
            },
        )
    })
    .collect())
}

/// Backups of `media` (ids) already made in `shop`, with the run that made each.
pub async fn backups(
    pool: &PgPool,
    shop: &str,
    media: &[String],
) -> Result<HashMap<String, (ImageRef, Option<Uuid>)>> {
    Ok(sqlx::query!(
        "SELECT media_id, shopify_url, object_key, object_url, backed_up_at, run_id
         FROM exports.product_image_backups WHERE shop_domain = $1 AND media_id = ANY($2)",
        shop,
        media
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.media_id.clone(),
            (
                ImageRef {
                    media_id: r.media_id,
                    shopify_url: r.shopify_url,
                    r2_url: r.object_url,
                    r2_key: r.object_key,
                    backed_up_at: r.backed_up_at,
                },
                r.run_id,
            ),
        )
    })
    .collect())
}

/// A finished image copy.
pub struct NewBackup<'a> {
    pub tenant: Uuid,
    pub shop: &'a str,
    pub product_id: &'a str,
    pub variant_id: &'a str,
    pub media_id: &'a str,
    pub shopify_url: &'a str,
    pub key: &'a str,
    pub url: &'a str,
    pub content_type: &'a str,
    pub bytes: i64,
    pub run: Option<Uuid>,
}

/// Records a backup; when another replica recorded the same image first, theirs stands
/// (and is returned) and `false` says this copy was not the one kept.
pub async fn insert_backup(pool: &PgPool, b: &NewBackup<'_>) -> Result<(ImageRef, bool)> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO exports.product_image_backups
             (id, tenant_id, shop_domain, product_id, variant_id, media_id, shopify_url,
              object_key, object_url, content_type, bytes, run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (shop_domain, media_id) DO NOTHING
         RETURNING backed_up_at",
        Uuid::now_v7(),
        b.tenant,
        b.shop,
        b.product_id,
        b.variant_id,
        b.media_id,
        b.shopify_url,
        b.key,
        b.url,
        b.content_type,
        b.bytes,
        b.run
    )
    .fetch_optional(pool)
    .await?;
    if let Some(backed_up_at) = inserted {
        return Ok((
            ImageRef {
                media_id: b.media_id.to_owned(),
                shopify_url: b.shopify_url.to_owned(),
                r2_url: b.url.to_owned(),
                r2_key: b.key.to_owned(),
                backed_up_at,
            },
            true,
        ));
    }
    let existing = backups(pool, b.shop, &[b.media_id.to_owned()]).await?;
    let (image, _) = existing
        .into_values()
        .next()
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((image, false))
}

/// One variant-day's stored export.
pub struct NewExport<'a> {
    pub tenant: Uuid,
    pub shop: &'a str,
    pub product_id: &'a str,
    pub variant_id: &'a str,
    pub shopify_product_id: &'a str,
    pub shopify_variant_id: &'a str,
    pub day: NaiveDate,
    pub csv_key: &'a str,
    pub json_key: &'a str,
    pub csv_url: &'a str,
    pub json_url: &'a str,
    pub metrics: serde_json::Value,
    pub images: serde_json::Value,
    pub run: Option<Uuid>,
}

/// Writes the variant-day's record, replacing an earlier one (a rerun never duplicates).
pub async fn upsert_export(pool: &PgPool, e: &NewExport<'_>) -> Result<()> {
    sqlx::query!(
        "INSERT INTO exports.statistics_exports
             (id, tenant_id, shop_domain, product_id, variant_id, shopify_product_id,
              shopify_variant_id, day, csv_key, json_key, csv_url, json_url, metrics, images,
              run_id, exported_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
         ON CONFLICT (shop_domain, product_id, variant_id, day) DO UPDATE SET
             tenant_id = EXCLUDED.tenant_id, shopify_product_id = EXCLUDED.shopify_product_id,
             shopify_variant_id = EXCLUDED.shopify_variant_id, csv_key = EXCLUDED.csv_key,
             json_key = EXCLUDED.json_key, csv_url = EXCLUDED.csv_url, json_url = EXCLUDED.json_url,
             metrics = EXCLUDED.metrics, images = EXCLUDED.images, run_id = EXCLUDED.run_id,
             exported_at = now()",
        Uuid::now_v7(),
        e.tenant,
        e.shop,
        e.product_id,
        e.variant_id,
        e.shopify_product_id,
        e.shopify_variant_id,
        e.day,
        e.csv_key,
        e.json_key,
        e.csv_url,
        e.json_url,
        Json(&e.metrics) as _,
        Json(&e.images) as _,
        e.run
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A stored export as listed.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub shop_domain: String,
    pub product_id: String,
    pub variant_id: String,
    pub day: NaiveDate,
    pub csv_key: String,
    pub json_key: String,
    pub metrics: Json<serde_json::Value>,
    pub exported_at: DateTime<Utc>,
}

/// A tenant's stored exports of one variant, newest day first.
pub async fn variant_exports(
    pool: &PgPool,
    tenant: Uuid,
    variant: &str,
    limit: i64,
) -> Result<Vec<ExportRow>> {
    sqlx::query_as!(
        ExportRow,
        r#"SELECT shop_domain, product_id, variant_id, day, csv_key, json_key,
                  metrics AS "metrics: Json<serde_json::Value>", exported_at
           FROM exports.statistics_exports
           WHERE tenant_id = $1 AND variant_id = $2
           ORDER BY day DESC, shop_domain
           LIMIT $3"#,
        tenant,
        variant,
        limit
    )
    .fetch_all(pool)
    .await
}
