//! One integrations service (or several replicas) in-process against real PostgreSQL and
//! NATS, with the providers faked by `haven-fake-providers`.

use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::{Claims, Minter, Role};
use haven_fake_providers::{FakeConfig, FakeProviders};
use haven_integrations::{Config, ProviderArgs};
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, listener, namespace, nats_url};
use haven_vault::KeyRing;
use secrecy::SecretString;
use tonic::transport::Channel;
use uuid::Uuid;

pub const JWT_SECRET: &str = "integrations-test-secret-at-least-32-bytes";
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

pub fn token(tenant: Uuid, user: &str, roles: &[Role]) -> String {
    let minter = Minter::hs256(JWT_SECRET.as_bytes()).unwrap();
    minter
        .mint(&Claims::new(
            tenant,
            user.to_owned(),
            roles.to_vec(),
            Duration::from_secs(3600),
        ))
        .unwrap()
}

pub fn user(tenant: Uuid) -> String {
    token(tenant, "user-1", &[Role::User])
}

pub fn service() -> String {
    token(Uuid::nil(), "svc-publisher", &[Role::Service])
}

/// A request carrying `token`.
pub fn req<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
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
        let stack = Stack {
            db,
            fake,
            ns,
            config,
            addr,
            stop,
        };
        // Migrated and serving before the test goes on.
        let mut c = stack.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while c
            .list_providers(req(Default::default(), &user(Uuid::new_v4())))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "service never came up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stack
    }

    /// Another replica sharing the database and bus, with `config`.
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
    IntegrationsServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    )
}

async fn spawn(config: Config, stop: &Switch) -> SocketAddr {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let shutdown = stop.wait();
    tokio::spawn(async move {
        haven_integrations::serve(config, l, shutdown)
            .await
            .unwrap()
    });
    addr
}

/// Query pairs of a URL.
pub fn query_of(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
