//! Scheduled exports over REST against the real export service: create, read, pause, edit,
//! list and delete in seed 001's snake_case, bad fields named, other tenants kept out.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use haven_auth::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::download::stack;

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    tenant: Uuid,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(haven_testkit::token(tenant, Role::User));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn schedules_round_trip_through_rest() {
    use reqwest::Method;
    let stack = stack().await;
    let base = stack.base.as_str();
    let tenant = Uuid::new_v4();
    let (status, made) = call(
        base,
        Method::POST,
        "/api/scheduled-exports",
        tenant,
        Some(json!({
            "export_type": "leads", "format": "csv", "field_selection": ["email"],
            "date_range_type": "last_month", "frequency": "monthly", "day_of_month": 31,
            "time_of_day": "07:15", "time_zone": "America/New_York",
            "delivery_email": "reports@example.com"
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["enabled"], true);
    assert_eq!(made["delivery_method"], "email");
    assert_eq!(made["day_of_month"], 31);
    assert_eq!(made["weekday"], Value::Null);
    assert!(made["next_run_at"].as_str().unwrap().ends_with('Z'));
    let id = made["id"].as_str().unwrap().to_owned();

    // Pause, then read it back.
    let (status, paused) = call(
        base,
        Method::PATCH,
        &format!("/api/scheduled-exports/{id}"),
        tenant,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["next_run_at"], made["next_run_at"]);
    let (status, got) = call(
        base,
        Method::GET,
        &format!("/api/scheduled-exports/{id}"),
        tenant,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["enabled"], false);
    let (status, list) = call(
        base,
        Method::GET,
        "/api/scheduled-exports?limit=10",
        tenant,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["scheduled_exports"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_page_token"], Value::Null);

    // Bad input names the field as REST spells it.
    for (body, field) in [
        (json!({"frequency": "daily"}), "frequency"),
        (json!({"field_selection": ["nope"]}), "field_selection"),
        (json!({"time_zone": "Moon/Base"}), "time_zone"),
        (
            json!({"delivery_method": "email", "delivery_email": "x"}),
            "delivery_email",
        ),
        (json!({"date_range_type": "yesterday"}), "date_range_type"),
    ] {
        let (status, err) = call(
            base,
            Method::PATCH,
            &format!("/api/scheduled-exports/{id}"),
            tenant,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let (status, err) = call(
        base,
        Method::PATCH,
        &format!("/api/scheduled-exports/{id}"),
        tenant,
        Some(json!({"colour": "blue"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("colour"), "{err}");
    let (status, _) = call(
        base,
        Method::POST,
        "/api/scheduled-exports",
        tenant,
        Some(json!({"export_type": "leads"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        base,
        Method::GET,
        "/api/scheduled-exports?limit=0",
        tenant,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Another tenant: nothing to see, nothing to change.
    let other = Uuid::new_v4();
    let (_, list) = call(base, Method::GET, "/api/scheduled-exports", other, None).await;
    assert!(list["scheduled_exports"].as_array().unwrap().is_empty());
    for method in [Method::GET, Method::DELETE] {
        let (status, _) = call(
            base,
            method.clone(),
            &format!("/api/scheduled-exports/{id}"),
            other,
            None,
        )
        .await;
        assert_eq!(status, 404, "{method}");
    }
    let (status, _) = call(
        base,
        Method::PATCH,
        &format!("/api/scheduled-exports/{id}"),
        other,
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = call(
        base,
        Method::DELETE,
        &format!("/api/scheduled-exports/{id}"),
        tenant,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        base,
        Method::GET,
        &format!("/api/scheduled-exports/{id}"),
        tenant,
        None,
    )
    .await;
    assert_eq!(status, 404);
    stack.stop.fire();
}
