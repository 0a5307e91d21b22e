//! Rebuild when a migration changes: `sqlx::migrate!` embeds the files at compile time, and on stable Rust the macro
//! cannot tell cargo to watch them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
