//! The world a statistics test runs in: a database, the fake providers, the integrations
//! service, connected shops with catalogues and events, an object store, and export
//! service replicas (in-process, or a child process a test may kill).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use haven_auth::Role;
use haven_fake_providers::{FakeCatalog, FakeConfig, FakeProviders};
use haven_objects::{ObjectKey, ObjectStorage, ObjectsArgs};
use haven_proto::export::v1 as pb;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb};
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::harness::{Auth, Client};

pub const SECRET: &str = haven_testkit::JWT_SECRET;
pub const LINK_SECRET: &str = "statistics-test-object-link-secret-0123456789";

/// One variant's counts, as the test computes them from its own events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub impressions: i64,
    pub add_to_carts: i64,
    pub orders: i64,
    pub revenue_cents: i64,
}

/// A connected shop and its catalogue.
pub struct ShopFixture {
    pub tenant: Uuid,
    pub domain: String,
    pub catalog: FakeCatalog,
}

pub struct World {
    pub db: TestDb,
    pub ns: String,
    pub fake: FakeProviders,
    pub integrations: SocketAddr,
    _integrations_stop: Switch,
    pub objects: ObjectsArgs,
    pub shops: Vec<ShopFixture>,
    /// (shop, product, variant) → counts for `day`.
    pub expected: BTreeMap<(String, u64, u64), Expected>,
    pub day: NaiveDate,
    _dir: Option<tempfile::TempDir>,
}

/// A file store in a fresh temporary directory.
pub fn file_store(public_url: &str) -> (ObjectsArgs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let args = ObjectsArgs {
        url: Some(format!("file://{}", dir.path().join("objects").display())),
        ..ObjectsArgs::memory("unused", LINK_SECRET, public_url)
    };
    (args, dir)
}

impl World {
    /// A world with a file store.
    pub async fn with_file_store() -> World {
        let (args, dir) = file_store("http://gateway.test");
        World::new(args, Some(dir)).await
    }

    /// A world whose objects go to a fresh bucket on the S3 protocol server.
    pub async fn with_s3_store() -> World {
        let (endpoint, bucket) = haven_testkit::s3_bucket().await;
        World::new(
            ObjectsArgs::s3(&endpoint, &bucket, LINK_SECRET, "http://gateway.test"),
            None,
        )
        .await
    }

    pub async fn new(objects: ObjectsArgs, dir: Option<tempfile::TempDir>) -> World {
        let db = TestDb::new().await;
        haven_appdata::migrate(&db.pool).await.unwrap();
        let ns = haven_testkit::namespace();
        let fake = FakeProviders::start(FakeConfig::default()).await.unwrap();
        let fake_config = FakeConfig::default();
        let mut providers = haven_integrations::ProviderArgs::defaults();
        providers.shopify_client_id = fake_config.shopify_client_id.clone();
        providers.shopify_client_secret =
            SecretString::from(fake_config.shopify_client_secret.expose_secret().to_owned());
        providers.shopify_url_template = fake.shopify_url_template();
        providers.resend_url = fake.resend_base();
        let config = haven_integrations::Config::for_test(CommonArgs::new(
            &db.url,
            &haven_testkit::nats_url(),
            &ns,
            SECRET,
        ))
        .with_providers(providers);
        let stop = Switch::new();
        let running = haven_testkit::spawn(&stop, |listener, shutdown| {
            haven_integrations::serve(config, listener, shutdown)
        })
        .await;
        haven_testkit::wait_serving(running.addr).await;
        World {
            db,
            ns,
            fake,
            integrations: running.addr,
            _integrations_stop: stop,
            objects,
            shops: Vec::new(),
            expected: BTreeMap::new(),
            day: (Utc::now() - chrono::Duration::days(1)).date_naive(),
            _dir: dir,
        }
    }

    /// Connects `domain` for a new tenant through Shopify OAuth (the fake approves at once)
    /// and gives it `catalog`.
    pub async fn add_shop(&mut self, domain: &str, catalog: FakeCatalog) -> Uuid {
        let tenant = Uuid::new_v4();
        self.fake.set_shopify_catalog(domain, catalog.clone());
        haven_testkit::connect_shopify(self.integrations, tenant, domain).await;
        self.shops.push(ShopFixture {
            tenant,
            domain: domain.to_owned(),
            catalog,
        });
        tenant
    }

