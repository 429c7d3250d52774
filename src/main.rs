//! The `gtfs-fetch` binary: everything lives in the library; see `src/lib.rs`.

fn main() -> std::process::ExitCode {
    gtfs_fetch::cli::run()
}
