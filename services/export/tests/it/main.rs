//! The export service against real PostgreSQL and NATS, one test binary.

mod export;
