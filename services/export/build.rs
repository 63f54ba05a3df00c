//! Links the `haven-export` binary at a fixed address instead of as a position-independent
//! executable. A PIE's loader applies every relative relocation at start: with this binary's
//! 153,000 of them it reads the 3.6 MB relocation table and writes into the 3.5 MB of
//! tables they point into (vtables, string tables), all of which then stay resident: about
//! 6 MiB of the service's peak RSS (36.6 against 30.6 MiB in the same export benchmark).
//! The price is that the binary's own code is not moved by ASLR (libraries, stack and heap
//! still are); build with `--features haven-export/pie` to keep a PIE.

fn main() {
    // `sqlx::migrate!` embeds the migrations: a migration added to the folder must rebuild
    // the crate (sqlx's `migrate build-script`).
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_PIE");
    if std::env::var_os("CARGO_FEATURE_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
