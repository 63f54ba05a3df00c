//! Identity for every Haven call: JWT verification, the [`Principal`] it yields, a tower
//! layer that guards tonic and axum services alike, and token minting for dev and tests.
//!
//! Services never trust a tenant id taken from a request body: they take it from the
//! [`Principal`] this crate puts into the request extensions.

mod claims;
mod layer;
mod verify;

pub use claims::{Claims, Principal, Role, RoleParseError};
pub use layer::{AuthLayer, AuthService, GrpcRejection, JsonRejection, Rejection, principal_of};
pub use verify::{AuthError, Minter, Verifier, MIN_SECRET_LEN};
