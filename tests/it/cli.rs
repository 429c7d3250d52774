//! The built executable, as an operator runs it: exit codes and messages.

use std::process::{Command, Output};

fn gtfs_fetch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gtfs-fetch"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in ["GTFS_CONFIG", "DATABASE_URL", "GTFS_CONNECTION_LIMIT"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("run gtfs-fetch")
}

#[test]
fn config_prints_the_effective_configuration() {
    let out = gtfs_fetch(&["config"], &[]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["connection_limit"], 50);
    let out = gtfs_fetch(&["config"], &[("GTFS_CONNECTION_LIMIT", "77")]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["connection_limit"], 77);
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for args in [&["config"][..], &["serve"][..], &[][..]] {
        let out = gtfs_fetch(args, &[("GTFS_CONNECTION_LIMIT", "lots")]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("GTFS_CONNECTION_LIMIT"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_missing_config_file_or_bad_usage_exits_2() {
    let out = gtfs_fetch(&["--config", "/nonexistent/gtfs.toml", "config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gtfs.toml"));
    let out = gtfs_fetch(&["config"], &[("GTFS_CONFIG", "/nonexistent/other.toml")]);
    assert_eq!(out.status.code(), Some(2));
    let out = gtfs_fetch(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // --config is global: accepted after the subcommand too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "connection_limit = 12\n").unwrap();
    let out = gtfs_fetch(&["config", "--config", file.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["connection_limit"], 12);
}
