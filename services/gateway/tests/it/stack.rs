//! The whole stack in one process against real PostgreSQL and NATS: three gRPC services
//! and the gateway, as `./deploy/dev/up` runs them.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::Role;
use haven_server::CommonArgs;
use haven_testkit::{
    NatsServer, Running, ServingStatus, Switch as Token, TestDb, channel, listener, namespace,
    nats_url, spawn, wait_health,
};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SECRET: &str = haven_testkit::JWT_SECRET;

async fn start_service(name: &str, common: CommonArgs, stop: &Token) -> Running {
    match name {
        "integrations" => {
            spawn(stop, |l, shutdown| {
                haven_integrations::serve(haven_integrations::Config::for_test(common), l, shutdown)
            })
            .await
        }
        "retry" => {
            spawn(stop, |l, shutdown| {
                haven_retry::serve(haven_retry::Config::for_test(common), l, shutdown)
            })
            .await
        }
        "export" => {
            spawn(stop, |l, shutdown| {
                haven_export::serve(haven_export::Config::for_test(common), l, shutdown)
            })
            .await
        }
        other => panic!("unknown service {other}"),
    }
}

async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(addr));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn stack_serves_health_reflection_and_readiness() {
    let db = TestDb::new().await;
    let ns = namespace();
    let stop = Token::new();
    let common = CommonArgs::new(&db.url, &nats_url(), &ns, SECRET);
    let integrations = start_service("integrations", common.clone(), &stop).await;
    let retry = start_service("retry", common.clone(), &stop).await;
    let export = start_service("export", common.clone(), &stop).await;

    for (svc, own) in [
        (&integrations, "haven.integrations.v1.IntegrationsService"),
        (&retry, "haven.retry.v1.RetryService"),
        (&export, "haven.export.v1.ExportService"),
    ] {
        wait_health(svc.addr, ServingStatus::Serving).await;
        let mut services = reflected_services(svc.addr).await;
        services.sort();
        // Each port lists what it serves and nothing it would answer Unimplemented for.
        assert_eq!(
            services,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                own,
            ],
            "{}",
            svc.addr
        );
        assert!(
            services.contains(&"grpc.health.v1.Health".to_owned()),
            "{services:?}"
        );
        assert!(
            services.iter().any(|s| s.starts_with("grpc.reflection.")),
            "{services:?}"
        );
    }

    // Each service migrated its own schema.
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname IN ('app','exports','integrations','retry') ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(schemas, ["app", "exports", "integrations", "retry"]);

    // The gateway: live at once, ready when its upstreams are.
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), &ns),
        format!("http://{}", integrations.addr),
        format!("http://{}", retry.addr),
        format!("http://{}", export.addr),
    );
    let gl = listener().await;
    let gateway_addr = gl.local_addr().unwrap();
    let gateway = tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));
    let http = reqwest::Client::new();
    let base = format!("http://{gateway_addr}");
    let live = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["retry"], "SERVING");

    // The API wants a token; with one, unknown paths are a JSON 404.
    let res = http
        .get(format!("{base}/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    // A page shows `data.error` as it is: text, never an object.
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let token = haven_testkit::token(uuid::Uuid::new_v4(), Role::User);
    let res = http
        .get(format!("{base}/api/nothing-here"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert!(body["error"].is_string(), "{body}");

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("haven_requests_total"), "{metrics}");

    // An upstream going away makes the gateway unready.
    stop.fire();
    for svc in [integrations, retry, export] {
        tokio::time::timeout(Duration::from_secs(15), svc.task)
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(15), gateway)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn gateway_is_unready_while_upstreams_are_down() {
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new("nats://127.0.0.1:9", ""),
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:9".into(),
    );
    let gl = listener().await;
    let addr = gl.local_addr().unwrap();
    let stop = Token::new();
    let gateway = tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));
    let res = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    stop.fire();
    gateway.await.unwrap().unwrap();
}

#[tokio::test]
async fn service_follows_nats_outage_and_reconnects_without_restart() {
    let db = TestDb::new().await;
    let mut nats = NatsServer::start().unwrap();
    let stop = Token::new();
    let common = CommonArgs::new(&db.url, &nats.url(), "", SECRET);
    let retry = start_service("retry", common, &stop).await;
    wait_health(retry.addr, ServingStatus::Serving).await;

    nats.kill();
    wait_health(retry.addr, ServingStatus::NotServing).await;

    nats.restart().unwrap();
    wait_health(retry.addr, ServingStatus::Serving).await;

    // The service's streams are there again and take messages.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let ack = js
        .publish("haven.retry.events.resolved", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "RETRY_EVENTS");

    stop.fire();
    tokio::time::timeout(Duration::from_secs(15), retry.task)
        .await
        .unwrap()
        .unwrap();
}

