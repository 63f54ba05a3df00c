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

/// Which tenants a caller may act for. Users act for their own tenant; a service token is
/// either limited to the tenant it names or, when minted so explicitly, valid for all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantScope {
    #[default]
    Tenant,
    AllTenants,
}

/// The audience of tokens people use (users and admins), at the edge and behind it.
pub const AUDIENCE_USERS: &str = "haven-users";
/// The audience of service tokens: the internal gRPC APIs, never people.
pub const AUDIENCE_INTERNAL: &str = "haven-internal";

/// The verified caller. Handlers select tenant data by `tenant_id` from here, never from
/// the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub user_id: String,
    pub roles: Vec<Role>,
    /// `AllTenants` only for service tokens minted with that scope.
    pub scope: TenantScope,
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

    /// Whether this caller may act on `tenant`'s data when a request names one (a service
    /// fetching a tenant's credential): its own tenant, or any with an all-tenants scope.
    pub fn may_act_for(&self, tenant: Uuid) -> bool {
        match self.scope {
            TenantScope::AllTenants => true,
            TenantScope::Tenant => self.tenant_id == tenant,
        }
    }
}

/// `aud` as RFC 7519 allows it: one string or an array of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
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
    /// Not valid before (optional, as in RFC 7519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    /// [`AUDIENCE_USERS`] for users and admins, [`AUDIENCE_INTERNAL`] for services.
    pub aud: Audience,
    /// Service tokens only: `all_tenants` to act for any tenant.
    #[serde(default)]
    pub scope: TenantScope,
}

/// The issuer Haven writes into tokens it mints and requires of tokens it verifies.
pub const ISSUER: &str = "haven";

impl Claims {
    /// A token for `tenant_id`, with the audience its roles call for: the internal audience
    /// for service tokens, the users' audience otherwise.
    pub fn new(
        tenant_id: Uuid,
        user_id: impl Into<String>,
        roles: Vec<Role>,
        ttl: Duration,
    ) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        let aud = if roles.contains(&Role::Service) {
            AUDIENCE_INTERNAL
        } else {
            AUDIENCE_USERS
        };
        Claims {
            sub: user_id.into(),
            tid: tenant_id,
            roles,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            nbf: None,
            iss: ISSUER.to_owned(),
            aud: Audience::One(aud.to_owned()),
            scope: TenantScope::Tenant,
        }
    }

    /// The same token for every tenant (service tokens only; verification refuses it on
    /// any other).
    pub fn for_all_tenants(mut self) -> Self {
        self.scope = TenantScope::AllTenants;
        self
    }

    pub(crate) fn into_principal(self) -> Principal {
        Principal {
            tenant_id: self.tid,
            user_id: self.sub,
            roles: self.roles,
            scope: self.scope,
        }
    }
}
