//! The user's side: OAuth round trips through the gateway's redirects, API keys, the wizard
//! and Shopify's webhooks, over HTTP.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::common::*;

const APP_URL: &str = "http://app.haven.test";

struct Site {
    stack: Stack,
    gateway: String,
    http: reqwest::Client,
    /// The cookies of the test's one browser.
    jar: Jar,
}

/// One browser's cookies for the gateway (name → value), as a browser keeps them.
#[derive(Default)]
struct Jar(std::sync::Mutex<Vec<(String, String)>>);

impl Jar {
    fn header(&self) -> Option<String> {
        let jar = self.0.lock().unwrap();
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn take(&self, set_cookie: &str) {
        let (pair, attributes) = set_cookie.split_once(';').unwrap_or((set_cookie, ""));
        let (name, value) = pair.split_once('=').unwrap();
        let mut jar = self.0.lock().unwrap();
        jar.retain(|(k, _)| k != name);
        if !attributes.contains("Max-Age=0") {
            jar.push((name.to_owned(), value.to_owned()));
        }
    }
}

impl Site {
    async fn start() -> Site {
        let gw_listener = haven_testkit::listener().await;
        let gateway = format!("http://{}", gw_listener.local_addr().unwrap());
        let public = gateway.clone();
        let stack = Stack::start_with(move |mut c| {
            c.public_url = public;
            c
        })
        .await;
        let config = haven_gateway::Config::for_test(
            JWT_SECRET,
            haven_gateway::NatsArgs::new(haven_testkit::nats_url(), stack.ns.clone()),
            format!("http://{}", stack.addr),
            "http://127.0.0.1:9".into(),
            "http://127.0.0.1:9".into(),
        )
        .with_shopify_client_secret(SHOPIFY_SECRET)
        .with_app_url(APP_URL);
        // Not the test kit's `spawn`: the service above had to know the gateway's URL before
        // the gateway started, so its listener was bound first.
        let shutdown = stack.stop.wait();
        tokio::spawn(async move {
            haven_gateway::serve(config, gw_listener, shutdown)
                .await
                .unwrap()
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Site {
            stack,
            gateway,
            http,
            jar: Jar::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// Follows one redirect hop in the test's browser and returns the next Location.
    async fn hop(&self, url: &str, bearer: Option<&str>) -> String {
        self.hop_in(&self.jar, url, bearer).await
    }

    /// One redirect hop in the browser whose cookies are `jar`: it sends them to the gateway
    /// and keeps what the gateway sets.
    async fn hop_in(&self, jar: &Jar, url: &str, bearer: Option<&str>) -> String {
        let mut r = self.http.get(url);
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        if url.starts_with(&self.gateway)
            && let Some(cookies) = jar.header()
        {
            r = r.header("cookie", cookies);
        }
        let res = r.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 302, "{url}: {}", res.status());
        for set in res.headers().get_all("set-cookie") {
            jar.take(set.to_str().unwrap());
        }
        res.headers()["location"].to_str().unwrap().to_owned()
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(bearer);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn integration(&self, tenant: Uuid, provider: &str) -> Value {
        let (status, list) = self
            .json(
                reqwest::Method::GET,
                "/api/integrations",
                &user(tenant),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["provider"] == provider)
            .cloned()
            .unwrap()
    }
}

#[tokio::test]
async fn oauth_round_trips_through_the_gateway_redirects() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    let token = user(tenant);

    for (provider, install) in [
        (
            "shopify",
            format!("/api/integrations/shopify/install?shop={SHOP}"),
        ),
        (
            "pinterest",
            "/api/integrations/pinterest/install".to_owned(),
        ),
    ] {
        // Gateway → its start link → provider's authorize page → gateway callback → the app.
        let start = site.hop(&site.url(&install), Some(&token)).await;
        assert!(
            start.starts_with(&site.url(&format!("/api/integrations/{provider}/start?ticket="))),
            "{start}"
        );
        let authorize = site.hop(&start, None).await;
        assert!(
            authorize.starts_with(&site.stack.fake.base_url()),
            "{authorize}"
        );
        // The start link works once.
        let again = site.hop_in(&Jar::default(), &start, None).await;
        assert!(again.contains("reason=not_verified"), "{again}");
        let callback = site.hop(&authorize, None).await;
        assert!(
            callback.starts_with(&site.url(&format!("/api/integrations/{provider}/callback?"))),
            "{callback}"
        );
        let landing = site.hop(&callback, None).await;
        assert_eq!(
            landing,
            format!("{APP_URL}/dashboard/settings/integrations?success={provider}_connected")
        );
        let i = site.integration(tenant, provider).await;
        assert_eq!(i["status"], "connected", "{i}");
    }
    let shop = site.integration(tenant, "shopify").await;
    assert_eq!(shop["metadata"]["shop_domain"], SHOP);
    assert!(shop["token_expires_at"].is_string());
    let pin = site.integration(tenant, "pinterest").await;
    assert!(pin["metadata"]["board_count"].as_i64().unwrap() > 0);

    // The same callback again is a replay: back to the app with an error, nothing changed.
    let start = site
        .hop(
            &site.url(&format!("/api/integrations/shopify/install?shop={SHOP}")),
            Some(&token),
        )
        .await;
    let authorize = site.hop(&start, None).await;
    let callback = site.hop(&authorize, None).await;
    site.hop(&callback, None).await;
    let again = site.hop(&callback, None).await;
    assert!(
        again.starts_with(&format!(
            "{APP_URL}/dashboard/settings/integrations?error=shopify_callback_failed&reason=not_verified&message="
        )),
        "{again}"
    );
    assert!(
        again.contains("already%20used") || again.contains("already+used"),
        "{again}"
    );

    // Wizard: both OAuth steps completed by connecting; skip one by hand.
    let (status, progress) = site
        .json(
            reqwest::Method::GET,
            "/api/settings/setup-progress",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(progress["setup_progress"]["shopify"], "completed");
    assert_eq!(progress["setup_progress"]["pinterest"], "completed");
    assert_eq!(progress["setup_progress"]["design_rules"], "pending");
    let (status, progress) = site
        .json(
            reqwest::Method::PATCH,
            "/api/settings/setup-progress/design_rules",
            &token,
            Some(json!({"status": "skipped"})),
        )
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["setup_progress"]["design_rules"], "skipped");
    let (status, err) = site
        .json(
            reqwest::Method::PATCH,
            "/api/settings/setup-progress/wizardry",
            &token,
            Some(json!({"status": "skipped"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("wizardry"));
}

#[tokio::test]
async fn bad_install_requests_and_api_keys_get_clear_errors() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    let token = user(tenant);
    // A page's fetch asks for JSON and gets the error naming the field.
    let res = site
        .http
        .get(site.url("/api/integrations/shopify/install?shop=evil.com"))
        .bearer_auth(&token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().starts_with("shop:"),
        "{body}"
    );
    // A navigation (a web app's server-side proxy following the 302 for the person's
    // browser) goes back to the settings page with the reason, as seed 001 does.
    let res = site
        .http
        .get(site.url("/api/integrations/shopify/install?shop=evil.com"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let prefix =
        format!("{APP_URL}/dashboard/settings/integrations?error=shopify_install_failed&message=");
    assert!(location.starts_with(&prefix), "{location}");
    let message = url::form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "message")
        .unwrap()
        .1
        .into_owned();
    assert!(message.starts_with("shop:"), "{message}");
    // An unknown provider is not echoed back.
    let res = site
        .http
        .get(site.url("/api/integrations/<script>/install"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 302);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!(
            "{APP_URL}/dashboard/settings/integrations?error=install_failed&message="
        )),
        "{location}"
    );
    assert!(!location.contains("script"), "{location}");
    // Without a token: 401, not a redirect.
    let res = site
        .http
        .get(site.url(&format!("/api/integrations/shopify/install?shop={SHOP}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    site.stack.fake.add_api_key("klaviyo", "pk_live_gateway_ok");
    let (status, body) = site
        .json(
            reqwest::Method::POST,
            "/api/integrations/klaviyo/connect",
            &token,
            Some(json!({"apiKey": "pk_live_gateway_bad"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("pk_live_gateway_bad"));
    let (status, body) = site
        .json(
            reqwest::Method::POST,
            "/api/integrations/klaviyo/connect",
            &token,
            Some(json!({"apiKey": "pk_live_gateway_ok"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "connected");
    let (status, body) = site
        .json(
            reqwest::Method::DELETE,
            "/api/integrations/klaviyo",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "disconnected");
}

#[tokio::test]
async fn signed_app_uninstalled_webhook_disconnects_through_the_bus() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    crate::lifecycle::connect_shopify(&site.stack, tenant).await;
    let body = br#"{"id":548380009,"name":"Acme Prints","domain":"acme-prints.myshopify.com"}"#;
    let sign = |secret: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let post = |hmac: String| {
        site.http
            .post(site.url("/api/webhooks/shopify"))
            .header("X-Shopify-Topic", "app/uninstalled")
            .header("X-Shopify-Shop-Domain", SHOP)
            .header("X-Shopify-Webhook-Id", Uuid::new_v4().to_string())
            .header("X-Shopify-Hmac-Sha256", hmac)
            .body(body.to_vec())
            .send()
    };
    // Forged: 401, and the shop stays connected.
    assert_eq!(
        post(sign("not-the-app-secret"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        site.integration(tenant, "shopify").await["status"],
        "connected"
    );
    // Genuine: disconnected.
    assert_eq!(
        post(sign(SHOPIFY_SECRET)).await.unwrap().status().as_u16(),
        200
    );
    eventually("the uninstall to disconnect the shop", || async {
        site.integration(tenant, "shopify").await["status"] == "disconnected"
    })
    .await;
}

/// The reproduced attack: an attacker starts connecting Pinterest for their own tenant and
/// sends the consent link to a victim. The victim's browser never opened the start link, so it
/// lacks the binding cookie: the callback fails and nothing is linked.
#[tokio::test]
async fn a_consent_link_finished_in_another_browser_links_nothing() {
    let site = Site::start().await;
    let attacker = Uuid::new_v4();
    let attacker_browser = Jar::default();
    let start = site
        .hop_in(
            &attacker_browser,
            &site.url("/api/integrations/pinterest/install"),
            Some(&user(attacker)),
        )
        .await;
    let consent = site.hop_in(&attacker_browser, &start, None).await;
    assert!(
        consent.starts_with(&site.stack.fake.base_url()),
        "{consent}"
    );
    // The victim approves in their own browser.
    let victim_browser = Jar::default();
    let callback = site.hop_in(&victim_browser, &consent, None).await;
    let landing = site.hop_in(&victim_browser, &callback, None).await;
    assert!(
        landing.contains("error=pinterest_callback_failed&reason=not_verified"),
        "{landing}"
    );
    assert_ne!(
        site.integration(attacker, "pinterest").await["status"],
        "connected"
    );
    assert_eq!(credentials_of(&site.stack.db, attacker).await, 0);
    // The JSON form of install gives a page the same kind of start link to navigate to.
    let res = site
        .http
        .get(site.url("/api/integrations/pinterest/install"))
        .bearer_auth(user(attacker))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    let start = body["authorize_url"].as_str().unwrap();
    assert!(
        start.starts_with(&site.url("/api/integrations/pinterest/start?ticket=")),
        "{start}"
    );
    // The browser that opens the start link can finish.
    let consent = site.hop_in(&attacker_browser, start, None).await;
    let callback = site.hop_in(&attacker_browser, &consent, None).await;
    let landing = site.hop_in(&attacker_browser, &callback, None).await;
    assert!(
        landing.ends_with("success=pinterest_connected"),
        "{landing}"
    );
}

/// A provider's `error_description` is anyone's text: the app is told our words only.
#[tokio::test]
async fn a_refusal_reaches_the_app_as_our_code_and_message() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    let start = site
        .hop(
            &site.url("/api/integrations/pinterest/install"),
            Some(&user(tenant)),
        )
        .await;
    let authorize = site.hop(&start, None).await;
    let state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let landing = site
        .hop(
            &site.url(&format!(
                "/api/integrations/pinterest/callback?error=access_denied&error_description=Call%20evil.example%20to%20restore%20access&state={state}"
            )),
            None,
        )
        .await;
    assert!(
        landing.starts_with(&format!(
            "{APP_URL}/dashboard/settings/integrations?error=pinterest_callback_failed&reason=not_granted&message="
        )),
        "{landing}"
    );
    assert!(!landing.contains("evil"), "{landing}");
}

/// The reproduced attack: an attacker tenant keeps the signed callback URL of its own install
/// and replays its query string as an `app/uninstalled` webhook for a victim's shop.
#[tokio::test]
async fn a_callback_replayed_as_an_uninstall_webhook_leaves_the_victim_connected() {
    let site = Site::start().await;
    let victim = Uuid::new_v4();
    crate::lifecycle::connect_shopify(&site.stack, victim).await;
    let attacker = Uuid::new_v4();
    let start = site
        .hop(
            &site.url("/api/integrations/shopify/install?shop=attacker-shop.myshopify.com"),
            Some(&user(attacker)),
        )
        .await;
    let authorize = site.hop(&start, None).await;
    let callback = site.hop(&authorize, None).await;
    let query = callback.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let hex_hmac = &pairs.iter().find(|(k, _)| k == "hmac").unwrap().1;
    let mut signed: Vec<_> = pairs.iter().filter(|(k, _)| k != "hmac").collect();
    signed.sort();
    let body = signed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signature =
        base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_hmac).unwrap());
    let res = site
        .http
        .post(site.url("/api/webhooks/shopify"))
        .header("X-Shopify-Topic", "app/uninstalled")
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", Uuid::new_v4().to_string())
        .header("X-Shopify-Event-Id", Uuid::new_v4().to_string())
        .header("X-Shopify-Hmac-Sha256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        site.integration(victim, "shopify").await["status"],
        "connected"
    );
}

#[tokio::test]
async fn resend_shows_its_verified_domain() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    let token = user(tenant);
    site.stack
        .fake
        .add_api_key("resend", "re_gateway_domain_0001");
    let (status, body) = site
        .json(
            reqwest::Method::POST,
            "/api/integrations/resend/connect",
            &token,
            Some(json!({"apiKey": "re_gateway_domain_0001"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let resend = site.integration(tenant, "resend").await;
    assert_eq!(resend["status"], "connected", "{resend}");
    assert_eq!(resend["metadata"]["domain_verified"], true, "{resend}");
    // The fake's one verified domain.
    assert_eq!(
        resend["metadata"]["from_domain"], "mail.havenhold.test",
        "{resend}"
    );
}

/// Boards, activity and every setup key over REST, as the settings pages read them.
#[tokio::test]
async fn boards_activity_and_setup_keys_over_rest() {
    let site = Site::start().await;
    let tenant = Uuid::new_v4();
    let token = user(tenant);
    crate::lifecycle::connect_oauth(&site.stack, tenant, "pinterest", "").await;
    let get = |path: &'static str| {
        let (site, token) = (&site, token.clone());
        async move { site.json(reqwest::Method::GET, path, &token, None).await }
    };

    let (status, boards) = get("/api/integrations/pinterest/boards").await;
    assert_eq!(status, 200, "{boards}");
    let list = boards["boards"].as_array().unwrap();
    assert_eq!(list.len(), 12);
    assert_eq!(list[0]["name"], "Board 1");
    assert!(
        list[0]["id"].is_string() && list[0]["pin_count"].is_i64(),
        "{boards}"
    );
    assert!(boards["synced_at"].as_str().unwrap().ends_with('Z'));

    let (status, activity) = get("/api/integrations/activity?limit=1").await;
    assert_eq!(status, 200, "{activity}");
    assert_eq!(activity.as_array().unwrap().len(), 1);
    assert_eq!(activity[0]["action"], "integration_connected");
    assert_eq!(activity[0]["provider"], "pinterest");
    assert_eq!(activity[0]["user_id"], "user-1");
    assert_eq!(activity[0]["details"]["accountName"], "Haven Hold");
    let (status, err) = get("/api/integrations/activity?limit=0").await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["field"], "limit");
    // Another tenant's history is its own (empty).
    let (_, theirs) = site
        .json(
            reqwest::Method::GET,
            "/api/integrations/activity",
            &user(Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(theirs, json!([]));

    let (status, progress) = get("/api/settings/setup-progress").await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = progress["setup_progress"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "shopify",
        "pinterest",
        "klaviyo",
        "dynamic_mockups",
        "resend",
        "design_rules",
        "operator_mode",
        "import",
    ] {
        assert!(keys.contains(&key), "{key} in {progress}");
    }
    assert_eq!(progress["steps"].as_array().unwrap().len(), 6);
    assert_eq!(progress["setup_progress"]["pinterest"], "completed");
    let (status, progress) = site
        .json(
            reqwest::Method::PATCH,
            "/api/settings/setup-progress/resend",
            &token,
            Some(json!({"status": "skipped"})),
        )
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["setup_progress"]["resend"], "skipped");
}
