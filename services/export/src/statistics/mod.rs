//! The daily product statistics (README, "Daily product statistics"): for one UTC day, every
//! variant of every connected Shopify shop gets a CSV and a JSON file in object storage, its
//! images backed up once, and a record.
//!
//! A run walks the shops one at a time and each shop's catalogue a page at a time (memory
//! does not grow with the shop); within a page, images and then variants are handled with at
//! most `HAVEN_STATISTICS_CONCURRENCY` at once. After each page its cursor and counts are
//! committed with the run's heartbeat, so a run whose replica died is taken over by another
//! (or the restarted one) once its lease lapses and resumes after the last finished page,
//! skipping variants it already stored. A variant that fails goes to the retry queue as
//! `exports.statistics_variant`; the run goes on.

mod format;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use futures::{StreamExt, stream};
use haven_bus::Bus;
use haven_objects::{ObjectKey, ObjectStorage, ObjectsError};
use haven_proto::events::v1::{ExportEvent, RetryDispatch};
use haven_proto::export::v1 as pb;
use haven_proto::retry::v1::EnqueueRequest;
use haven_providers::shopify_catalog::{
    CatalogError, CatalogImage, CatalogProduct, CatalogVariant, ShopifyCatalogClient, extension_for,
};
use haven_retry_client::HandlerError;
use haven_shopify::ShopDomain;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use format::{CSV_HEADER, ImageRef, Metrics, VariantReport};
pub use store::{NewRun, RunKind};

use store::{PageCounts, RunRow, RunStatus, ShopStatus};

use crate::integrations::{Integrations, Shop};

/// The retry queue's operation for one variant-day that failed.
pub const RETRY_OPERATION: &str = "exports.statistics_variant";

/// Why a statistics step failed.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("integrations service: {0}")]
    Integrations(String),
    /// The tenant has no connected Shopify shop.
    #[error("no connected Shopify shop: {0}")]
    NoShop(String),
    #[error("{0}")]
    NotFound(String),
    #[error("rendering: {0}")]
    Render(String),
    /// Another replica took the run over (this one stalled past its lease).
    #[error("the run was taken over by another replica")]
    Lost,
}

impl StatError {
    /// Whether a later attempt may succeed without anyone changing anything.
    fn is_retryable(&self) -> bool {
        match self {
            StatError::Database(_) | StatError::Objects(_) | StatError::Integrations(_) => true,
            StatError::Catalog(e) => e.is_retryable(),
            StatError::NoShop(_)
            | StatError::NotFound(_)
            | StatError::Render(_)
            | StatError::Lost => false,
        }
    }
}

/// Tunables, from the service's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Images or variants handled at once within a page.
    pub concurrency: usize,
    /// A running run whose heartbeat is older than this is taken over by another replica.
    pub lease: Duration,
    /// Start the day's run at 00:00 UTC (and at start-up, for a day not yet claimed).
    pub scheduler: bool,
    /// How often the background loop looks for a due day and for runs to take over.
    pub tick: Duration,
    /// Lifetime of the links handed out for stored files.
    pub link_ttl: Duration,
}

/// The statistics machinery of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Statistics {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    bus: Bus,
    objects: ObjectStorage,
    catalog: ShopifyCatalogClient,
    integrations: Integrations,
    settings: Settings,
    /// This replica's name in `statistics_runs.owner`.
    owner: String,
    /// Runs executing in this process, so a trigger and the background loop never run one twice.
    active: Mutex<HashSet<Uuid>>,
    token: CancellationToken,
}

/// The day that ended last (yesterday, UTC).
pub fn yesterday() -> NaiveDate {
    (Utc::now() - chrono::Duration::days(1)).date_naive()
}

/// What identifies one variant of one product in a shop.
struct Target<'a> {
    run: Option<Uuid>,
    tenant: Uuid,
    shop: &'a ShopDomain,
    day: NaiveDate,
    product: &'a CatalogProduct,
    variant: &'a CatalogVariant,
}

