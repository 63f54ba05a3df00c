//! The daily product statistics end to end: the export service with the real integrations
//! service (shops connected through OAuth with the fake Shopify), the fake's GraphQL
//! catalogue, CDN and throttling, real PostgreSQL and NATS, and both object stores (a file
//! store in a temporary directory and moto's S3 server). Expected metrics are computed here
//! from the events the test itself inserts.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

pub(crate) mod world;

mod daily;
mod replicas;
