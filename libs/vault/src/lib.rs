//! Credential encryption: AES-256-GCM under a ring of named keys, with the owner bound in.
//!
//! Every ciphertext carries the id of the key that sealed it, so keys can be rotated without
//! a flag day: new writes use the active key, old rows stay readable until re-encrypted. The
//! associated data binds tenant, provider and credential kind, so a ciphertext copied into
//! another tenant's row (or from a refresh token into an access token) fails to open.

mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::ExposeSecret;
use uuid::Uuid;

pub use secret::Secret;

/// Length of an AES-256-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// Why the vault refused.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// HAVEN_VAULT_KEYS is malformed; the message names the entry, never a key's bytes.
    #[error("HAVEN_VAULT_KEYS: {0}")]
    Config(String),
    /// The row was sealed with a key the ring no longer holds.
    #[error("credential was encrypted with key `{0}`, which is not in HAVEN_VAULT_KEYS")]
    UnknownKey(String),
    /// Wrong key, tampered bytes, or associated data that does not match (another owner's row).
    #[error("credential failed to decrypt: it was altered or belongs to another owner")]
    Decrypt,
    /// The stored nonce is not 12 bytes.
    #[error("credential nonce is {0} bytes, expected 12")]
    Nonce(usize),
}

/// What a credential is; part of the associated data so kinds cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// An OAuth access token.
    AccessToken,
    /// An OAuth refresh token.
    RefreshToken,
    /// A key pasted by the user.
    ApiKey,
    /// A PKCE code verifier waiting for its OAuth callback.
    PkceVerifier,
}

impl CredentialKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::AccessToken => "access_token",
            CredentialKind::RefreshToken => "refresh_token",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::PkceVerifier => "pkce_verifier",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access_token" => Some(CredentialKind::AccessToken),
            "refresh_token" => Some(CredentialKind::RefreshToken),
            "api_key" => Some(CredentialKind::ApiKey),
            "pkce_verifier" => Some(CredentialKind::PkceVerifier),
            _ => None,
        }
    }
}

/// The owner a ciphertext is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// Tenant the credential belongs to.
    pub tenant_id: Uuid,
    /// Provider key, e.g. `shopify`.
    pub provider: &'a str,
    /// Credential kind.
    pub kind: CredentialKind,
}

impl Owner<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "haven.vault.v1|{}|{}|{}",
            self.tenant_id,
            self.provider,
            self.kind.as_str()
        )
        .into_bytes()
    }
}

/// A sealed secret as stored: key id, nonce and ciphertext (with the GCM tag).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key in the ring that sealed it.
    pub key_id: String,
    /// Random 96-bit nonce, unique per seal.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The keys the vault knows, one of them active for new writes.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, Key<Aes256Gcm>>,
    active: String,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Parses `HAVEN_VAULT_KEYS`: comma-separated `id:base64(32 bytes)` entries, the active one
    /// marked with `*` before or after it, e.g. `*2026-11:...,2026-05:...`.
    pub fn parse(spec: &str) -> Result<Self, VaultError> {
        let mut keys = BTreeMap::new();
        let mut active = None;
        for (n, entry) in spec.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (marked, entry) = match entry.strip_prefix('*').or_else(|| entry.strip_suffix('*'))
            {
                Some(rest) => (true, rest.trim()),
                None => (false, entry),
            };
            let Some((id, b64)) = entry.split_once(':') else {
                return Err(VaultError::Config(format!(
                    "entry {} is not `id:base64key`",
                    n + 1
                )));
            };
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(VaultError::Config(format!(
                    "entry {}: key id must be non-empty letters, digits, '-', '_' or '.'",
                    n + 1
                )));
            }
            let bytes = BASE64
                .decode(b64.trim())
                .map_err(|_| VaultError::Config(format!("key `{id}` is not valid base64")))?;
            let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                return Err(VaultError::Config(format!(
                    "key `{id}` is {} bytes, expected 32",
                    bytes.len()
                )));
            };
            if keys
                .insert(id.to_owned(), Key::<Aes256Gcm>::from(bytes))
                .is_some()
            {
                return Err(VaultError::Config(format!("key id `{id}` appears twice")));
            }
            if marked {
                if active.is_some() {
                    return Err(VaultError::Config(
                        "more than one key is marked active with `*`".into(),
                    ));
                }
                active = Some(id.to_owned());
            }
        }
        if keys.is_empty() {
            return Err(VaultError::Config(
                "no keys; expected `*id=base64key`".into(),
            ));
        }
        let active = match active {
            Some(a) => a,
            None if keys.len() == 1 => keys.keys().next().cloned().unwrap_or_default(),
            None => {
                return Err(VaultError::Config(
                    "several keys but none marked active with a leading `*`".into(),
                ));
            }
        };
        Ok(KeyRing { keys, active })
    }

    /// A fresh random key entry (`id:base64`), for `havenctl vault keygen`.
    pub fn generate_entry(id: &str) -> String {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        format!("{id}:{}", BASE64.encode(key))
    }

    /// A ring of one fresh random key, active; for tests and throwaway dev stacks.
    pub fn random(id: &str) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(id.to_owned(), Aes256Gcm::generate_key(&mut OsRng));
        KeyRing {
            keys,
            active: id.to_owned(),
        }
    }

    /// Id of the key new secrets are sealed with.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Encrypts `secret` for `owner` under the active key with a fresh random nonce.
    pub fn seal(&self, secret: &impl ExposeSecret<str>, owner: Owner<'_>) -> Sealed {
        let key = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = owner.aad();
        // Encryption only fails for plaintexts over 64 GiB.
        let ciphertext = Aes256Gcm::new(key)
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        Sealed {
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Decrypts `sealed`, which must have been sealed for exactly `owner`.
    pub fn open(&self, sealed: &Sealed, owner: Owner<'_>) -> Result<Secret, VaultError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey(sealed.key_id.clone()))?;
        let nonce = <[u8; NONCE_LEN]>::try_from(sealed.nonce.as_slice())
            .map_err(|_| VaultError::Nonce(sealed.nonce.len()))?;
        let aad = owner.aad();
        let plain = Aes256Gcm::new(key)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Decrypt)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| VaultError::Decrypt)
    }

    /// Re-seals under the active key; `None` when it already is.
    pub fn reseal(&self, sealed: &Sealed, owner: Owner<'_>) -> Result<Option<Sealed>, VaultError> {
        if sealed.key_id == self.active {
            return Ok(None);
        }
        let secret = self.open(sealed, owner)?;
        Ok(Some(self.seal(&secret, owner)))
    }
}