/// Series in the process-wide metrics, without their values.
fn series() -> std::collections::BTreeSet<String> {
    haven_telemetry::metrics_handle()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_owned()))
        .collect()
}

/// Calls to made-up paths, unauthenticated, over gRPC and HTTP, add no metric series: a
/// thousand of them leave the set of series as one round did.
#[tokio::test]
async fn made_up_paths_add_no_metric_series() {
    let db = TestDb::new().await;
    let ns = namespace();
    let stop = Token::new();
    let common = CommonArgs::new(&db.url, &nats_url(), &ns, SECRET);
    let export = start_service("export", common, &stop).await;
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), ns.clone()),
        format!("http://{}", export.addr),
        format!("http://{}", export.addr),
        format!("http://{}", export.addr),
    );
    let gateway = spawn(&stop, |l, shutdown| {
        haven_gateway::serve(config, l, shutdown)
    })
    .await;
    let http = reqwest::Client::new();
    let made_up = |round: std::ops::Range<u32>| {
        let (http, export, gateway) = (http.clone(), export.addr, gateway.addr);
        async move {
            let mut grpc = tonic::client::Grpc::new(channel(export));
            for i in round {
                grpc.ready().await.unwrap();
                let path = http::uri::PathAndQuery::try_from(format!("/made.up.Svc{i}/Method{i}"))
                    .unwrap();
                let answer: Result<tonic::Response<()>, tonic::Status> = grpc
                    .unary(
                        tonic::Request::new(()),
                        path,
                        tonic_prost::ProstCodec::<(), ()>::default(),
                    )
                    .await;
                assert!(answer.is_err());
                for path in [format!("/api/made-up-{i}"), format!("/made-up-{i}/x")] {
                    let res = http
                        .get(format!("http://{gateway}{path}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(res.status().is_client_error(), "{path}: {}", res.status());
                }
            }
        }
    };
    made_up(0..10).await;
    let before = series();
    made_up(10..1010).await;
    let after = series();
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new series after 1,000 made-up calls"
    );
    assert!(
        before.iter().any(|s| s.contains("route=\"unknown\"")),
        "{before:?}"
    );
    stop.fire();
}

/// The whole stack on a bus that admits only the processes' own nkey users, each with its
/// permissions: every service starts (its streams and consumers are within them), the
/// gateway is ready and a verified webhook is stored.
#[tokio::test]
async fn the_stack_runs_with_per_process_bus_credentials() {
    use haven_bus::auth::BusUser;
    let nats = NatsServer::start_secured().unwrap();
    let db = TestDb::new().await;
    let ns = namespace();
    let stop = Token::new();
    let common = |user: BusUser| {
        let mut c = CommonArgs::new(&db.url, &nats.url(), &ns, SECRET);
        c.nats.creds = Some(nats.creds(user));
        c
    };
    let integrations = start_service("integrations", common(BusUser::Integrations), &stop).await;
    let retry = start_service("retry", common(BusUser::Retry), &stop).await;
    let export = start_service("export", common(BusUser::Export), &stop).await;
    for svc in [&integrations, &retry, &export] {
        wait_health(svc.addr, ServingStatus::Serving).await;
    }
    let secret = "shpss_stack_secret";
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats.url(), ns.clone())
            .with_creds(nats.creds(BusUser::Gateway)),
        format!("http://{}", integrations.addr),
        format!("http://{}", retry.addr),
        format!("http://{}", export.addr),
    )
    .with_shopify_client_secret(secret);
    let gateway = spawn(&stop, |l, shutdown| {
        haven_gateway::serve(config, l, shutdown)
    })
    .await;
    let http = reqwest::Client::new();
    let body = r#"{"id":1}"#;
    let hmac = haven_shopify::sign_webhook(body.as_bytes(), &secrecy::SecretString::from(secret));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let res = http
            .post(format!("http://{}/api/webhooks/shopify", gateway.addr))
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
            .header("X-Shopify-Event-Id", "evt-stack-1")
            .header("X-Shopify-Hmac-Sha256", &hmac)
            .body(body)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook still {}: {}",
            res.status(),
            res.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = http
        .get(format!("http://{}/readyz", gateway.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    stop.fire();
}
