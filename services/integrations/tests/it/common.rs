//! One integrations service (or several replicas) in-process against real PostgreSQL and
//! NATS, with the providers faked by `haven-fake-providers`. Tokens, requests, spawning and
//! the wait for SERVING are the test kit's.

use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::Role;
use haven_fake_providers::{FakeConfig, FakeProviders};
use haven_integrations::{Config, ProviderArgs};
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, namespace, nats_url};
use haven_vault::KeyRing;
use secrecy::SecretString;
use tonic::transport::Channel;
use uuid::Uuid;

pub use haven_testkit::{JWT_SECRET, request, token_for};
pub const SHOPIFY_ID: &str = "shopify-test-client";
pub const SHOPIFY_SECRET: &str = "shpss_test_client_secret_0123456789";
pub const PINTEREST_ID: &str = "pinterest-test-client";
pub const PINTEREST_SECRET: &str = "pinterest_test_client_secret_0123456789";
pub const SHOP: &str = "acme-prints.myshopify.com";

pub type Client = IntegrationsServiceClient<Channel>;

pub struct Stack {
    pub db: TestDb,
    pub fake: FakeProviders,
    pub ns: String,
    pub config: Config,
    pub addr: SocketAddr,
    pub stop: Switch,
}

/// A user of `tenant`.
pub fn user(tenant: Uuid) -> String {
    token_for(tenant, "user-1", &[Role::User])
}

/// A backend service minted with the all-tenants scope, which may read any tenant's tokens.
pub fn service() -> String {
    haven_testkit::all_tenants_token("svc-publisher")
}

pub fn fake_config() -> FakeConfig {
    FakeConfig {
        shopify_client_id: SHOPIFY_ID.into(),
        shopify_client_secret: SecretString::from(SHOPIFY_SECRET),
        pinterest_client_id: PINTEREST_ID.into(),
        pinterest_client_secret: SecretString::from(PINTEREST_SECRET),
        access_token_ttl: Duration::from_secs(3600),
    }
}

pub fn providers(fake: &FakeProviders) -> ProviderArgs {
    let mut p = ProviderArgs::defaults();
    p.shopify_client_id = SHOPIFY_ID.into();
    p.shopify_client_secret = SecretString::from(SHOPIFY_SECRET);
    p.shopify_url_template = fake.shopify_url_template();
    p.pinterest_client_id = PINTEREST_ID.into();
    p.pinterest_client_secret = SecretString::from(PINTEREST_SECRET);
    p.pinterest_api_url = fake.pinterest_api_base();
    p.pinterest_authorize_url = fake.pinterest_authorize_url();
    p.klaviyo_url = fake.klaviyo_base();
    p.dynamic_mockups_url = fake.dynamic_mockups_base();
    p.resend_url = fake.resend_base();
    p.sky_pilot_url = fake.sky_pilot_base();
    p.provider_timeout = Duration::from_secs(5);
    p
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(|c| c).await
    }

    pub async fn start_with(adjust: impl FnOnce(Config) -> Config) -> Stack {
        let db = TestDb::new().await;
        let fake = FakeProviders::start(fake_config()).await.unwrap();
        let ns = namespace();
        let common = CommonArgs::new(&db.url, &nats_url(), &ns, JWT_SECRET);
        let config = adjust(
            Config::for_test(common)
                .with_providers(providers(&fake))
                .with_vault(KeyRing::random("k1")),
        );
        let stop = Switch::new();
        let addr = spawn(config.clone(), &stop).await;
        Stack {
            db,
            fake,
            ns,
            config,
            addr,
            stop,
        }
    }

    /// Another replica sharing the database and bus, with `config`, once it answers SERVING.
    pub async fn replica(&self, config: Config) -> SocketAddr {
        spawn(config, &self.stop).await
    }

    pub async fn client(&self) -> Client {
        client_at(self.addr).await
    }

    pub fn public_url(&self) -> &str {
        &self.config.public_url
    }
}

pub async fn client_at(addr: SocketAddr) -> Client {
    IntegrationsServiceClient::new(haven_testkit::channel(addr))
}

/// A service on `config`, stopped by `stop`, once it answers SERVING (migrated, connected).
async fn spawn(config: Config, stop: &Switch) -> SocketAddr {
    let running = haven_testkit::spawn(stop, |listener, shutdown| {
        haven_integrations::serve(config, listener, shutdown)
    })
    .await;
    haven_testkit::wait_serving(running.addr).await;
    running.addr
}

/// Query pairs of a URL.
pub fn query_of(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The browser binding cookie of each started state, as the browser that opened the start
/// link holds it; `binding_of` hands it back for the callback, as the gateway would.
static BINDINGS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Plays the browser at the gateway's start link: StartOAuth with the link's ticket. Returns
/// the provider's authorize URL and remembers the binding for its state.
pub async fn start_link(stack: &Stack, start_url: &str) -> String {
    let ticket = query_of(start_url)
        .into_iter()
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let provider = start_url
        .split("/api/integrations/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let started = stack
        .client()
        .await
        .start_o_auth(haven_proto::integrations::v1::StartOAuthRequest { provider, ticket })
        .await
        .unwrap()
        .into_inner();
    let state = query_of(&started.authorize_url)
        .into_iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v)
        .unwrap();
    BINDINGS
        .lock()
        .unwrap()
        .push((state, started.browser_binding));
    started.authorize_url
}

/// The binding cookie of the browser that started the state in `query`; empty if none did.
pub fn binding_of(query: &[(String, String)]) -> String {
    let Some((_, state)) = query.iter().find(|(k, _)| k == "state") else {
        return String::new();
    };
    BINDINGS
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| s == state)
        .map(|(_, b)| b.clone())
        .unwrap_or_default()
}

/// Plays the user at the provider's authorize page: follows `authorize_url` on the fake and
/// returns the callback URL the provider redirects the browser to.
pub async fn authorize(authorize_url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http.get(authorize_url).send().await.unwrap();
    assert_eq!(
        res.status().as_u16(),
        302,
        "authorize page answered {}",
        res.status()
    );
    res.headers()["location"].to_str().unwrap().to_owned()
}

pub async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// How many credentials `tenant` has stored.
pub async fn credentials_of(db: &TestDb, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM integrations.credentials WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Polls `check` until it holds or 30 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    haven_testkit::wait_for(what, Duration::from_secs(30), || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}
