//! The whole stack in one process against real PostgreSQL and NATS: three gRPC services
//! and the gateway, as `./deploy/dev/up` runs them.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::{Claims, Minter, Role};
use haven_server::CommonArgs;
use haven_testkit::{NatsServer, Switch as Token, TestDb, listener, namespace, nats_url};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SECRET: &str = "stack-test-secret-at-least-32-bytes!!";

struct Service {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

async fn start_service(name: &str, common: CommonArgs, stop: &Token) -> Service {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let shutdown = stop.wait();
    let task = match name {
        "integrations" => tokio::spawn(async move {
            haven_integrations::serve(haven_integrations::Config::for_test(common), l, shutdown)
                .await
                .unwrap()
        }),
        "retry" => tokio::spawn(async move {
            haven_retry::serve(haven_retry::Config::for_test(common), l, shutdown)
                .await
                .unwrap()
        }),
        "export" => tokio::spawn(async move {
            haven_export::serve(haven_export::Config::for_test(common), l, shutdown)
                .await
                .unwrap()
        }),
        other => panic!("unknown service {other}"),
    };
    Service { addr, task }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn health(addr: SocketAddr) -> Option<ServingStatus> {
    let mut client = HealthClient::new(channel(addr).await);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok(r)) => ServingStatus::try_from(r.into_inner().status).ok(),
        _ => None,
    }
}

async fn wait_health(addr: SocketAddr, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = health(addr).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}: health {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(addr).await);
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
    assert_eq!(body["error"]["code"], "unauthenticated");
    let token = Minter::hs256(SECRET.as_bytes())
        .unwrap()
        .mint(&Claims::new(
            uuid::Uuid::new_v4(),
            "u1",
            vec![Role::User],
            Duration::from_secs(60),
        ))
        .unwrap();
    let res = http
        .get(format!("{base}/api/nothing-here"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

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
