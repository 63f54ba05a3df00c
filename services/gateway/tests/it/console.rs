//! The web console in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/console.mjs`), against the whole stack on loopback — three services, the
//! gateway, the fake providers, PostgreSQL and NATS. This test starts the stack and two
//! pages on other origins, runs the browser script, then checks what the browser did from
//! the database's side. Screenshots of every page land in `target/console-screenshots/`.
//!
//! `./deploy/test` installs Chromium and playwright-core; run alone, the test needs
//! `HAVEN_PLAYWRIGHT_CORE` and `HAVEN_CHROMIUM` as `deploy/lib.sh`'s `ensure_browser` sets them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::response::Html;
use haven_appdata::{DataKind, SeedOptions};
use haven_auth::Role;
use haven_fake_providers::{FakeConfig, FakeProviders};
use haven_integrations::ProviderArgs;
use haven_proto::retry::v1 as pb;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, listener, namespace, nats_url};
use secrecy::SecretString;
use uuid::Uuid;

const SECRET: &str = haven_testkit::JWT_SECRET;
const ORDERS: u64 = 100_000;
const KLAVIYO_KEY: &str = "pk_console_browser_test";
const SHOP: &str = "console-test.myshopify.com";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A blank page on an origin of its own, for the cross-origin checks.
async fn origin_server(stop: &Switch) -> String {
    let l = listener().await;
    let base = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { Html("<!doctype html><title>other origin</title>") }),
    );
    let wait = stop.wait();
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(wait)
            .await
            .unwrap()
    });
    base
}

