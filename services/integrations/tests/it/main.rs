//! Integration tests of the integrations service: real PostgreSQL and NATS, fake providers.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;
mod gateway;
mod lifecycle;
mod oauth;
mod settings;
mod vault;
