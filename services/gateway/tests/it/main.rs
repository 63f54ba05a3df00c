//! The gateway against real services, PostgreSQL and NATS, one test binary.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod console;
mod cors;
mod download;
mod errors;
mod objects;
mod openapi;
mod schedules;
mod stack;
mod statistics;
mod webhooks;