#[tokio::test]
async fn the_console_works_in_chromium() {
    let (Ok(playwright), Ok(chromium)) = (
        std::env::var("HAVEN_PLAYWRIGHT_CORE"),
        std::env::var("HAVEN_CHROMIUM"),
    ) else {
        panic!(
            "the browser test needs Chromium and playwright-core: run ./deploy/test, which \
             installs both (or set HAVEN_PLAYWRIGHT_CORE and HAVEN_CHROMIUM)"
        );
    };

    let db = TestDb::new().await;
    let stop = Switch::new();
    let ns = namespace();
    let common = CommonArgs::new(&db.url, &nats_url(), &ns, SECRET);

    // The gateway's address first: the integrations service builds OAuth links on it.
    let gl = listener().await;
    let base = format!("http://{}", gl.local_addr().unwrap());

    let fake = FakeProviders::start(FakeConfig {
        shopify_client_id: "console-shopify".into(),
        shopify_client_secret: SecretString::from("shpss_console_test_secret_0123456789"),
        pinterest_client_id: "console-pinterest".into(),
        pinterest_client_secret: SecretString::from("pinterest_console_secret_0123456789"),
        access_token_ttl: Duration::from_secs(3600),
    })
    .await
    .unwrap();
    fake.add_api_key("klaviyo", KLAVIYO_KEY);
    let mut providers = ProviderArgs::defaults();
    providers.shopify_client_id = "console-shopify".into();
    providers.shopify_client_secret = SecretString::from("shpss_console_test_secret_0123456789");
    providers.shopify_url_template = fake.shopify_url_template();
    providers.pinterest_client_id = "console-pinterest".into();
    providers.pinterest_client_secret = SecretString::from("pinterest_console_secret_0123456789");
    providers.pinterest_api_url = fake.pinterest_api_base();
    providers.pinterest_authorize_url = fake.pinterest_authorize_url();
    providers.klaviyo_url = fake.klaviyo_base();
    providers.dynamic_mockups_url = fake.dynamic_mockups_base();
    providers.resend_url = fake.resend_base();
    providers.sky_pilot_url = fake.sky_pilot_base();
    let mut integrations_config = haven_integrations::Config::for_test(common.clone())
        .with_providers(providers)
        .with_vault(haven_vault::KeyRing::random("console"));
    integrations_config.public_url = base.clone();

    let integrations = haven_testkit::spawn(&stop, |l, s| {
        haven_integrations::serve(integrations_config, l, s)
    })
    .await;
    let retry = haven_testkit::spawn(&stop, |l, s| {
        haven_retry::serve(haven_retry::Config::for_test(common.clone()), l, s)
    })
    .await;
    // One object store behind the export service's scheduled files and the gateway's links.
    let objects = haven_objects::ObjectsArgs::memory(
        &Uuid::new_v4().simple().to_string(),
        "console-test-object-link-secret-0123456789",
        &base,
    );
    let mut export_config = haven_export::Config::for_test(common.clone());
    export_config.objects = objects.clone();
    let export = haven_testkit::spawn(&stop, |l, s| haven_export::serve(export_config, l, s)).await;
    for addr in [integrations.addr, retry.addr, export.addr] {
        haven_testkit::wait_serving(addr).await;
    }

    let allowed = origin_server(&stop).await;
    let refused = origin_server(&stop).await;
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), &ns),
        integrations.url(),
        retry.url(),
        export.url(),
    )
    .with_app_url(&format!("{base}/console"))
    .with_objects(objects)
    .with_cors_origins(&allowed);
    tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));

    // Tenant data: orders to download, and failed work in the error queue.
    let tenant = Uuid::new_v4();
    let mut seed = SeedOptions::new(tenant, "Console Prints", ORDERS);
    seed.kinds = vec![DataKind::Orders];
    seed.days = 20;
    haven_appdata::seed(&db.pool, &seed).await.unwrap();
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", haven_testkit::token(tenant, Role::Service))
            .parse()
            .unwrap();
    let mut grpc = pb::retry_service_client::RetryServiceClient::with_interceptor(
        retry.channel(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", auth.clone());
            Ok(r)
        },
    );
    let mut retried = String::new();
    for op in ["shopify.sync_product", "klaviyo.sync_profile"] {
        let item = grpc
            .enqueue(pb::EnqueueRequest {
                operation_type: op.into(),
                payload_json: r#"{"product_id":"gid://shopify/Product/1"}"#.into(),
                last_error: "HTTP 503 from the provider".into(),
                first_run: Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        if op == "shopify.sync_product" {
            retried = item.id;
        }
    }

    let screenshots = root().join("target/console-screenshots");
    let downloads = tempdir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let token = haven_testkit::token_for(tenant, "console-user", &[Role::User]);
    let expired = expired_token(tenant);
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .env("HAVEN_PLAYWRIGHT_CORE", &playwright)
        .env("HAVEN_CHROMIUM", &chromium)
        .env("CONSOLE_BASE", &base)
        .env("CONSOLE_TOKEN", &token)
        .env("CONSOLE_EXPIRED_TOKEN", &expired)
        .env("CONSOLE_DATABASE_URL", &db.url)
        .env("CONSOLE_ORDERS", ORDERS.to_string())
        .env("CONSOLE_KLAVIYO_KEY", KLAVIYO_KEY)
        .env("CONSOLE_SHOP", SHOP)
        .env("CONSOLE_RETRY_ID", &retried)
        .env("CONSOLE_ALLOWED_ORIGIN", &allowed)
        .env("CONSOLE_REFUSED_ORIGIN", &refused)
        .env("CONSOLE_SCREENSHOTS", &screenshots)
        .env("CONSOLE_DOWNLOADS", &downloads)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser script");
    let status = tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .expect("the browser script finished within 5 minutes")
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");

    // What the browser did, seen from the database.
    let saved = downloads.join("orders.csv");
    let mut reader = csv::Reader::from_path(&saved).unwrap();
    let mut rows = 0u64;
    for record in reader.records() {
        record.unwrap();
        rows += 1;
    }
    assert_eq!(rows, ORDERS, "the saved file holds every row");

    // The scheduled run's file, downloaded through its signed link: the history row of the
    // run it came from (the only export over last week's 7 days) counts the same rows, and the deleted schedule took its runs along.
    let mut scheduled = csv::Reader::from_path(downloads.join("scheduled.csv")).unwrap();
    assert!(
        scheduled
            .headers()
            .unwrap()
            .iter()
            .any(|h| h == "customer_email" || h == "Customer Email"),
        "{:?}",
        scheduled.headers()
    );
    let scheduled_rows = scheduled.records().filter(|r| r.is_ok()).count() as i64;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT record_count FROM exports.export_history WHERE tenant_id = $1 AND format = 'csv' \
         AND status = 'completed' AND range_end - range_start = interval '7 days'",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(scheduled_rows > 0, "last week's orders are in the file");
    assert_eq!(scheduled_rows, recorded);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM exports.scheduled_exports WHERE tenant_id = $1) \
              + (SELECT count(*) FROM exports.scheduled_export_runs WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the deleted schedule and its runs are gone");
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT provider, status FROM integrations.integrations WHERE tenant_id = $1 ORDER BY 1",
    )
    .bind(tenant)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        statuses.contains(&("klaviyo".into(), "connected".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("shopify".into(), "connected".into())),
        "{statuses:?}"
    );
    let item: (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM retry.retry_items WHERE id = $1::uuid")
            .bind(&retried)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(item, ("pending".to_owned(), 0), "Retry now made it due");
    let cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports.export_history WHERE tenant_id = $1 AND status = 'cancelled'",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(cancelled >= 1, "the cancelled download is in history");
    stop.fire();
    let _ = std::fs::remove_dir_all(&downloads);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("haven-console-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A token of `tenant` that expired a minute ago, for the sign-in page's reason.
fn expired_token(tenant: Uuid) -> String {
    let mut claims = haven_auth::Claims::new(
        tenant,
        "console-user".to_owned(),
        vec![Role::User],
        Duration::from_secs(3600),
    );
    let now = chrono::Utc::now().timestamp() as u64;
    claims.iat = now - 3600;
    claims.exp = now - 60;
    haven_auth::Minter::hs256(SECRET.as_bytes())
        .unwrap()
        .mint(&claims)
        .unwrap()
}

/// The console's files without a browser: any page path gets `index.html` (the OAuth return
/// lands on one), a missing script is 404, every file carries the CSP and an ETag that
/// answers a revalidation with 304.
#[tokio::test]
async fn console_files_are_served_with_their_policy_and_validators() {
    let gw = crate::webhooks::start_with(&nats_url(), None, |c| c).await;
    let page = gw
        .http
        .get(format!(
            "{}/console/dashboard/settings/integrations?success=shopify_connected",
            gw.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("/console/app.js"));

    let script = gw
        .http
        .get(format!("{}/console/app.js", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].clone();
    let again = gw
        .http
        .get(format!("{}/console/app.js", gw.base))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    for missing in ["/console/nope.js", "/api/docs/nope.css"] {
        let res = gw
            .http
            .get(format!("{}{missing}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{missing}");
    }
    let redirect = gw
        .http
        .get(format!("{}/console", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/console/");
    gw.stop.fire();
}