impl Statistics {
    pub fn new(
        pool: PgPool,
        bus: Bus,
        objects: ObjectStorage,
        catalog: ShopifyCatalogClient,
        integrations: Integrations,
        settings: Settings,
        token: CancellationToken,
    ) -> Self {
        Statistics {
            inner: Arc::new(Inner {
                pool,
                bus,
                objects,
                catalog,
                integrations,
                settings,
                owner: format!("export-{}", Uuid::new_v4().simple()),
                active: Mutex::new(HashSet::new()),
                token,
            }),
        }
    }

    pub fn objects(&self) -> &ObjectStorage {
        &self.inner.objects
    }

    pub fn link_ttl(&self) -> Duration {
        self.inner.settings.link_ttl
    }

    /// Starts (or, for a daily run already claimed, finds) a run; a new one goes on in the
    /// background.
    pub async fn trigger(&self, run: NewRun) -> Result<(RunRow, bool), StatError> {
        let (row, created) = store::insert_run(&self.inner.pool, &run, &self.inner.owner).await?;
        if created {
            tracing::info!(run = %row.id, day = %row.day, kind = %row.kind, by = %row.requested_by, "statistics run started");
            self.spawn(row.id);
        }
        Ok((row, created))
    }

    fn spawn(&self, run: Uuid) {
        let this = self.clone();
        tokio::spawn(async move { this.execute(run).await });
    }

    /// The scheduler and the takeover of abandoned runs, until shutdown.
    pub async fn background(self) {
        let mut tick = tokio::time::interval(self.inner.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.token.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.inner.settings.scheduler {
                let run = NewRun {
                    day: yesterday(),
                    kind: RunKind::Daily,
                    shop_domain: None,
                    product_id: None,
                    variant_id: None,
                    requested_by: "scheduler".into(),
                };
                if let Err(e) = self.trigger(run).await {
                    tracing::warn!(error = %e, "cannot claim the day's statistics run; trying again");
                }
            }
            loop {
                match store::take_over_stale(
                    &self.inner.pool,
                    &self.inner.owner,
                    self.inner.settings.lease,
                )
                .await
                {
                    Ok(Some(run)) => {
                        tracing::warn!(%run, "taking over a statistics run whose replica stopped; resuming it");
                        self.spawn(run);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look for abandoned statistics runs");
                        break;
                    }
                }
            }
        }
    }

