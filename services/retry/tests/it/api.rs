//! Tenant isolation and input validation of the gRPC API.

use crate::common::*;
use haven_auth::Role;
use haven_proto::retry::v1 as pb;
use tonic::Code;
use uuid::Uuid;

fn assert_invalid(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message `{}` should name `{field}`",
        status.message()
    );
}

#[tokio::test]
async fn tenant_b_can_neither_see_nor_touch_tenant_a_items() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // Tenant A's service queues; tenant B's user looks.
    let mut client_a = h.client(&svc, a, Role::Service).await;
    let mut client_b = h.client(&svc, b, Role::User).await;
    let mut req = enqueue_request("test.private", r#"{"secret":"a"}"#);
    req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
    let item = client_a
        .enqueue(req)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();

    let page = client_b
        .list_retry_items(pb::ListRetryItemsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(page.items.is_empty());
    assert_eq!(page.total, 0);
    assert_eq!(page.counts.unwrap().pending, 0);
    let stats = client_b
        .get_retry_stats(pb::GetRetryStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stats.operation_types.is_empty());
    for code in [
        client_b
            .get_retry_item(pb::GetRetryItemRequest {
                id: item.id.clone(),
            })
            .await
            .unwrap_err()
            .code(),
        client_b
            .retry_now(pb::RetryNowRequest {
                id: item.id.clone(),
            })
            .await
            .unwrap_err()
            .code(),
        client_b
            .cancel_retry_item(pb::CancelRetryItemRequest {
                id: item.id.clone(),
            })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
    // Asking for another tenant by id is for admins only.
    let err = client_b
        .list_retry_items(pb::ListRetryItemsRequest {
            tenant_id: a.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A's item is untouched.
    let still = client_a
        .get_retry_item(pb::GetRetryItemRequest {
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.status, pb::RetryStatus::Pending as i32);

    // A platform admin sees across tenants.
    let mut admin = h.client(&svc, b, Role::Admin).await;
    let all = admin
        .list_retry_items(pb::ListRetryItemsRequest {
            tenant_id: "-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, 1);
    admin
        .get_retry_item(pb::GetRetryItemRequest { id: item.id })
        .await
        .unwrap();
    svc.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_naming_the_field() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let mut client = h.client(&svc, Uuid::new_v4(), Role::Service).await;
    let list = |req: pb::ListRetryItemsRequest| {
        let mut c = client.clone();
        async move { c.list_retry_items(req).await.unwrap_err() }
    };
    assert_invalid(
        list(pb::ListRetryItemsRequest {
            status: 42,
            ..Default::default()
        })
        .await,
        "status",
    );
    assert_invalid(
        list(pb::ListRetryItemsRequest {
            page_size: Some(0),
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        list(pb::ListRetryItemsRequest {
            page_size: Some(1_000_000_000),
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        list(pb::ListRetryItemsRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        list(pb::ListRetryItemsRequest {
            operation_type: "DROP TABLE".into(),
            ..Default::default()
        })
        .await,
        "operation_type",
    );

    assert_invalid(
        client
            .enqueue(enqueue_request("test.x", "{oops"))
            .await
            .unwrap_err(),
        "payload_json",
    );
    assert_invalid(
        client
            .enqueue(enqueue_request("test.x", "[]"))
            .await
            .unwrap_err(),
        "payload_json",
    );
    assert_invalid(
        client.enqueue(enqueue_request("", "{}")).await.unwrap_err(),
        "operation_type",
    );
    let mut req = enqueue_request("test.x", "{}");
    req.max_attempts = 1_000_000;
    assert_invalid(client.enqueue(req).await.unwrap_err(), "max_attempts");
    assert_invalid(
        client
            .get_retry_item(pb::GetRetryItemRequest { id: "nope".into() })
            .await
            .unwrap_err(),
        "id",
    );

    // Without a token: Unauthenticated.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", svc.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = pb::retry_service_client::RetryServiceClient::new(channel);
    let err = anonymous
        .list_retry_items(pb::ListRetryItemsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    svc.shutdown().await;
}

/// A value this version does not know (as a newer version might write once the CHECK
/// constraints allow it) is an error naming the value and its column, never a guess.
#[tokio::test]
async fn unknown_status_or_outcome_in_a_row_is_an_error_naming_it() {
    let h = Harness::new().await;
    let svc = h.start(h.config()).await;
    let tenant = Uuid::new_v4();
    let mut client = h.client(&svc, tenant, Role::Service).await;
    let mut enqueue = async |op: &str| {
        let mut req = enqueue_request(op, "{}");
        req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
        client
            .enqueue(req)
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap()
            .id
    };
    let paused = enqueue("test.paused").await;
    let skipped = enqueue("test.skipped").await;
    for sql in [
        "ALTER TABLE retry.retry_items DROP CONSTRAINT retry_items_status_check",
        "ALTER TABLE retry.retry_attempts DROP CONSTRAINT retry_attempts_outcome_check",
    ] {
        sqlx::query(sql).execute(&h.db.pool).await.unwrap();
    }
    sqlx::query("UPDATE retry.retry_items SET status = 'paused' WHERE id = $1::uuid")
        .bind(&paused)
        .execute(&h.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO retry.retry_attempts (item_id, attempt, started_at, outcome)
         VALUES ($1::uuid, 1, now(), 'skipped')",
    )
    .bind(&skipped)
    .execute(&h.db.pool)
    .await
    .unwrap();

    let assert_names = |err: tonic::Status, value: &str, column: &str| {
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert!(
            err.message().contains(&format!("`{value}`")) && err.message().contains(column),
            "message `{}` should name `{value}` and {column}",
            err.message()
        );
    };
    let err = client
        .get_retry_item(pb::GetRetryItemRequest { id: paused })
        .await
        .unwrap_err();
    assert_names(err, "paused", "retry_items.status");
    let err = client
        .list_retry_items(pb::ListRetryItemsRequest::default())
        .await
        .unwrap_err();
    assert_names(err, "paused", "retry_items.status");
    let err = client
        .get_retry_stats(pb::GetRetryStatsRequest::default())
        .await
        .unwrap_err();
    assert_names(err, "paused", "retry_items.status");
    let err = client
        .get_retry_item(pb::GetRetryItemRequest { id: skipped })
        .await
        .unwrap_err();
    assert_names(err, "skipped", "retry_attempts.outcome");
    svc.shutdown().await;
}

/// Enqueue is for services; the operation types are this deployment's list; one tenant's
/// pending items are capped.
#[tokio::test]
async fn enqueue_is_for_services_allowed_types_and_a_bounded_backlog() {
    let h = Harness::new().await;
    let mut config = h.config();
    config.operation_types = "integrations.*,exports.statistics_variant".into();
    config.max_pending_per_tenant = 3;
    let svc = h.start(config).await;
    let tenant = Uuid::new_v4();
    let later = |op: &str| {
        let mut req = enqueue_request(op, "{}");
        req.first_run = Some(pb::enqueue_request::FirstRun::DelayMs(3_600_000));
        req
    };
    for role in [Role::User, Role::Admin] {
        let err = h
            .client(&svc, tenant, role)
            .await
            .enqueue(later("integrations.refresh_token"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
        assert!(err.message().contains("role service"), "{}", err.message());
    }
    let mut service = h.client(&svc, tenant, Role::Service).await;
    for unlisted in [
        "shopify.sync_order",
        "exports.statistics_variant_x",
        "integrationsx.a",
    ] {
        let err = service.enqueue(later(unlisted)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{unlisted}");
        assert!(
            err.message().contains("HAVEN_RETRY_OPERATION_TYPES"),
            "{}",
            err.message()
        );
    }
    for op in [
        "integrations.refresh_token",
        "integrations.register_webhook",
        "exports.statistics_variant",
    ] {
        service.enqueue(later(op)).await.unwrap();
    }
    let err = service
        .enqueue(later("integrations.refresh_token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("3 pending"), "{}", err.message());
    // Another tenant is not affected.
    h.client(&svc, Uuid::new_v4(), Role::Service)
        .await
        .enqueue(later("integrations.refresh_token"))
        .await
        .unwrap();
    assert_eq!(h.status_counts().await["pending"], 4);
}
