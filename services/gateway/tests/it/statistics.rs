//! The statistics routes through the gateway against the real services: the cron route's
//! secret, seed 004's manual export (form and JSON) with links the gateway itself serves,
//! and the admin's view of runs.

use std::time::Duration;

use haven_auth::Role;
use haven_fake_providers::{FakeCatalog, FakeConfig, FakeProviders};
use haven_objects::ObjectsArgs;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, listener, namespace, nats_url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

const SECRET: &str = haven_testkit::JWT_SECRET;
const LINK_SECRET: &str = "gateway-statistics-link-secret-0123456789ab";
const CRON: &str = "cron-secret-for-the-statistics-route-0123456789";
const SHOP: &str = "gateway-store.myshopify.com";

struct Stack {
    base: String,
    http: reqwest::Client,
    tenant: Uuid,
    catalog: FakeCatalog,
    stop: Switch,
    _db: TestDb,
    _fake: FakeProviders,
    _dir: tempfile::TempDir,
}

/// Integrations, export and the gateway on one database, a file store, one connected shop.
async fn stack(cron: Option<&str>) -> Stack {
    let db = TestDb::new().await;
    let ns = namespace();
    let stop = Switch::new();
    let fake = FakeProviders::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gl = listener().await;
    let base = format!("http://{}", gl.local_addr().unwrap());
    let objects = ObjectsArgs {
        url: Some(format!("file://{}", dir.path().join("objects").display())),
        ..ObjectsArgs::memory("unused", LINK_SECRET, &base)
    };
    let common = || CommonArgs::new(&db.url, &nats_url(), &ns, SECRET);

    let mut providers = haven_integrations::ProviderArgs::defaults();
    let fc = FakeConfig::default();
    providers.shopify_client_id = fc.shopify_client_id.clone();
    providers.shopify_client_secret =
        SecretString::from(fc.shopify_client_secret.expose_secret().to_owned());
    providers.shopify_url_template = fake.shopify_url_template();
    let config = haven_integrations::Config::for_test(common()).with_providers(providers);
    let integrations =
        haven_testkit::spawn(&stop, |l, s| haven_integrations::serve(config, l, s)).await;
    haven_testkit::wait_serving(integrations.addr).await;

    let mut config = haven_export::Config::for_test(common());
    config.integrations_url = format!("http://{}", integrations.addr);
    config.shopify_url_template = fake.shopify_url_template();
    config.objects = objects.clone();
    let export = haven_testkit::spawn(&stop, |l, s| haven_export::serve(config, l, s)).await;
    haven_testkit::wait_serving(export.addr).await;

    let mut config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), ns.clone()),
        format!("http://{}", integrations.addr),
        "http://127.0.0.1:9".into(),
        format!("http://{}", export.addr),
    )
    .with_objects(objects);
    if let Some(cron) = cron {
        config = config.with_cron_secret(cron);
    }
    tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));

    // One shop, connected through OAuth with the fake Shopify.
    let tenant = Uuid::new_v4();
    let catalog = FakeCatalog::generate(6, 2, 2, 71);
    fake.set_shopify_catalog(SHOP, catalog.clone());
    haven_testkit::connect_shopify(integrations.addr, tenant, SHOP).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Stack {
        base,
        http,
        tenant,
        catalog,
        stop,
        _db: db,
        _fake: fake,
        _dir: dir,
    }
}

impl Stack {
    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or_default())
    }
}

#[tokio::test]
async fn the_cron_route_takes_only_its_secret() {
    let stack = stack(Some(CRON)).await;
    let user = format!("Bearer {}", haven_testkit::token(stack.tenant, Role::Admin));
    for (auth, why) in [
        (None, "missing"),
        (Some(format!("Bearer {CRON}x")), "longer"),
        (
            Some(format!("Bearer {}", &CRON[..CRON.len() - 1])),
            "shorter",
        ),
        (
            Some(format!("Bearer {}", CRON.to_uppercase())),
            "other case",
        ),
        (Some(CRON.to_owned()), "no Bearer"),
        (Some(format!("Basic {CRON}")), "other scheme"),
        (
            Some(user.clone()),
            "a valid admin JWT is not the cron secret",
        ),
    ] {
        let (status, body) = stack
            .get("/api/statistics-export/daily", auth.as_deref())
            .await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["code"], "unauthenticated", "{why}");
    }
    let (status, body) = stack
        .get(
            "/api/statistics-export/daily",
            Some(&format!("Bearer {CRON}")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["created"], true);
    let id = body["run"]["id"].as_str().unwrap().to_owned();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(body["run"]["date"], yesterday);
    // Vercel retries; the day's run is the same run.
    let (status, again) = stack
        .get(
            "/api/statistics-export/daily",
            Some(&format!("Bearer {CRON}")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["created"].as_bool(), again["run"]["id"].as_str()),
        (Some(false), Some(id.as_str()))
    );

    // The admin watches it finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (status, run) = stack
            .get(&format!("/api/statistics-export/runs/{id}"), Some(&user))
            .await;
        assert_eq!(status, 200, "{run}");
        if run["status"] != "running" {
            break run;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["variants"], 12);
    let (status, runs) = stack.get("/api/statistics-export/runs", Some(&user)).await;
    assert_eq!(status, 200);
    assert_eq!(runs["runs"][0]["id"], id.as_str());
    // Users are not admins.
    let plain = format!("Bearer {}", haven_testkit::token(stack.tenant, Role::User));
    let (status, _) = stack.get("/api/statistics-export/runs", Some(&plain)).await;
    assert_eq!(status, 403);
    stack.stop.fire();
}