    /// Runs (or resumes) `run` to its end, unless another replica takes it over.
    async fn execute(&self, run: Uuid) {
        {
            let Ok(mut active) = self.inner.active.lock() else {
                return;
            };
            if !active.insert(run) {
                return;
            }
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = self.walk(run) => outcome,
            lost = self.keep_alive(run) => Err(lost),
        };
        let (status, error) = match &outcome {
            Ok(()) => (RunStatus::Completed, None),
            Err(StatError::Lost) => {
                tracing::warn!(%run, "statistics run taken over by another replica; stopping here");
                self.forget(run);
                return;
            }
            // The database, the bus or the integrations service is away: the run stays
            // running, its heartbeat stops, and after the lease a replica (this one too)
            // resumes it after its last committed page.
            Err(e) if e.is_retryable() => {
                tracing::warn!(%run, error = %e, lease = ?self.inner.settings.lease, "statistics run paused; it resumes after the lease");
                self.forget(run);
                return;
            }
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        match store::finish_run(
            &self.inner.pool,
            run,
            &self.inner.owner,
            status,
            error.as_deref(),
        )
        .await
        {
            Ok(true) => self.summarise(run, started.elapsed()).await,
            Ok(false) => tracing::warn!(%run, "statistics run ended elsewhere"),
            // Left running: after the lease another replica (or this one) resumes it.
            Err(e) => {
                tracing::error!(%run, error = %e, "cannot record the end of a statistics run")
            }
        }
        self.forget(run);
    }

    fn forget(&self, run: Uuid) {
        if let Ok(mut active) = self.inner.active.lock() {
            active.remove(&run);
        }
    }

    /// Renews the run's heartbeat between pages (a long page must not look dead); returns
    /// when the run is no longer ours. Shutdown stops renewing, so another replica resumes.
    async fn keep_alive(&self, run: Uuid) -> StatError {
        let every = (self.inner.settings.lease / 3).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = self.inner.token.cancelled() => return StatError::Lost,
                _ = tokio::time::sleep(every) => {}
            }
            match store::heartbeat(&self.inner.pool, run, &self.inner.owner).await {
                Ok(true) => {}
                Ok(false) => return StatError::Lost,
                Err(e) => {
                    tracing::warn!(%run, error = %e, "cannot renew a statistics run's heartbeat")
                }
            }
        }
    }

    async fn walk(&self, run_id: Uuid) -> Result<(), StatError> {
        let run = store::get_run(&self.inner.pool, run_id)
            .await?
            .ok_or_else(|| StatError::NotFound(format!("statistics run {run_id}")))?;
        let shops = self.inner.integrations.all().await?;
        tracing::info!(run = %run.id, day = %run.day, shops = shops.len(), "statistics run: shops found");
        for shop in shops {
            if run
                .shop_domain
                .as_deref()
                .is_some_and(|s| s != shop.domain.as_str())
            {
                continue;
            }
            self.walk_shop(&run, &shop).await?;
        }
        Ok(())
    }

    async fn walk_shop(&self, run: &RunRow, shop: &Shop) -> Result<(), StatError> {
        let pool = &self.inner.pool;
        let domain = shop.domain.as_str();
        let progress = store::start_shop(pool, run.id, domain, shop.tenant).await?;
        match progress.status {
            ShopStatus::Running => {}
            ShopStatus::Done | ShopStatus::Failed => return Ok(()),
        }
        let token = match self.inner.integrations.token(shop.tenant).await {
            Ok(token) => token.token,
            Err(e) => return self.shop_failed(run, domain, &e).await,
        };
        let mut cursor = progress.cursor;
        loop {
            let page = match self
                .inner
                .catalog
                .products_page(&shop.domain, &token, cursor.as_deref())
                .await
            {
                Ok(page) => page,
                Err(e) => return self.shop_failed(run, domain, &StatError::Catalog(e)).await,
            };
            let products: Vec<&CatalogProduct> = page
                .products
                .iter()
                .filter(|p| {
                    run.product_id
                        .as_deref()
                        .is_none_or(|id| id == p.legacy_id.to_string())
                })
                .collect();
            let counts = self.export_page(run, shop, &products).await?;
            let next = page.end_cursor.clone();
            if !store::page_done(
                pool,
                run.id,
                &self.inner.owner,
                domain,
                next.as_deref(),
                counts,
            )
            .await?
            {
                return Err(StatError::Lost);
            }
            match (page.has_next_page, next) {
                (true, Some(next)) if cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next)
                }
                _ => break,
            }
        }
        store::finish_shop(pool, run.id, domain, ShopStatus::Done, None).await?;
        tracing::info!(run = %run.id, shop = %domain, "statistics run: shop done");
        Ok(())
    }

    async fn shop_failed(
        &self,
        run: &RunRow,
        shop: &str,
        error: &StatError,
    ) -> Result<(), StatError> {
        tracing::warn!(run = %run.id, %shop, %error, "statistics run: cannot read this shop; going on with the others");
        let one = PageCounts {
            failures: 1,
            ..PageCounts::default()
        };
        if !store::page_done(&self.inner.pool, run.id, &self.inner.owner, shop, None, one).await? {
            return Err(StatError::Lost);
        }
        store::finish_shop(
            &self.inner.pool,
            run.id,
            shop,
            ShopStatus::Failed,
            Some(&error.to_string()),
        )
        .await?;
        Ok(())
    }

    /// One page of products: the day's counts and what this run already stored in one query
    /// each, then the page's images (each at most once), then its variants.
    async fn export_page(
        &self,
        run: &RunRow,
        shop: &Shop,
        products: &[&CatalogProduct],
    ) -> Result<PageCounts, StatError> {
        let pool = &self.inner.pool;
        let domain = shop.domain.as_str();
        let ids: Vec<String> = products.iter().map(|p| p.legacy_id.to_string()).collect();
        let done = store::stored_by_run(pool, run.id, domain, &ids).await?;
        let metrics = store::day_metrics(pool, shop.tenant, domain, run.day, &ids).await?;
        let wanted: Vec<(&CatalogProduct, &CatalogVariant)> = products
            .iter()
            .flat_map(|p| p.variants.iter().map(move |v| (*p, v)))
            .filter(|(_, v)| {
                run.variant_id
                    .as_deref()
                    .is_none_or(|id| id == v.legacy_id.to_string())
            })
            .collect();
        // Stored by an attempt at this page that died before committing its counts: skipped,
        // and counted now.
        // Every wanted variant's images, so those backed up by the dead attempt are counted
        // too (they are found, not fetched again).
        let (images, backed_up) = self
            .back_up_images(Some(run.id), shop.tenant, &shop.domain, &wanted)
            .await?;
        let (stored, work): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(p, v)| done.contains(&(p.legacy_id.to_string(), v.legacy_id.to_string())));
        let concurrency = self.inner.settings.concurrency.max(1);
        // Futures made in a loop (not a closure) and then run at most `concurrency` at once.
        let mut jobs = Vec::with_capacity(work.len());
        for (product, variant) in work {
            let images = &images;
            let metrics = &metrics;
            jobs.push(async move {
                let target = Target {
                    run: Some(run.id),
                    tenant: shop.tenant,
                    shop: &shop.domain,
                    day: run.day,
                    product,
                    variant,
                };
                let key = (product.legacy_id.to_string(), variant.legacy_id.to_string());
                let m = metrics.get(&key).copied().unwrap_or_default();
                let result = match gather(variant.images(product), images) {
                    Ok(refs) => self.store_variant(&target, m, &refs).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                (product, variant, result)
            });
        }
        let results: Vec<_> = stream::iter(jobs)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut counts = PageCounts {
            products: i32::try_from(products.len()).unwrap_or(i32::MAX),
            variants: i32::try_from(stored.len()).unwrap_or(i32::MAX),
            images: backed_up,
            ..PageCounts::default()
        };
        for (product, variant, result) in results {
            match result {
                Ok(()) => counts.variants += 1,
                Err(e) => {
                    counts.failures += 1;
                    self.hand_to_retry(shop.tenant, &shop.domain, run.day, product, variant, &e)
                        .await?;
                }
            }
        }
        Ok(counts)
    }

    /// Backs up every image `work` shows that the shop has no backup of yet, each once
    /// (variants sharing a product image share its backup), streamed into the store.
    async fn back_up_images(
        &self,
        run: Option<Uuid>,
        tenant: Uuid,
        shop: &ShopDomain,
        work: &[(&CatalogProduct, &CatalogVariant)],
    ) -> Result<(HashMap<String, Result<ImageRef, String>>, i32), StatError> {
        let mut wanted: Vec<(&CatalogProduct, &CatalogVariant, &CatalogImage)> = Vec::new();
        let mut seen = HashSet::new();
        for (product, variant) in work {
            for image in variant.images(product) {
                if seen.insert(image.id.as_str()) {
                    wanted.push((product, variant, image));
                }
            }
        }
        let ids: Vec<String> = wanted.iter().map(|(_, _, i)| i.id.clone()).collect();
        let existing = store::backups(&self.inner.pool, shop.as_str(), &ids).await?;
        // Backed up by this very run: an attempt at this page that died before its counts
        // were committed (a product's images belong to its page only), so they count here.
        let mut backed_up = existing
            .values()
            .filter(|(_, by)| run.is_some() && *by == run)
            .count() as i32;
        let mut images: HashMap<String, Result<ImageRef, String>> = existing
            .into_iter()
            .map(|(id, (image, _))| (id, Ok(image)))
            .collect();
        let missing: Vec<_> = wanted
            .into_iter()
            .filter(|(_, _, i)| !images.contains_key(&i.id))
            .collect();
        let mut jobs = Vec::with_capacity(missing.len());
        for (product, variant, image) in missing {
            jobs.push(async move {
                let result = self
                    .back_up(run, tenant, shop, product, variant, image)
                    .await;
                (image.id.clone(), result)
            });
        }
        let results: Vec<_> = stream::iter(jobs)
            .buffer_unordered(self.inner.settings.concurrency.max(1))
            .collect()
            .await;
        for (id, result) in results {
            match result {
                Ok((image, kept)) => {
                    backed_up += i32::from(kept);
                    images.insert(id, Ok(image));
                }
                Err(e) => {
                    tracing::warn!(shop = %shop, media = %id, error = %e, "image backup failed");
                    images.insert(id, Err(e.to_string()));
                }
            }
        }
        Ok((images, backed_up))
    }

    /// Copies one image into `{shop}/products/{p}/variants/{v}/media/{n}.{ext}`, streamed.
    async fn back_up(
        &self,
        run: Option<Uuid>,
        tenant: Uuid,
        shop: &ShopDomain,
        product: &CatalogProduct,
        variant: &CatalogVariant,
        image: &CatalogImage,
    ) -> Result<(ImageRef, bool), StatError> {
        let download = self.inner.catalog.fetch_image(&image.url).await?;
        let content_type = download
            .content_type
            .clone()
            .or_else(|| image.mime_type.clone())
            .unwrap_or_else(|| "application/octet-stream".into());
        let ext = extension_for(&content_type)
            .or_else(|| image.mime_type.as_deref().and_then(extension_for))
            .unwrap_or("bin");
        let media = image.id.rsplit('/').next().unwrap_or(&image.id);
        let key = ObjectKey::join(&[
            shop.as_str(),
            "products",
            &product.legacy_id.to_string(),
            "variants",
            &variant.legacy_id.to_string(),
            "media",
            &format!("{media}.{ext}"),
        ])
        .map_err(|e| StatError::Render(format!("image key: {e}")))?;
        let bytes = self.inner.objects.put_stream(&key, download.body).await?;
        let url = self.inner.objects.address(&key);
        let (image_ref, kept) = store::insert_backup(
            &self.inner.pool,
            &store::NewBackup {
                tenant,
                shop: shop.as_str(),
                product_id: &product.legacy_id.to_string(),
                variant_id: &variant.legacy_id.to_string(),
                media_id: &image.id,
                shopify_url: &image.url,
                key: key.as_str(),
                url: &url,
                content_type: &content_type,
                bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                run,
            },
        )
        .await?;
        Ok((image_ref, kept))
    }

    /// Writes the variant-day's CSV and JSON (replacing earlier ones) and its record.
    async fn store_variant(
        &self,
        t: &Target<'_>,
        metrics: Metrics,
        images: &[ImageRef],
    ) -> Result<(ObjectKey, ObjectKey), StatError> {
        let product_id = t.product.legacy_id.to_string();
        let variant_id = t.variant.legacy_id.to_string();
        let report = VariantReport {
            day: t.day,
            shop_id: t.shop.as_str(),
            shop_domain: t.shop.as_str(),
            product_id: &product_id,
            shopify_product_id: &t.product.id,
            variant_id: &variant_id,
            shopify_variant_id: &t.variant.id,
            metrics,
            images,
        };
        let csv = report.csv().map_err(|e| StatError::Render(e.to_string()))?;
        let json = report
            .json()
            .map_err(|e| StatError::Render(e.to_string()))?;
        let stem = t.day.format("%Y%m%d").to_string();
        let key = |ext: &str| {
            ObjectKey::join(&[
                "statistic-exports",
                t.shop.as_str(),
                &product_id,
                &variant_id,
                &format!("{stem}.{ext}"),
            ])
            .map_err(|e| StatError::Render(format!("object key: {e}")))
        };
        let (csv_key, json_key) = (key("csv")?, key("json")?);
        let objects = &self.inner.objects;
        futures::try_join!(
            objects.put(&csv_key, Bytes::from(csv)),
            objects.put(&json_key, Bytes::from(json)),
        )?;
        store::upsert_export(
            &self.inner.pool,
            &store::NewExport {
                tenant: t.tenant,
                shop: t.shop.as_str(),
                product_id: &product_id,
                variant_id: &variant_id,
                shopify_product_id: &t.product.id,
                shopify_variant_id: &t.variant.id,
                day: t.day,
                csv_key: csv_key.as_str(),
                json_key: json_key.as_str(),
                csv_url: &objects.address(&csv_key),
                json_url: &objects.address(&json_key),
                metrics: metrics.to_json(),
                images: serde_json::to_value(images)
                    .map_err(|e| StatError::Render(e.to_string()))?,
                run: t.run,
            },
        )
        .await?;
        Ok((csv_key, json_key))
    }

    /// Hands one failed variant-day to the retry queue, once per variant and day.
    async fn hand_to_retry(
        &self,
        tenant: Uuid,
        shop: &ShopDomain,
        day: NaiveDate,
        product: &CatalogProduct,
        variant: &CatalogVariant,
        error: &StatError,
    ) -> Result<(), StatError> {
        tracing::warn!(shop = %shop, product = product.legacy_id, variant = variant.legacy_id, %day, %error, "variant export failed; handed to the retry queue");
        let payload = VariantJob {
            shop: shop.as_str().to_owned(),
            product_id: product.legacy_id.to_string(),
            variant_id: variant.legacy_id.to_string(),
            date: day.format("%Y-%m-%d").to_string(),
        };
        let key = format!(
            "statistics:{}:{}:{}:{}",
            payload.shop, payload.product_id, payload.variant_id, payload.date
        );
        let request = EnqueueRequest {
            operation_type: RETRY_OPERATION.into(),
            payload_json: serde_json::to_string(&payload)
                .map_err(|e| StatError::Render(e.to_string()))?,
            max_attempts: 0,
            idempotency_key: key.clone(),
            reference_id: String::new(),
            reference_table: String::new(),
            last_error: error.to_string(),
            first_run: None,
        };
        haven_retry_client::enqueue(&self.inner.bus, tenant, None, request, &key)
            .await
            .map_err(|e| StatError::Integrations(format!("cannot hand to the retry queue: {e}")))
    }

    /// Exports one variant-day now (a retry, or a user's manual export), outside any run.
    pub async fn export_one(
        &self,
        tenant: Uuid,
        expect_shop: Option<&str>,
        product_id: u64,
        variant_id: u64,
        day: NaiveDate,
    ) -> Result<(ShopDomain, ObjectKey, ObjectKey), StatError> {
        let shop_token = self.inner.integrations.token(tenant).await?;
        if let Some(shop) = expect_shop
            && shop != shop_token.domain.as_str()
        {
            return Err(StatError::NotFound(format!(
                "the tenant's shop is now {}, not {shop}",
                shop_token.domain
            )));
        }
        let shop = shop_token.domain;
        let product = self
            .inner
            .catalog
            .product(&shop, &shop_token.token, product_id)
            .await?
            .ok_or_else(|| StatError::NotFound(format!("product {product_id} is not in {shop}")))?;
        let variant = product
            .variants
            .iter()
            .find(|v| v.legacy_id == variant_id)
            .ok_or_else(|| {
                StatError::NotFound(format!(
                    "variant {variant_id} is not a variant of product {product_id}"
                ))
            })?;
        let work = [(&product, variant)];
        let (images, _) = self.back_up_images(None, tenant, &shop, &work).await?;
        let refs = gather(variant.images(&product), &images)?;
        let ids = [product.legacy_id.to_string()];
        let metrics = store::day_metrics(&self.inner.pool, tenant, shop.as_str(), day, &ids)
            .await?
            .remove(&(ids[0].clone(), variant.legacy_id.to_string()))
            .unwrap_or_default();
        let target = Target {
            run: None,
            tenant,
            shop: &shop,
            day,
            product: &product,
            variant,
        };
        let (csv, json) = self.store_variant(&target, metrics, &refs).await?;
        Ok((shop, csv, json))
    }

    /// The retry queue's attempt at one variant-day.
    pub async fn retry(&self, dispatch: RetryDispatch) -> Result<(), HandlerError> {
        let tenant: Uuid = dispatch
            .tenant_id
            .parse()
            .map_err(|_| HandlerError::permanent("the dispatch's tenant_id is not a UUID"))?;
        let job: VariantJob = serde_json::from_str(&dispatch.payload_json)
            .map_err(|e| HandlerError::permanent(format!("payload: {e}")))?;
        let (product, variant) = match (job.product_id.parse(), job.variant_id.parse()) {
            (Ok(p), Ok(v)) => (p, v),
            _ => {
                return Err(HandlerError::permanent(
                    "payload: productId and variantId must be numeric",
                ));
            }
        };
        let day = NaiveDate::parse_from_str(&job.date, "%Y-%m-%d")
            .map_err(|e| HandlerError::permanent(format!("payload: date: {e}")))?;
        match self
            .export_one(tenant, Some(&job.shop), product, variant, day)
            .await
        {
            Ok(_) => {
                tracing::info!(shop = %job.shop, product, variant, %day, "variant export retried and stored");
                Ok(())
            }
            Err(e) if e.is_retryable() => Err(HandlerError::retryable(e.to_string())),
            Err(e) => Err(HandlerError::permanent(e.to_string())),
        }
    }

    /// A run with its per-shop progress, as the API shows it.
    pub async fn run(&self, id: Uuid) -> Result<Option<pb::StatisticsRun>, StatError> {
        let Some(row) = store::get_run(&self.inner.pool, id).await? else {
            return Ok(None);
        };
        let shops = store::shops_of(&self.inner.pool, id).await?;
        Ok(Some(to_proto(&row, &shops)))
    }

    /// Runs newest first; the token is the last run's id.
    pub async fn runs(
        &self,
        limit: i64,
        after: Option<Uuid>,
    ) -> Result<(Vec<pb::StatisticsRun>, String), StatError> {
        let after = match after {
            Some(id) => store::get_run(&self.inner.pool, id)
                .await?
                .map(|r| (r.started_at, r.id)),
            None => None,
        };
        let rows = store::list_runs(&self.inner.pool, after, limit).await?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in &rows {
            let shops = store::shops_of(&self.inner.pool, row.id).await?;
            runs.push(to_proto(row, &shops));
        }
        let next = if rows.len() as i64 == limit {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((runs, next))
    }

    /// A tenant's stored exports of one variant.
    pub async fn variant_exports(
        &self,
        tenant: Uuid,
        variant: &str,
        limit: i64,
    ) -> Result<Vec<store::ExportRow>, StatError> {
        Ok(store::variant_exports(&self.inner.pool, tenant, variant, limit).await?)
    }

    /// Logs the run's summary, and publishes it on `haven.exports.events.completed`.
    async fn summarise(&self, run: Uuid, took: Duration) {
        let summary = match self.run(run).await {
            Ok(Some(summary)) => summary,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(%run, error = %e, "cannot read the finished run back");
                return;
            }
        };
        tracing::info!(
            run = %summary.id,
            day = %summary.date,
            status = ?pb::StatisticsRunStatus::try_from(summary.status).unwrap_or_default(),
            shops = summary.shops,
            products = summary.products,
            variants = summary.variants,
            images = summary.images,
            failures = summary.failures,
            duration_ms = summary.duration_ms,
            this_replica_ms = took.as_millis() as u64,
            "statistics run finished"
        );
        let event = ExportEvent {
            entry: None,
            occurred_at: Some(haven_proto::time::timestamp(Utc::now())),
            statistics_run: Some(summary),
        };
        if let Err(e) = self
            .inner
            .bus
            .publish(
                crate::history::COMPLETED_SUBJECT,
                &event,
                &format!("statistics:{run}"),
            )
            .await
        {
            tracing::warn!(%run, error = %e, "cannot publish the statistics run's summary");
        }
    }
}

