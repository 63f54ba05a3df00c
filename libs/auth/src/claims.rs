use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a caller may do. `Admin` is a platform administrator (billing across tenants);
/// `Service` is another Haven service acting on a tenant's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`: expected user, admin or service")]
pub struct RoleParseError(String);

impl FromStr for Role {
    type Err = RoleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(RoleParseError(other.to_owned())),
        }
    }
}

/// The verified caller. Handlers select tenant data by `tenant_id` from here, never from
/// the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Platform admins may look across tenants (e.g. billing, the error queue).
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    pub fn is_service(&self) -> bool {
        self.has_role(Role::Service)
    }
}

/// The JWT body Haven issues and accepts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user (or service) id.
    pub sub: String,
    /// The tenant the token acts for.
    pub tid: Uuid,
    pub roles: Vec<Role>,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// The issuer Haven writes into tokens it mints and requires of tokens it verifies.
pub const ISSUER: &str = "haven";

impl Claims {
    pub fn new(
        tenant_id: Uuid,
        user_id: impl Into<String>,
        roles: Vec<Role>,
        ttl: Duration,
    ) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: user_id.into(),
            tid: tenant_id,
            roles,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            iss: ISSUER.to_owned(),
        }
    }

    pub(crate) fn into_principal(self) -> Principal {
        Principal {
            tenant_id: self.tid,
            user_id: self.sub,
            roles: self.roles,
        }
    }
}
