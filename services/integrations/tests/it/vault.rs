//! The vault as stored: owner binding, key rotation, and no secret in the clear anywhere.

use std::io::Write;
use std::sync::{Arc, Mutex};

use haven_proto::integrations::v1::GetAccessTokenRequest;
use haven_vault::KeyRing;
use tonic::Code;
use uuid::Uuid;

use crate::common::*;
use crate::lifecycle::{connect_key, connect_oauth, connect_shopify};

async fn token_of(
    addr: std::net::SocketAddr,
    tenant: Uuid,
    provider: &str,
) -> Result<String, tonic::Status> {
    client_at(addr)
        .await
        .get_access_token(request(
            GetAccessTokenRequest {
                tenant_id: tenant.to_string(),
                provider: provider.into(),
                min_valid_seconds: 0,
            },
            &service(),
        ))
        .await
        .map(|r| r.into_inner().access_token)
}

#[tokio::test]
async fn ciphertext_moved_to_another_tenant_fails_to_decrypt() {
    let stack = Stack::start().await;
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    for (tenant, key) in [(a, "pk_live_a_secret"), (b, "pk_live_b_secret")] {
        stack.fake.add_api_key("klaviyo", key);
        connect_key(&stack, tenant, "klaviyo", key).await.unwrap();
    }
    // Copy A's ciphertext over B's, as an attacker with database write access might.
    sqlx::query(
        "UPDATE integrations.credentials b SET key_id = a.key_id, nonce = a.nonce, ciphertext = a.ciphertext \
         FROM integrations.credentials a WHERE a.tenant_id = $1 AND b.tenant_id = $2",
    )
    .bind(a)
    .bind(b)
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let err = token_of(stack.addr, b, "klaviyo").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(!err.message().contains("pk_live_a_secret"));
    assert_eq!(
        token_of(stack.addr, a, "klaviyo").await.unwrap(),
        "pk_live_a_secret"
    );
}

#[tokio::test]
async fn rotation_re_encrypts_everything_and_keeps_it_readable() {
    let k1 = KeyRing::generate_entry("k1");
    let k2 = KeyRing::generate_entry("k2");
    let old = KeyRing::parse(&format!("*{k1}")).unwrap();
    let stack = Stack::start_with(|c| c.with_vault(old)).await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    stack.fake.add_api_key("klaviyo", "pk_live_rotate");
    connect_key(&stack, tenant, "klaviyo", "pk_live_rotate")
        .await
        .unwrap();
    let before = token_of(stack.addr, tenant, "shopify").await.unwrap();

    let both = KeyRing::parse(&format!("*{k2},{k1}")).unwrap();
    let report = haven_integrations::rotate(&stack.db.pool, &both)
        .await
        .unwrap();
    assert_eq!(report.resealed, 3, "access, refresh and API key");
    assert_eq!(
        count(
            &stack.db,
            "SELECT count(*) FROM integrations.credentials WHERE key_id <> 'k2'"
        )
        .await,
        0
    );
    // Idempotent.
    assert_eq!(
        haven_integrations::rotate(&stack.db.pool, &both)
            .await
            .unwrap()
            .resealed,
        0
    );

    // A replica that only knows the new key reads every credential.
    let only_new = KeyRing::parse(&format!("*{k2}")).unwrap();
    let replica = stack
        .replica(stack.config.clone().with_vault(only_new))
        .await;
    assert_eq!(token_of(replica, tenant, "shopify").await.unwrap(), before);
    assert_eq!(
        token_of(replica, tenant, "klaviyo").await.unwrap(),
        "pk_live_rotate"
    );
}

/// Everything written to the logs during the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_database_or_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    connect_shopify(&stack, tenant).await;
    connect_oauth(&stack, tenant, "pinterest", "").await;
    let api_keys = [
        "pk_live_never_in_clear",
        "dm_never_in_clear",
        "re_never_in_clear",
    ];
    stack.fake.add_api_key("klaviyo", api_keys[0]);
    stack.fake.add_api_key("dynamic_mockups", api_keys[1]);
    stack.fake.add_api_key("resend", api_keys[2]);
    for (provider, key) in ["klaviyo", "dynamic_mockups", "resend"]
        .into_iter()
        .zip(api_keys)
    {
        connect_key(&stack, tenant, provider, key).await.unwrap();
    }
    // A rejected key goes through the error paths too.
    let _ = connect_key(&stack, Uuid::new_v4(), "klaviyo", "pk_live_rejected_key").await;
    // A refresh, so rotated tokens exist as well.
    sqlx::query("UPDATE integrations.integrations SET token_expires_at = now() + interval '1 minute' WHERE provider = 'shopify'")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    let live = token_of(stack.addr, tenant, "shopify").await.unwrap();

    let mut secrets: Vec<String> = stack.fake.issued_access_tokens();
    secrets.extend(stack.fake.issued_refresh_tokens());
    secrets.extend(api_keys.iter().map(|s| (*s).to_owned()));
    secrets.push("pk_live_rejected_key".into());
    secrets.push(SHOPIFY_SECRET.into());
    secrets.push(PINTEREST_SECRET.into());
    assert!(secrets.contains(&live));
    assert!(secrets.len() >= 10, "{} secrets", secrets.len());

    let dump = std::process::Command::new(pg_dump())
        .args([
            "--data-only",
            "--schema=integrations",
            "--schema=retry",
            &stack.db.url,
        ])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains("COPY integrations.credentials"),
        "dump has the credentials table"
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.len() > 1000, "logs were captured");
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "a secret is in the database dump"
        );
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
}

/// pg_dump of the installed PostgreSQL (Debian keeps it out of PATH).
fn pg_dump() -> String {
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        versions.sort();
        if let Some(v) = versions.last() {
            let p = v.join("bin/pg_dump");
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    "pg_dump".into()
}