#[tokio::test]
async fn without_a_cron_secret_the_route_does_not_exist() {
    let stack = stack(None).await;
    let (status, _) = stack
        .get("/api/statistics-export/daily", Some("Bearer anything"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = stack.get("/api/statistics-export/daily", None).await;
    assert_eq!(status, 404);
    stack.stop.fire();
}

#[tokio::test]
async fn a_user_exports_one_variant_and_downloads_it_through_signed_links() {
    let stack = stack(None).await;
    let product = &stack.catalog.products[2];
    let variant = &product.variants[1];
    let user = format!("Bearer {}", haven_testkit::token(stack.tenant, Role::User));
    let day = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();

    // Seed 004's form post.
    let form = stack
        .http
        .post(format!("{}/api/statistics-export/manual", stack.base))
        .header("authorization", &user)
        .form(&[
            ("productId", product.id.to_string()),
            (
                "shopifyProductId",
                format!("gid://shopify/Product/{}", product.id),
            ),
            ("variantId", variant.id.to_string()),
            (
                "shopifyVariantId",
                format!("gid://shopify/ProductVariant/{}", variant.id),
            ),
            ("date", day.clone()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["success"], true);
    let export = &body["export"];
    let stem = day.replace('-', "");
    assert_eq!(export["variantId"], variant.id.to_string());
    assert_eq!(export["date"], day);
    assert_eq!(
        export["csvR2Key"],
        format!(
            "statistic-exports/{SHOP}/{}/{}/{stem}.csv",
            product.id, variant.id
        )
    );
    assert_eq!(
        export["jsonR2Key"],
        format!(
            "statistic-exports/{SHOP}/{}/{}/{stem}.json",
            product.id, variant.id
        )
    );
    // The links are the gateway's own signed links, and they work without a token.
    let csv_url = export["csvUrl"].as_str().unwrap();
    assert!(
        csv_url.starts_with(&format!("{}/api/objects/statistic-exports/", stack.base)),
        "{csv_url}"
    );
    let csv = stack.http.get(csv_url).send().await.unwrap();
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    assert!(
        text.starts_with("date,shopId,productId,variantId,"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{day},{SHOP},{},{},", product.id, variant.id)),
        "{text}"
    );
    let json: Value = stack
        .http
        .get(export["jsonUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["variant"]["variantId"], variant.id.to_string());
    // A link for the CSV does not open the JSON.
    let swapped = csv_url.replace(".csv?", ".json?");
    assert_eq!(stack.http.get(&swapped).send().await.unwrap().status(), 403);

    // The same as JSON; it replaces the files, and the variant lists one export for the day.
    let res = stack
        .http
        .post(format!("{}/api/statistics-export/manual", stack.base))
        .header("authorization", &user)
        .json(&serde_json::json!({"productId": product.id.to_string(), "variantId": variant.id.to_string(), "date": day}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, list) = stack
        .get(
            &format!("/api/statistics-export/variants/{}", variant.id),
            Some(&user),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["date"], day);
    assert!(list[0]["metrics"]["impressions"].is_number());

    // Bad input names the field; a mismatched gid is refused; another shop's variant is 404.
    for (body, field) in [
        (
            serde_json::json!({"variantId": variant.id.to_string()}),
            "productId",
        ),
        (
            serde_json::json!({"productId": "abc", "variantId": variant.id.to_string()}),
            "productId",
        ),
        (
            serde_json::json!({"productId": product.id.to_string(), "variantId": variant.id.to_string(), "shopifyVariantId": "gid://shopify/ProductVariant/1"}),
            "shopifyVariantId",
        ),
        (
            serde_json::json!({"productId": product.id.to_string(), "variantId": variant.id.to_string(), "date": "2026-13-01"}),
            "date",
        ),
    ] {
        let res = stack
            .http
            .post(format!("{}/api/statistics-export/manual", stack.base))
            .header("authorization", &user)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["field"], field, "{err}");
    }
    let res = stack
        .http
        .post(format!("{}/api/statistics-export/manual", stack.base))
        .header("authorization", &user)
        .json(&serde_json::json!({"productId": product.id.to_string(), "variantId": "12345"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // A tenant without a shop is told to connect one.
    let stranger = format!(
        "Bearer {}",
        haven_testkit::token(Uuid::new_v4(), Role::User)
    );
    let res = stack
        .http
        .post(format!("{}/api/statistics-export/manual", stack.base))
        .header("authorization", &stranger)
        .json(&serde_json::json!({"productId": product.id.to_string(), "variantId": variant.id.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "{}", res.text().await.unwrap());
    // No token at all.
    let res = stack
        .http
        .post(format!("{}/api/statistics-export/manual", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    stack.stop.fire();
}
