//! What seed 001's settings pages read: Pinterest boards synced and re-synced, the Pinterest
//! metadata, every setup key, the activity history, and an abandoned OAuth attempt falling
//! back to the status it left.

use std::collections::BTreeSet;
use std::time::Duration;

use haven_fake_providers::FakeBoard;
use haven_proto::integrations::v1::{
    BeginOAuthRequest, DisconnectRequest, GetSetupProgressRequest, IntegrationStatus,
    ListActivityRequest, ListPinterestBoardsRequest, SetupStepStatus, UpdateSetupStepRequest,
    integration::Metadata,
};
use uuid::Uuid;

use crate::common::*;
use crate::lifecycle::{connect_key, connect_oauth, connect_shopify, publish_uninstall, status};

fn boards(n: usize) -> Vec<FakeBoard> {
    (0..n)
        .map(|i| FakeBoard {
            id: format!("9001{i:05}"),
            name: format!("Board {i:03}"),
            pin_count: i as i64,
        })
        .collect()
}

async fn stored_boards(stack: &Stack, tenant: Uuid) -> Vec<(String, String, i64)> {
    stack
        .client()
        .await
        .list_pinterest_boards(request(ListPinterestBoardsRequest {}, &user(tenant)))
        .await
        .unwrap()
        .into_inner()
        .boards
        .into_iter()
        .map(|b| (b.board_id, b.name, b.pin_count))
        .collect()
}

async fn board_count(stack: &Stack, tenant: Uuid) -> i32 {
    match status(stack, tenant, "pinterest").await.metadata {
        Some(Metadata::Pinterest(m)) => m.board_count,
        other => panic!("metadata {other:?}"),
    }
}

