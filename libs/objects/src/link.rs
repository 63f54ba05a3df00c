//! Signed, time-limited links to objects in stores that cannot presign (the file store):
//! `GET {public}/api/objects/{key}?expires={unix}&sig={hex}`, served by the gateway.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ObjectKey;

type HmacSha256 = Hmac<Sha256>;

/// Shortest link secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Longest lifetime of a link (S3's own limit for presigned URLs).
pub const MAX_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A path segment keeps only unreserved characters; everything else is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature does not match")]
    BadSignature,
}

/// Signs and checks links with a secret of their own (not the JWT secret), so a link
/// signature can never be replayed as anything else and rotating one does not end the other.
#[derive(Clone)]
pub struct LinkSigner {
    secret: SecretString,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

/// The link secret is shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("HAVEN_OBJECT_LINK_SECRET must be at least {MIN_SECRET_LEN} bytes")]
pub struct WeakSecret;

impl LinkSigner {
    pub fn new(secret: SecretString) -> Result<LinkSigner, WeakSecret> {
        if secret.expose_secret().len() < MIN_SECRET_LEN {
            return Err(WeakSecret);
        }
        Ok(LinkSigner { secret })
    }

    fn mac(&self, key: &ObjectKey, expires: i64) -> HmacSha256 {
        // Domain-separated, and the key cannot contain a newline, so (key, expires) pairs
        // never collide.
        let Ok(mut mac) = HmacSha256::new_from_slice(self.secret.expose_secret().as_bytes()) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(b"haven-object-link/v1\n");
        mac.update(key.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature for `key` valid until `expires` (unix seconds).
    pub fn signature(&self, key: &ObjectKey, expires: i64) -> String {
        hex::encode(self.mac(key, expires).finalize().into_bytes())
    }

    /// Checks a link at `now` (unix seconds), the signature in constant time.
    pub fn verify(
        &self,
        key: &ObjectKey,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let expected = self.mac(key, expires).finalize().into_bytes();
        let given = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(LinkError::BadSignature);
        }
        if expires <= now {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    /// `{public_base}/api/objects/{key}?expires=…&sig=…`.
    pub fn link(&self, public_base: &str, key: &ObjectKey, expires: i64) -> String {
        format!(
            "{}?expires={expires}&sig={}",
            object_address(public_base, key),
            self.signature(key, expires)
        )
    }
}

/// The unsigned address of an object behind the gateway; without `expires` and `sig` it
/// answers 403, so it is safe to store and show.
pub fn object_address(public_base: &str, key: &ObjectKey) -> String {
    let path: Vec<String> = key
        .as_str()
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!(
        "{}/api/objects/{}",
        public_base.trim_end_matches('/'),
        path.join("/")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(SecretString::from("k".repeat(MIN_SECRET_LEN))).unwrap()
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let s = signer();
        let key = ObjectKey::parse("a/b.csv").unwrap();
        let sig = s.signature(&key, 1_000);
        assert_eq!(s.verify(&key, 1_000, &sig, 999), Ok(()));
        assert_eq!(s.verify(&key, 1_000, &sig, 1_000), Err(LinkError::Expired));
    }

    #[test]
    fn a_signature_holds_only_for_its_key_and_expiry() {
        let s = signer();
        let key = ObjectKey::parse("a/b.csv").unwrap();
        let other = ObjectKey::parse("a/c.csv").unwrap();
        let sig = s.signature(&key, 1_000);
        assert_eq!(
            s.verify(&other, 1_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(s.verify(&key, 2_000, &sig, 0), Err(LinkError::BadSignature));
        assert_eq!(s.verify(&key, 1_000, "zz", 0), Err(LinkError::BadSignature));
        assert_eq!(s.verify(&key, 1_000, "", 0), Err(LinkError::BadSignature));
        let other_secret = LinkSigner::new(SecretString::from("j".repeat(MIN_SECRET_LEN))).unwrap();
        assert_eq!(
            other_secret.verify(&key, 1_000, &sig, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(LinkSigner::new(SecretString::from("short")).is_err());
    }

    #[test]
    fn links_escape_each_segment() {
        let key = ObjectKey::parse("s/gid:x y/é.csv").unwrap();
        assert_eq!(
            object_address("http://h:1/", &key),
            "http://h:1/api/objects/s/gid%3Ax%20y/%C3%A9.csv"
        );
    }
}
