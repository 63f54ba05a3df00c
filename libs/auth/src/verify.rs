use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::claims::{
    AUDIENCE_INTERNAL, AUDIENCE_USERS, Claims, ISSUER, Principal, Role, TenantScope,
};

/// HS256 keys shorter than the hash output weaken the MAC (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// The longest `exp - iat` accepted unless configured otherwise (`HAVEN_JWT_MAX_TTL`).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `authorization` header read. Real tokens are well under 2 KiB; a larger one is
/// refused here instead of travelling on as gRPC metadata that an upstream would refuse.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY: u64 = 30;

/// Why a caller was not let in. Each variant says what to fix; none echoes the token.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing authorization header: send `authorization: Bearer <JWT>`")]
    Missing,
    #[error("authorization header must be `Bearer <JWT>`")]
    NotBearer,
    #[error("authorization header is longer than {MAX_AUTHORIZATION_LEN} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("auth configuration: {0}")]
    Config(String),
}

/// Verifies Haven JWTs: HS256 with the shared secret, and RS256 with a public key when one is
/// configured (so an identity provider can issue tokens without sharing a secret).
#[derive(Clone)]
pub struct Verifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    max_ttl: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.as_ref().map(|_| "[redacted]"))
            .field("rs256", &self.rs256.is_some())
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(secret)?;
        Ok(Verifier {
            hs256: Some(DecodingKey::from_secret(secret)),
            rs256: None,
            max_ttl: DEFAULT_MAX_TTL,
        })
    }

    /// A verifier for RS256 tokens only: a process that holds this cannot mint any token.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, AuthError> {
        Verifier {
            hs256: None,
            rs256: None,
            max_ttl: DEFAULT_MAX_TTL,
        }
        .with_rs256_pem(pem)
    }

    /// Refuse tokens whose `exp - iat` is longer than `max_ttl`.
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Also accept RS256 tokens signed by the holder of this public key (PEM).
    pub fn with_rs256_pem(mut self, pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| AuthError::Config(format!("RS256 public key is not a valid PEM: {e}")))?;
        self.rs256 = Some(key);
        Ok(self)
    }

    /// Verifies an `authorization` header value.
    pub fn verify_header(&self, value: Option<&http::HeaderValue>) -> Result<Principal, AuthError> {
        let value = value.ok_or(AuthError::Missing)?;
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(AuthError::TooLarge);
        }
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::NotBearer)?
            .trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(token)
    }

    /// Verifies a bare token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_error(e.kind()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE_USERS, AUDIENCE_INTERNAL]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| map_error(e.kind()))?
            .claims;
        self.check(&claims, jsonwebtoken::get_current_timestamp())?;
        Ok(claims.into_principal())
    }

    /// The rules jsonwebtoken does not know: a bounded lifetime, `iat` not in the future,
    /// and an audience and scope that fit the roles.
    fn check(&self, claims: &Claims, now: u64) -> Result<(), AuthError> {
        let invalid = |m: &str| Err(AuthError::InvalidClaims(m.to_owned()));
        if claims.roles.is_empty() {
            return invalid("roles must not be empty");
        }
        if claims.iat > now.saturating_add(LEEWAY) {
            return invalid("iat is in the future");
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_ttl.as_secs() {
            return Err(AuthError::InvalidClaims(format!(
                "the token lives longer (exp - iat) than the {} s this deployment accepts (HAVEN_JWT_MAX_TTL)",
                self.max_ttl.as_secs()
            )));
        }
        let service = claims.roles.contains(&Role::Service);
        let person = claims
            .roles
            .iter()
            .any(|r| matches!(r, Role::User | Role::Admin));
        if service && person {
            return invalid("role service cannot be combined with user or admin");
        }
        if service && !claims.aud.contains(AUDIENCE_INTERNAL) {
            return invalid("service tokens must have the audience haven-internal");
        }
        if person && !claims.aud.contains(AUDIENCE_USERS) {
            return invalid("user and admin tokens must have the audience haven-users");
        }
        match claims.scope {
            TenantScope::AllTenants if !service => {
                invalid("scope all_tenants is for service tokens only")
            }
            TenantScope::AllTenants | TenantScope::Tenant => Ok(()),
        }
    }
}

fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::Config(format!(
            "HAVEN_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes (got {})",
            secret.len()
        )));
    }
    Ok(())
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::UnsupportedAlgorithm("in header".into())
        }
        ErrorKind::InvalidIssuer => AuthError::InvalidClaims("issuer is not `haven`".into()),
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::InvalidClaims(format!("missing claim `{c}`"))
        }
        ErrorKind::ImmatureSignature => {
            AuthError::InvalidClaims("token not valid yet (nbf)".into())
        }
        ErrorKind::InvalidAudience => {
            AuthError::InvalidClaims("audience is neither haven-users nor haven-internal".into())
        }
        ErrorKind::Json(e) => AuthError::Malformed(format!("claims are not valid: {e}")),
        ErrorKind::InvalidToken => AuthError::Malformed("expected three base64url segments".into()),
        ErrorKind::Base64(_) => AuthError::Malformed("a segment is not base64url".into()),
        ErrorKind::Utf8(_) => AuthError::Malformed("a segment is not UTF-8".into()),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// Signs HS256 tokens: used by `havenctl token`, the dev launcher and tests.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Minter([redacted])")
    }
}

impl Minter {
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(secret)?;
        Ok(Minter {
            key: EncodingKey::from_secret(secret),
        })
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .map_err(|e| AuthError::Config(format!("cannot sign token: {e}")))
    }
}