impl FromStr for KeyRing {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyRing::parse(s)
    }
}

/// The vault's settings, shared by the integrations service and `havenctl vault`.
#[derive(Clone, Debug, clap::Args)]
pub struct VaultArgs {
    /// Key ring for credential encryption: comma-separated `id:base64(32 bytes)`, the active key
    /// marked `*`, e.g. `*k2:...,k1:...`. Generate an entry with `havenctl vault keygen`.
    #[arg(long = "vault-keys", env = "HAVEN_VAULT_KEYS", hide_env_values = true)]
    pub keys: KeyRing,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner(tenant: Uuid, kind: CredentialKind) -> Owner<'static> {
        Owner {
            tenant_id: tenant,
            provider: "shopify",
            kind,
        }
    }

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    #[test]
    fn round_trip_with_random_nonces() {
        let r = ring(&format!("*{}", KeyRing::generate_entry("k1")));
        let t = Uuid::new_v4();
        let s = Secret::new("shpat_abc");
        let a = r.seal(&s, owner(t, CredentialKind::AccessToken));
        let b = r.seal(&s, owner(t, CredentialKind::AccessToken));
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(9).any(|w| w == b"shpat_abc"));
        let opened = r.open(&a, owner(t, CredentialKind::AccessToken)).unwrap();
        assert_eq!(opened.expose(), "shpat_abc");
    }

    #[test]
    fn another_owner_or_kind_fails() {
        let r = ring(&KeyRing::generate_entry("k1"));
        let t = Uuid::new_v4();
        let sealed = r.seal(&Secret::new("x"), owner(t, CredentialKind::RefreshToken));
        assert!(matches!(
            r.open(&sealed, owner(Uuid::new_v4(), CredentialKind::RefreshToken)),
            Err(VaultError::Decrypt)
        ));
        assert!(matches!(
            r.open(&sealed, owner(t, CredentialKind::AccessToken)),
            Err(VaultError::Decrypt)
        ));
        let other_provider = Owner {
            provider: "pinterest",
            ..owner(t, CredentialKind::RefreshToken)
        };
        assert!(matches!(
            r.open(&sealed, other_provider),
            Err(VaultError::Decrypt)
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(
            r.open(&tampered, owner(t, CredentialKind::RefreshToken)),
            Err(VaultError::Decrypt)
        ));
    }

    #[test]
    fn rotation_reads_old_and_writes_new() {
        let k1 = KeyRing::generate_entry("k1");
        let k2 = KeyRing::generate_entry("k2");
        let old = ring(&format!("*{k1}"));
        let new = ring(&format!("*{k2},{k1}"));
        let t = Uuid::new_v4();
        let o = owner(t, CredentialKind::ApiKey);
        let sealed = old.seal(&Secret::new("pk_live"), o);
        assert_eq!(sealed.key_id, "k1");
        let resealed = new.reseal(&sealed, o).unwrap().unwrap();
        assert_eq!(resealed.key_id, "k2");
        assert_eq!(new.open(&resealed, o).unwrap().expose(), "pk_live");
        assert!(new.reseal(&resealed, o).unwrap().is_none());
        // A ring without k1 names the missing key.
        let only2 = ring(&format!("*{k2}"));
        assert!(matches!(only2.open(&sealed, o), Err(VaultError::UnknownKey(id)) if id == "k1"));
    }

    #[test]
    fn bad_specs_name_the_problem_without_key_bytes() {
        let k1 = KeyRing::generate_entry("k1");
        let k2 = KeyRing::generate_entry("k2");
        for (spec, needle) in [
            ("", "no keys"),
            ("k1", "not `id:base64key`"),
            ("k1:***", "not valid base64"),
            ("k1:AAAA", "3 bytes"),
            (&format!("{k1},{k2}") as &str, "none marked active"),
            (&format!("*{k1},*{k2}"), "more than one"),
            (&format!("*{k1},{k1}"), "appears twice"),
        ] {
            let err = KeyRing::parse(spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec:?}: {err}");
            let b64 = k1.split_once(':').unwrap().1;
            assert!(!err.contains(b64));
        }
        let r = ring(&format!("*{k1}"));
        assert!(!format!("{r:?}").contains(k1.split_once(':').unwrap().1));
        // The mark may also trail the entry.
        assert_eq!(ring(&format!("{k2},{k1}*")).active_id(), "k1");
    }
}