    /// Inserts events for every shop: most variants get some on `day` (one in seven none),
    /// with events just outside the day and exactly at its first instant; remembers what
    /// each variant should show.
    pub async fn insert_events(&mut self, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = self.day.and_time(chrono::NaiveTime::MIN).and_utc();
        let (mut ids, mut tenants, mut shops, mut products, mut variants) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut kinds, mut revenues, mut ats): (Vec<&str>, Vec<f64>, Vec<DateTime<Utc>>) =
            (vec![], vec![], vec![]);
        for shop in &self.shops {
            sqlx::query("INSERT INTO app.tenants (id, name, slug) VALUES ($1, 'T', $2) ON CONFLICT DO NOTHING")
                .bind(shop.tenant)
                .bind(format!("t-{}", shop.tenant.simple()))
                .execute(&self.db.pool)
                .await
                .unwrap();
            for (pi, product) in shop.catalog.products.iter().enumerate() {
                for (vi, variant) in product.variants.iter().enumerate() {
                    let key = (shop.domain.clone(), product.id, variant.id);
                    let mut expected = Expected::default();
                    let n = if (pi * 3 + vi) % 7 == 0 {
                        0
                    } else {
                        rng.random_range(1..12)
                    };
                    let mut push =
                        |kind: &'static str, cents: i64, at: DateTime<Utc>, counts: bool| {
                            ids.push(Uuid::new_v4());
                            tenants.push(shop.tenant);
                            shops.push(shop.domain.clone());
                            products.push(product.id.to_string());
                            variants.push(variant.id.to_string());
                            kinds.push(kind);
                            revenues.push(cents as f64 / 100.0);
                            ats.push(at);
                            if counts {
                                match kind {
                                    "impression" => expected.impressions += 1,
                                    "add_to_cart" => expected.add_to_carts += 1,
                                    _ => {
                                        expected.orders += 1;
                                        expected.revenue_cents += cents;
                                    }
                                }
                            }
                        };
                    for _ in 0..n {
                        let roll = rng.random_range(0..10);
                        let (kind, cents) = match roll {
                            0..6 => ("impression", 0),
                            6..9 => ("add_to_cart", 0),
                            _ => ("order", rng.random_range(100..50_000)),
                        };
                        let at = start + chrono::Duration::seconds(rng.random_range(1..86_399));
                        push(kind, cents, at, true);
                    }
                    if n > 0 && vi == 1 {
                        // The day's first instant counts; the instants around the day do not.
                        push("impression", 0, start, true);
                        push(
                            "impression",
                            0,
                            start - chrono::Duration::microseconds(1),
                            false,
                        );
                        push("order", 999, start + chrono::Duration::days(1), false);
                    }
                    self.expected.insert(key, expected);
                }
            }
        }
        sqlx::query(
            "INSERT INTO app.ab_test_events (id, tenant_id, shop_domain, product_id, variant_id, event_type, revenue, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[]::numeric[], $8::timestamptz[])",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&shops)
        .bind(&products)
        .bind(&variants)
        .bind(&kinds)
        .bind(&revenues)
        .bind(&ats)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub fn common(&self) -> CommonArgs {
        CommonArgs::new(&self.db.url, &haven_testkit::nats_url(), &self.ns, SECRET)
    }

    /// The export service's configuration in this world.
    pub fn export_config(&self) -> haven_export::Config {
        let mut config = haven_export::Config::for_test(self.common());
        config.integrations_url = format!("http://{}", self.integrations);
        config.shopify_url_template = self.fake.shopify_url_template();
        config.objects = self.objects.clone();
        config.statistics_lease = Duration::from_secs(2);
        config.statistics_concurrency = 4;
        config
    }

    /// An export service replica in this process, stopped by `stop`.
    pub async fn start_export(
        &self,
        stop: &Switch,
        edit: impl FnOnce(&mut haven_export::Config),
    ) -> SocketAddr {
        let mut config = self.export_config();
        edit(&mut config);
        let running = haven_testkit::spawn(stop, |listener, shutdown| {
            haven_export::serve(config, listener, shutdown)
        })
        .await;
        haven_testkit::wait_serving(running.addr).await;
        running.addr
    }

    pub fn storage(&self) -> ObjectStorage {
        ObjectStorage::open(&self.objects).unwrap()
    }

    /// Every key under `statistic-exports/`.
    pub async fn export_keys(&self) -> BTreeSet<String> {
        self.storage()
            .list(&ObjectKey::parse("statistic-exports").unwrap())
            .map_ok(|l| l.key)
            .try_collect()
            .await
            .unwrap()
    }

    /// The keys a complete run must leave for `day`.
    pub fn wanted_keys(&self) -> BTreeSet<String> {
        let stem = self.day.format("%Y%m%d").to_string();
        let stem = stem.as_str();
        self.shops
            .iter()
            .flat_map(|s| {
                s.catalog.products.iter().flat_map(move |p| {
                    p.variants.iter().flat_map(move |v| {
                        ["csv", "json"].map(|ext| {
                            format!(
                                "statistic-exports/{}/{}/{}/{stem}.{ext}",
                                s.domain, p.id, v.id
                            )
                        })
                    })
                })
            })
            .collect()
    }

    /// Reads every stored file back and checks it against the expected counts and the
    /// backups it names; returns how many variants were checked.
    pub async fn check_files(&self) -> usize {
        let storage = self.storage();
        let stem = self.day.format("%Y%m%d");
        let date = self.day.format("%Y-%m-%d").to_string();
        let mut checked = 0;
        let mut zero = 0;
        for shop in &self.shops {
            for product in &shop.catalog.products {
                for variant in &product.variants {
                    let want = self.expected[&(shop.domain.clone(), product.id, variant.id)];
                    let base = format!(
                        "statistic-exports/{}/{}/{}/{stem}",
                        shop.domain, product.id, variant.id
                    );
                    let csv = read(&storage, &format!("{base}.csv")).await;
                    let mut reader = csv::Reader::from_reader(csv.as_slice());
                    assert_eq!(
                        reader.headers().unwrap().iter().collect::<Vec<_>>(),
                        haven_export::STATISTICS_CSV_HEADER.to_vec()
                    );
                    let rows: Vec<csv::StringRecord> =
                        reader.records().map(Result::unwrap).collect();
                    assert_eq!(rows.len(), 1, "{base}.csv");
                    let row = &rows[0];
                    let ctr = if want.impressions == 0 {
                        0.0
                    } else {
                        want.add_to_carts as f64 / want.impressions as f64
                    };
                    let expected_row = [
                        date.clone(),
                        shop.domain.clone(),
                        product.id.to_string(),
                        variant.id.to_string(),
                        format!("gid://shopify/Product/{}", product.id),
                        format!("gid://shopify/ProductVariant/{}", variant.id),
                        want.impressions.to_string(),
                        want.add_to_carts.to_string(),
                        format!("{ctr:.4}"),
                        want.orders.to_string(),
                        format!(
                            "{}.{:02}",
                            want.revenue_cents / 100,
                            want.revenue_cents % 100
                        ),
                    ];
                    assert_eq!(
                        row.iter().take(11).collect::<Vec<_>>(),
                        expected_row.iter().map(String::as_str).collect::<Vec<_>>(),
                        "{base}.csv"
                    );
                    let json: serde_json::Value =
                        serde_json::from_slice(&read(&storage, &format!("{base}.json")).await)
                            .unwrap();
                    assert_eq!(json["exportDate"], date);
                    assert_eq!(json["shopId"], shop.domain);
                    assert_eq!(json["shopDomain"], shop.domain);
                    assert_eq!(json["product"]["productId"], product.id.to_string());
                    assert_eq!(json["variant"]["variantId"], variant.id.to_string());
                    let m = &json["variant"]["metrics"];
                    assert_eq!(m["impressions"], want.impressions);
                    assert_eq!(m["addToCarts"], want.add_to_carts);
                    assert_eq!(m["orders"], want.orders);
                    assert!(
                        (m["ctr"].as_f64().unwrap() - (ctr * 10_000.0).round() / 10_000.0).abs()
                            < 1e-9
                    );
                    assert!(
                        (m["revenue"].as_f64().unwrap() - want.revenue_cents as f64 / 100.0).abs()
                            < 1e-9
                    );
                    // The images: the variant's own, else the product's, each backed up.
                    let own: Vec<u64> = variant.media.iter().map(|m| m.id).collect();
                    let shown: Vec<u64> = if own.is_empty() {
                        product
                            .media
                            .iter()
                            .filter(|m| m.kind.is_image())
                            .map(|m| m.id)
                            .collect()
                    } else {
                        own
                    };
                    let images = json["variant"]["images"].as_array().unwrap();
                    assert_eq!(images.len(), shown.len(), "{base}.json");
                    let media_ids: Vec<String> = shown
                        .iter()
                        .map(|id| format!("gid://shopify/MediaImage/{id}"))
                        .collect();
                    assert_eq!(
                        row[11]
                            .split('|')
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>(),
                        media_ids
                    );
                    for (image, id) in images.iter().zip(&shown) {
                        assert_eq!(image["mediaId"], format!("gid://shopify/MediaImage/{id}"));
                        let key = image["r2Key"].as_str().unwrap();
                        assert!(
                            key.starts_with(&format!(
                                "{}/products/{}/variants/",
                                shop.domain, product.id
                            )),
                            "{key}"
                        );
                        assert!(key.contains(&format!("/media/{id}.")), "{key}");
                        let bytes = read(&storage, key).await;
                        assert_eq!(
                            &bytes[..4],
                            if key.ends_with(".png") {
                                b"\x89PNG".as_slice()
                            } else {
                                b"\xff\xd8\xff\xe0".as_slice()
                            },
                            "{key}"
                        );
                    }
                    if want == Expected::default() {
                        zero += 1;
                    }
                    checked += 1;
                }
            }
        }
        assert!(zero > 0, "some variants have no events");
        checked
    }

    /// A client with an admin's token.
    pub async fn admin(&self, addr: SocketAddr) -> Client {
        client(addr, &haven_testkit::token(Uuid::new_v4(), Role::Admin)).await
    }

    /// Starts the day's daily run (or finds it) and waits for it to end.
    pub async fn daily_run(&self, client: &mut Client, within: Duration) -> pb::StatisticsRun {
        let started = client
            .trigger_statistics_export(pb::TriggerStatisticsExportRequest {
                date: self.day.format("%Y-%m-%d").to_string(),
                daily: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.finished(client, &started.run.unwrap().id, within)
            .await
    }

    /// Polls the run until it is no longer running.
    pub async fn finished(
        &self,
        client: &mut Client,
        id: &str,
        within: Duration,
    ) -> pb::StatisticsRun {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let run = client
                .get_statistics_run(pb::GetStatisticsRunRequest { id: id.into() })
                .await
                .unwrap()
                .into_inner();
            if run.status != pb::StatisticsRunStatus::Running as i32 {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} still running: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rows in a table of the exports schema.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM exports.{table}"
        )))
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Image fetches the fake CDN served, per media id.
    pub fn image_fetches(&self) -> HashMap<u64, u32> {
        self.shops
            .iter()
            .flat_map(|s| s.catalog.products.iter())
            .flat_map(|p| {
                p.media
                    .iter()
                    .chain(p.variants.iter().flat_map(|v| v.media.iter()))
            })
            .map(|m| (m.id, self.fake.shopify_image_fetches(m.id)))
            .collect()
    }
}

pub async fn client(addr: SocketAddr, token: &str) -> Client {
    let channel = haven_testkit::channel(addr);
    haven_proto::export::v1::export_service_client::ExportServiceClient::with_interceptor(
        channel,
        Auth(format!("Bearer {token}").parse().unwrap()),
    )
}

pub async fn read(storage: &ObjectStorage, key: &str) -> Vec<u8> {
    let download = storage
        .get(&ObjectKey::parse(key).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let chunks: Vec<bytes::Bytes> = download.body.try_collect().await.unwrap();
    chunks.concat()
}
