//! The export service against real PostgreSQL and NATS, one test binary.

mod billing;
mod brand;
mod export;
mod harness;
mod schedule_mail;
mod schedule_replicas;
mod schedules;
mod statistics;
