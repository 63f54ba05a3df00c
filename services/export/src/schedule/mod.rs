//! Scheduled exports (README, "Scheduled exports"): weekly and monthly exports in the
//! schedule's own time zone. This part: the schedules themselves (checked settings, their
//! rows, the RPCs) and the slot arithmetic.

pub(crate) mod api;
pub mod clock;
pub use clock::Clock;
pub use store::{Claimed, claim_due, reclaim_lapsed};
pub(crate) mod mail;
pub mod model;
pub(crate) mod runner;
/// Public: the slot arithmetic is a pure library others (the console's preview, tools) can use.
pub mod slots;
mod store;