/// Makes the next refresher pass renew the Pinterest token.
async fn due_for_refresh(stack: &Stack) {
    sqlx::query(
        "UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute' \
         WHERE provider = 'pinterest'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn pinterest_boards_are_synced_at_connect_and_again_after_a_refresh_at_most_hourly() {
    let stack = Stack::start_with(|mut c| {
        c.refresh_interval = Duration::from_millis(200);
        c
    })
    .await;
    let tenant = Uuid::new_v4();
    stack.fake.set_pinterest_boards(boards(250));
    connect_oauth(&stack, tenant, "pinterest", "").await;

    // All 250 (the fake pages them 100 at a time), by name, and the metadata seed 001 keeps.
    let stored = stored_boards(&stack, tenant).await;
    assert_eq!(stored.len(), 250);
    assert_eq!(stored[0], ("900100000".into(), "Board 000".into(), 0));
    assert_eq!(stored[249].1, "Board 249");
    match status(&stack, tenant, "pinterest").await.metadata {
        Some(Metadata::Pinterest(m)) => {
            assert_eq!(m.account_name, "Haven Hold", "the business name");
            assert_eq!(m.account_id, "havenhold", "the username");
            assert_eq!(m.board_count, 250);
        }
        other => panic!("metadata {other:?}"),
    }
    // Another tenant sees none of them.
    assert!(stored_boards(&stack, Uuid::new_v4()).await.is_empty());

    // On Pinterest, one board is renamed and one deleted. A refresh within the hour leaves
    // the boards as they were…
    let mut changed = boards(250);
    changed[0].name = "Renamed".into();
    changed.remove(1);
    stack.fake.set_pinterest_boards(changed);
    let calls = stack.fake.refresh_calls("pinterest");
    due_for_refresh(&stack).await;
    eventually("a refresh", || async {
        stack.fake.refresh_calls("pinterest") > calls
    })
    .await;
    eventually("the refresh stored", || async {
        count(&stack.db, "SELECT count(*) FROM integrations.integrations WHERE provider = 'pinterest' AND token_expires_at > now() + interval '30 minutes'").await == 1
    })
    .await;
    assert_eq!(stored_boards(&stack, tenant).await.len(), 250);

    // …and one after it syncs them: the rename kept, the deleted board gone, the count right.
    sqlx::query(
        "UPDATE integrations.integrations SET boards_synced_at = now() - interval '61 minutes'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    due_for_refresh(&stack).await;
    eventually("the boards re-synced", || async {
        stored_boards(&stack, tenant).await.len() == 249
    })
    .await;
    let stored = stored_boards(&stack, tenant).await;
    assert!(
        stored
            .iter()
            .any(|b| b.0 == "900100000" && b.1 == "Renamed")
    );
    assert!(!stored.iter().any(|b| b.0 == "900100001"));
    assert_eq!(board_count(&stack, tenant).await, 249);
}

#[tokio::test]
async fn every_setup_key_is_readable_and_settable_and_resend_completes_its_own() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let mut c = stack.client().await;
    let progress = c
        .get_setup_progress(request(GetSetupProgressRequest {}, &user(tenant)))
        .await
        .unwrap()
        .into_inner();
    let keys = |steps: &[haven_proto::integrations::v1::SetupStep]| -> Vec<String> {
        steps.iter().map(|s| s.key.clone()).collect()
    };
    assert_eq!(
        keys(&progress.steps),
        [
            "shopify",
            "pinterest",
            "klaviyo",
            "dynamic_mockups",
            "design_rules",
            "operator_mode"
        ]
    );
    assert_eq!(keys(&progress.other_steps), ["resend", "import"]);

    let progress = c
        .update_setup_step(request(
            UpdateSetupStepRequest {
                step: "import".into(),
                status: SetupStepStatus::Completed as i32,
            },
            &user(tenant),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        progress.other_steps[1].status,
        SetupStepStatus::Completed as i32
    );
    assert_eq!(progress.completed_count, 0, "outside the wizard's count");

    stack.fake.add_api_key("resend", "re_settings_key");
    connect_key(&stack, tenant, "resend", "re_settings_key")
        .await
        .unwrap();
    let progress = c
        .get_setup_progress(request(GetSetupProgressRequest {}, &user(tenant)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(progress.other_steps[0].key, "resend");
    assert_eq!(
        progress.other_steps[0].status,
        SetupStepStatus::Completed as i32
    );
}

#[tokio::test]
async fn activity_records_each_change_in_its_tenant() {
    let stack = Stack::start_with(|mut c| {
        c.refresh_interval = Duration::from_millis(200);
        c
    })
    .await;
    let tenant = Uuid::new_v4();
    let other = Uuid::new_v4();
    stack.fake.add_api_key("klaviyo", "pk_activity_ok");

    connect_shopify(&stack, tenant).await;
    connect_oauth(&stack, tenant, "pinterest", "").await;
    assert!(
        connect_key(&stack, tenant, "klaviyo", "pk_wrong")
            .await
            .is_err()
    );
    connect_key(&stack, tenant, "klaviyo", "pk_activity_ok")
        .await
        .unwrap();
    stack
        .client()
        .await
        .disconnect(request(
            DisconnectRequest {
                provider: "klaviyo".into(),
            },
            &user(tenant),
        ))
        .await
        .unwrap();
    // Pinterest refuses the refresh.
    stack.fake.revoke_refresh_tokens("pinterest");
    due_for_refresh(&stack).await;
    eventually("expired", || async {
        status(&stack, tenant, "pinterest").await.status == IntegrationStatus::Expired as i32
    })
    .await;
    // The shop removes the app.
    publish_uninstall(&stack).await;
    eventually("uninstalled", || async {
        status(&stack, tenant, "shopify").await.status == IntegrationStatus::Disconnected as i32
    })
    .await;
    connect_key(&stack, other, "klaviyo", "pk_activity_ok")
        .await
        .unwrap();

    let list = |t: Uuid, limit: u32| {
        let stack = &stack;
        async move {
            stack
                .client()
                .await
                .list_activity(request(ListActivityRequest { limit }, &user(t)))
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    let entries = list(tenant, 0).await;
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| (e.action.clone(), e.provider.clone(), e.user_id.clone()))
        .collect();
    let want = [
        ("integration_connected", "shopify", "user-1"),
        ("integration_connected", "pinterest", "user-1"),
        ("integration_connect_failed", "klaviyo", "user-1"),
        ("integration_connected", "klaviyo", "user-1"),
        ("integration_disconnected", "klaviyo", "user-1"),
        ("token_refresh_failed", "pinterest", ""),
        ("app_uninstalled", "shopify", ""),
    ]
    .map(|(a, p, u)| (a.to_owned(), p.to_owned(), u.to_owned()));
    assert_eq!(seen, want);
    let connected: serde_json::Value = serde_json::from_str(&entries[6].details_json).unwrap();
    assert_eq!(connected["shopDomain"], SHOP);
    let failed: serde_json::Value = serde_json::from_str(&entries[4].details_json).unwrap();
    assert!(!entries[4].details_json.contains("pk_wrong"), "{failed}");

    // Newest first, limited, and only the caller's tenant.
    let two = list(tenant, 2).await;
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].action, "app_uninstalled");
    let theirs = list(other, 0).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].action, "integration_connected");
    let err = stack
        .client()
        .await
        .list_activity(request(ListActivityRequest { limit: 201 }, &user(tenant)))
        .await
        .unwrap_err();
    assert!(err.message().starts_with("limit"), "{}", err.message());
}

#[tokio::test]
async fn an_abandoned_oauth_attempt_falls_back_to_the_status_it_left() {
    let stack = Stack::start_with(|mut c| {
        c.refresh_interval = Duration::from_millis(200);
        c
    })
    .await;
    let tenant = Uuid::new_v4();
    let begin = |provider: &'static str, shop: &'static str| {
        let stack = &stack;
        async move {
            stack
                .client()
                .await
                .begin_o_auth(request(
                    BeginOAuthRequest {
                        provider: provider.into(),
                        shop: shop.into(),
                        redirect_uri: String::new(),
                    },
                    &user(tenant),
                ))
                .await
                .unwrap();
        }
    };
    let expire_states = || async {
        sqlx::query(
            "UPDATE integrations.oauth_states SET expires_at = now() - interval '1 second'",
        )
        .execute(&stack.db.pool)
        .await
        .unwrap();
    };

    // Never connected: connecting while the state lives, disconnected once it expired.
    begin("shopify", SHOP).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status(&stack, tenant, "shopify").await.status,
        IntegrationStatus::Pending as i32,
        "connecting while the attempt can still finish"
    );
    expire_states().await;
    eventually("back to disconnected", || async {
        status(&stack, tenant, "shopify").await.status == IntegrationStatus::Disconnected as i32
    })
    .await;

    // An expired connection the user tried to renew and left: expired again.
    connect_oauth(&stack, tenant, "pinterest", "").await;
    sqlx::query(
        "UPDATE integrations.integrations SET status = 'expired' WHERE provider = 'pinterest'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    begin("pinterest", "").await;
    begin("pinterest", "").await; // a second try keeps what the first one left
    assert_eq!(
        status(&stack, tenant, "pinterest").await.status,
        IntegrationStatus::Pending as i32
    );
    expire_states().await;
    eventually("back to expired", || async {
        status(&stack, tenant, "pinterest").await.status == IntegrationStatus::Expired as i32
    })
    .await;
    let abandoned: BTreeSet<String> = sqlx::query_scalar(
        "SELECT provider FROM integrations.activity WHERE action = 'connection_abandoned' AND tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&stack.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        abandoned,
        BTreeSet::from(["pinterest".to_owned(), "shopify".to_owned()])
    );
}

/// A callback that consumed its state is still exchanging the code with the provider: the
/// sweep of abandoned attempts must leave its connection alone (it used to revert it, and a
/// connection that then succeeded showed as abandoned in the activity).
#[tokio::test]
async fn a_callback_in_progress_is_not_taken_for_an_abandoned_attempt() {
    let stack = Stack::start_with(|mut c| {
        c.refresh_interval = Duration::from_millis(100);
        c
    })
    .await;
    let tenant = Uuid::new_v4();
    stack
        .client()
        .await
        .begin_o_auth(request(
            BeginOAuthRequest {
                provider: "shopify".into(),
                shop: SHOP.into(),
                redirect_uri: String::new(),
            },
            &user(tenant),
        ))
        .await
        .unwrap();
    // The callback has consumed the state and waits on the provider.
    sqlx::query("UPDATE integrations.oauth_states SET consumed_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&stack.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&stack, tenant, "shopify").await.status,
        IntegrationStatus::Pending as i32,
        "still connecting while the callback runs"
    );
    let abandoned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integrations.activity WHERE action = 'connection_abandoned' AND tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(abandoned, 0);
}
