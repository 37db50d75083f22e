// `sqlx::migrate!` embeds the migration files at compile time; without this, editing or adding one would not
// rebuild the crate and a stale set would be applied.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
