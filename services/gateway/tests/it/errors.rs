//! The error-queue API through the gateway, against a real retry service.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use haven_auth::Role;
use haven_proto::retry::v1 as pb;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb, listener, namespace, nats_url};
use serde_json::Value;
use uuid::Uuid;

const SECRET: &str = haven_testkit::JWT_SECRET;

fn token(tenant: Uuid) -> String {
    haven_testkit::token(tenant, Role::User)
}

#[tokio::test]
async fn error_queue_lists_retries_and_cancels_within_the_tenant() {
    let db = TestDb::new().await;
    let stop = Switch::new();
    let common = CommonArgs::new(&db.url, &nats_url(), &namespace(), SECRET);
    let retry = haven_testkit::spawn(&stop, |l, shutdown| {
        haven_retry::serve(haven_retry::Config::for_test(common), l, shutdown)
    })
    .await;
    let retry_addr = retry.addr;
    let gl = listener().await;
    let base = format!("http://{}", gl.local_addr().unwrap());
    let config = haven_gateway::Config::for_test(
        SECRET,
        haven_gateway::NatsArgs::new(nats_url(), namespace()),
        "http://127.0.0.1:9".into(),
        format!("http://{retry_addr}"),
        "http://127.0.0.1:9".into(),
    );
    let gateway = tokio::spawn(haven_gateway::serve(config, gl, stop.wait()));

    // Tenant A has two items waiting (due in an hour, so nothing dispatches them).
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    haven_testkit::wait_serving(retry_addr).await;
    let channel = retry.channel();
    // A service hands the failed work over, as in production (Enqueue is for role service).
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", haven_testkit::token(a, Role::Service))
            .parse()
            .unwrap();
    let mut grpc = pb::retry_service_client::RetryServiceClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", auth.clone());
            Ok(r)
        },
    );
    let mut ids = Vec::new();
    for op in [
        "integrations.register_webhook",
        "exports.statistics_variant",
    ] {
        let item = loop {
            let req = pb::EnqueueRequest {
                operation_type: op.into(),
                payload_json: r#"{"topic":"orders/create"}"#.into(),
                last_error: "HTTP 503".into(),
                first_run: Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000)),
                ..Default::default()
            };
            match grpc.enqueue(req).await {
                Ok(r) => break r.into_inner().item.unwrap(),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        ids.push(item.id);
    }

    let http = reqwest::Client::new();
    let get = |tenant: Uuid, query: &str| {
        let req = http
            .get(format!("{base}/api/errors{query}"))
            .bearer_auth(token(tenant));
        async move { req.send().await.unwrap() }
    };
    let res = get(a, "").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["total"], 2);
    assert_eq!(body["counts"]["pending"], 2);
    assert_eq!(body["items"][0]["id"], ids[1].as_str(), "newest first");
    assert_eq!(body["items"][0]["payload"]["topic"], "orders/create");
    assert_eq!(body["items"][0]["status"], "pending");
    assert_eq!(body["items"][0]["last_error"], "HTTP 503");

    let body: Value = get(
        a,
        "?status=pending&operation_type=exports.statistics_variant&limit=1",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["total"], 1);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);

    // Tenant B sees nothing and touches nothing of A's.
    let body: Value = get(b, "?status=all").await.json().await.unwrap();
    assert_eq!(
        (
            body["total"].as_i64(),
            body["items"].as_array().unwrap().len()
        ),
        (Some(0), 0)
    );
    for action in ["retry", "cancel"] {
        let res = http
            .post(format!("{base}/api/errors/{}/{action}", ids[0]))
            .bearer_auth(token(b))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{action}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }

    // A retries one (due now) and cancels the other.
    let res = http
        .post(format!("{base}/api/errors/{}/cancel", ids[0]))
        .bearer_auth(token(a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["success"].as_bool(), body["item"]["status"].as_str()),
        (Some(true), Some("cancelled"))
    );
    let res = http
        .post(format!("{base}/api/errors/{}/retry", ids[0]))
        .bearer_auth(token(a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "a cancelled item cannot be retried");
    let res = http
        .post(format!("{base}/api/errors/{}/retry", ids[1]))
        .bearer_auth(token(a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The item with its attempts: the retried one is dispatched at once (nobody owns it, so
    // its attempt stays running). Lists leave the history out.
    let detail = |tenant: Uuid| {
        let req = http
            .get(format!("{base}/api/errors/{}", ids[1]))
            .bearer_auth(token(tenant));
        async move { req.send().await.unwrap() }
    };
    let item = haven_testkit::wait_for("the attempt", Duration::from_secs(10), || async {
        let body: Value = detail(a).await.json().await.unwrap();
        (body["attempt_history"].as_array().map(Vec::len) == Some(1)).then_some(body)
    })
    .await;
    assert_eq!(item["attempt_history"][0]["attempt"], 1);
    assert_eq!(item["attempt_history"][0]["outcome"], "running");
    assert_eq!(item["operation_type"], "exports.statistics_variant");
    assert_eq!(detail(b).await.status(), 404, "another tenant's item");
    let list: Value = get(a, "?status=all").await.json().await.unwrap();
    assert!(list["items"][0].get("attempt_history").is_none(), "{list}");

    // Bad input: JSON errors naming the parameter.
    for (query, field) in [
        ("?status=exploded", "status"),
        ("?limit=0", "limit"),
        ("?limit=lots", "limit"),
        ("?page_token=zzz", "page_token"),
    ] {
        let res = get(a, query).await;
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    let res = http
        .post(format!("{base}/api/errors/not-a-uuid/retry"))
        .bearer_auth(token(a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http.get(format!("{base}/api/errors")).send().await.unwrap();
    assert_eq!(res.status(), 401);

    stop.fire();
    retry.task.await.unwrap();
    gateway.await.unwrap().unwrap();
}
