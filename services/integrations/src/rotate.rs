//! Re-encryption of every stored secret under the key ring's active key
//! (`havenctl vault rotate`).

use haven_vault::{CredentialKind, KeyRing, Owner};
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::store;

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// Secrets now sealed under the active key.
    pub resealed: u64,
    /// Secrets skipped because they changed while being rotated (already under the new key).
    pub raced: u64,
}

/// Re-seals every credential not under the ring's active key, a batch per transaction, so it
/// can run beside live services: a row rewritten meanwhile (e.g. by a refresh, which seals
/// with the active key) is left as it is. Fails on the first row that cannot be opened,
/// naming it, and leaves the rest untouched.
pub async fn rotate(pool: &PgPool, ring: &KeyRing) -> Result<RotateReport> {
    let mut report = RotateReport::default();
    loop {
        let mut tx = pool.begin().await?;
        let batch = store::stale_credentials(&mut tx, ring.active_id(), 200).await?;
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        for secret in &batch {
            let kind = CredentialKind::parse(&secret.kind).ok_or_else(|| {
                Error::invalid(format!("credential kind `{}` is unknown", secret.kind))
            })?;
            let owner = Owner {
                tenant_id: secret.tenant_id,
                provider: secret.provider.as_str(),
                kind,
            };
            let opened = ring.open(&secret.sealed, owner).inspect_err(|e| {
                tracing::error!(integration = %secret.integration_id, kind = %secret.kind, error = %e, "cannot rotate credential");
            })?;
            let sealed = ring.seal(&opened, owner);
            if store::reseal_credential(&mut tx, secret, &sealed).await? {
                report.resealed += 1;
            } else {
                report.raced += 1;
            }
        }
        tx.commit().await?;
    }
}
