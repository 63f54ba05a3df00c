//! The retry service against real PostgreSQL and NATS, one test binary.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod api;
mod bus_auth;
mod common;
mod failures;
mod faults;
mod queue;
mod scale;
mod soak;