/// The image references of a variant, failing when any image could not be backed up.
fn gather(
    wanted: &[CatalogImage],
    images: &HashMap<String, Result<ImageRef, String>>,
) -> Result<Vec<ImageRef>, StatError> {
    wanted
        .iter()
        .map(|image| match images.get(&image.id) {
            Some(Ok(image)) => Ok(image.clone()),
            Some(Err(e)) => Err(StatError::Integrations(format!("image {}: {e}", image.id))),
            None => Err(StatError::NotFound(format!(
                "image {} was not backed up",
                image.id
            ))),
        })
        .collect()
}

/// The retry payload of `exports.statistics_variant`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct VariantJob {
    shop: String,
    product_id: String,
    variant_id: String,
    date: String,
}

fn to_proto(row: &RunRow, shops: &[store::ShopProgress]) -> pb::StatisticsRun {
    let sum = |f: fn(&store::ShopProgress) -> i32| -> u64 {
        shops.iter().map(|s| u64::try_from(f(s)).unwrap_or(0)).sum()
    };
    let finished = row.finished_at.unwrap_or_else(Utc::now);
    pb::StatisticsRun {
        id: row.id.to_string(),
        date: row.day.format("%Y-%m-%d").to_string(),
        kind: row.kind.as_str().to_owned(),
        status: match row.status {
            RunStatus::Running => pb::StatisticsRunStatus::Running,
            RunStatus::Completed => pb::StatisticsRunStatus::Completed,
            RunStatus::Failed => pb::StatisticsRunStatus::Failed,
        } as i32,
        shop_domain: row.shop_domain.clone().unwrap_or_default(),
        product_id: row.product_id.clone().unwrap_or_default(),
        variant_id: row.variant_id.clone().unwrap_or_default(),
        shops: shops
            .iter()
            .filter(|s| match s.status {
                ShopStatus::Done | ShopStatus::Failed => true,
                ShopStatus::Running => false,
            })
            .count() as u32,
        products: sum(|s| s.products),
        variants: sum(|s| s.variants),
        images: sum(|s| s.images),
        failures: sum(|s| s.failures),
        started_at: Some(haven_proto::time::timestamp(row.started_at)),
        finished_at: row.finished_at.map(haven_proto::time::timestamp),
        duration_ms: u64::try_from((finished - row.started_at).num_milliseconds()).unwrap_or(0),
        error: row.error.clone().unwrap_or_default(),
        shop_progress: shops
            .iter()
            .map(|s| pb::StatisticsRunShop {
                shop_domain: s.shop_domain.clone(),
                tenant_id: s.tenant_id.to_string(),
                status: s.status.as_str().to_owned(),
                products: u64::try_from(s.products).unwrap_or(0),
                variants: u64::try_from(s.variants).unwrap_or(0),
                images: u64::try_from(s.images).unwrap_or(0),
                failures: u64::try_from(s.failures).unwrap_or(0),
                error: s.error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Stored object keys read back as keys (they were checked when written).
pub fn stored_key(key: &str) -> Result<ObjectKey, StatError> {
    ObjectKey::parse(key).map_err(|e| StatError::Render(format!("stored key {key:?}: {e}")))
}
