//! The `app` schema (the platform's own data that exports read) and a generator of
//! realistic demo and benchmark data at any size.
//!
//! The generator writes with binary `COPY ... FROM STDIN`, encoding rows on blocking
//! threads while PostgreSQL ingests the previous chunk, and salts text columns with hostile
//! values (delimiters, quotes, newlines, emoji, formula prefixes) so every export path
//! meets them.

mod binary;
mod generate;
mod indexes;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use generate::{CatalogShape, DataKind, SeedOptions, SeedReport, TableLoad, seed};

/// The `app` schema's embedded migrations.
pub fn migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

/// Brings the `app` schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), haven_db::DbError> {
    haven_db::migrate(pool, "app", migrator()).await
}

/// Text that breaks naive CSV, JSON and spreadsheet handling; the generator mixes it in.
pub const HOSTILE_TEXT: &[&str] = &[
    "Smith, John",
    "She said \"hello\"",
    "line one\nline two",
    "carriage\r\nreturn",
    "tab\tseparated",
    "=SUM(A1:A9)",
    "+1 (555) 010-9999",
    "-2+3",
    "@admin",
    "\ttab-led",
    "émoji 🎨 café",
    "日本語のテキスト",
    "back\\slash",
    "'single' quotes",
    "trailing space ",
    "<script>alert(1)</script>",
];

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] haven_db::DbError),
    #[error("generator: {0}")]
    Generate(String),
}
