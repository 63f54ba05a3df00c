//! `sqlx::migrate!` embeds the migrations at compile time, but cargo does not know to look
//! at the folder: without this, a migration added to it is missing from an incremental
//! build until something else in the crate changes (sqlx's `migrate build-script`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
