//! Rebuild when a migration changes.
// `sqlx::migrate!` embeds the migrations at compile time but cannot ask cargo to watch them on stable Rust.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
