//! What this binary was built from, set by `build.rs` at compile time: shown by
//! `--version`, and meant for a `build_info` metric.
//!
//! `option_env!` rather than `env!`: a build without the build script's output (a
//! stripped-down container build) still compiles, saying `unknown`.

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit the binary was built from, or `unknown` (no git checkout).
pub const GIT_SHA: &str = match option_env!("GTFS_FETCH_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// The UTC date of the build, `YYYY-MM-DD` (`SOURCE_DATE_EPOCH` when set), or `unknown`.
pub const BUILD_DATE: &str = match option_env!("GTFS_FETCH_BUILD_DATE") {
    Some(date) => date,
    None => "unknown",
};

/// What `--version` prints after the program name: `0.1.0 (commit 1a2b3c4d5e6f, built 2025-01-31)`.
pub fn version_line() -> String {
    format!("{VERSION} (commit {GIT_SHA}, built {BUILD_DATE})")
}
