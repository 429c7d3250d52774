//! The built executable, as an operator runs it: exit codes and messages.

use std::process::{Command, Output};

fn gtfs_fetch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(crate::support::binary::bin());
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in [
        "GTFS_CONFIG",
        "DATABASE_URL",
        "GTFS_CONNECTION_LIMIT",
        "GTFS_LOG_FORMAT",
        "RUST_LOG",
    ] {
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

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = gtfs_fetch(&["--version"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "gtfs-fetch {} (commit {}, built {})",
        env!("CARGO_PKG_VERSION"),
        gtfs_fetch::build::GIT_SHA,
        gtfs_fetch::build::BUILD_DATE
    );
    assert_eq!(text.trim(), expected);
    // In a git checkout, the commit is HEAD's.
    if let Ok(git) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        && git.status.success()
    {
        assert_eq!(
            gtfs_fetch::build::GIT_SHA,
            String::from_utf8_lossy(&git.stdout).trim()
        );
    }
    let date = gtfs_fetch::build::BUILD_DATE;
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{date}"
    );
}

#[test]
fn help_points_to_the_default_file_and_lists_the_variables() {
    let out = gtfs_fetch(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "config/default.toml",
        "GTFS_LISTEN",
        "DATABASE_URL",
        "WAYBILLS_DB_MAX_CONNECTIONS",
        "GTFS_SHUTDOWN_TIMEOUT",
        "GTFS_LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(help.contains(text), "{text} missing:\n{help}");
    }
}

/// `serve` on a port already taken: it fails at once with one logged error.
fn serve_on_a_taken_port(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let mut all = vec![("GTFS_LISTEN", listen.as_str())];
    all.extend_from_slice(env);
    let out = gtfs_fetch(&["serve"], &all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_follow_stderr_or_gtfs_log_format_and_errors_print_once() {
    // stderr is a pipe here: JSON lines, and the error once.
    let (code, stderr) = serve_on_a_taken_port(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot listen"))
        .collect();
    assert_eq!(errors.len(), 1, "the error once: {stderr}");
    let line: serde_json::Value = serde_json::from_str(errors[0]).expect("a JSON log line");
    assert_eq!(line["level"], "ERROR");

    // Text on request, without colours off a terminal.
    let (code, stderr) = serve_on_a_taken_port(&[("GTFS_LOG_FORMAT", "text")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no ANSI escapes in a file: {stderr:?}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(stderr.lines().next().unwrap()).is_err());
    assert!(
        stderr.contains("ERROR") && stderr.contains("cannot listen"),
        "{stderr}"
    );

    // Anything else is a configuration error naming the variable.
    let (code, stderr) = serve_on_a_taken_port(&[("GTFS_LOG_FORMAT", "jsno")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("GTFS_LOG_FORMAT"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `gtfs-fetch --config <empty file> refresh <args>` (the service's instances are the
/// ones asked), with `env`.
async fn refresh_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let mut all = vec!["--config", config.to_str().unwrap(), "refresh"];
    all.extend_from_slice(args);
    let mut cmd = crate::support::binary::command(&all);
    cmd.envs(env.iter().copied());
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn refresh_asks_the_running_service_and_says_what_happened() {
    use crate::support::otp_sim::{OtpSim, fixture_zip};
    use crate::support::{sim_config, spawn_loaded, zip_feeds};
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let config = sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain", "bart"]),
        &[("GTFS_OPS_TOKEN", "s3cret")],
    );
    let app = spawn_loaded(config).await;
    let url = app.url("");
    let refreshes = app.state.instances[0].status().refreshes;

    // A token is configured: without it the service refuses, and the command says so.
    let (code, stdout, stderr) = refresh_cli(&["--url", &url], &[]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("sim: failed: the service refused"),
        "{stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");

    // A new version of one feed; the other is unchanged.
    sim.set_zip("bart", fixture_zip("caltrain").to_vec());
    let (code, stdout, stderr) =
        refresh_cli(&["--url", &url], &[("GTFS_OPS_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("sim/bart: updated, version "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("sim/caltrain: unchanged, version "),
        "{stdout}"
    );
    let new_version = app
        .state
        .feeds
        .get("bart")
        .unwrap()
        .current()
        .unwrap()
        .version
        .clone();
    assert!(lines[0].contains(&new_version[..12]), "{stdout}");
    assert_eq!(
        app.state.instances[0].status().refreshes,
        refreshes + 1,
        "the service itself refreshed, once"
    );

    // A failing feed is a failure, in words, with exit code 1.
    sim.set_zip("bart", b"PK\x03\x04 this is not a zip".to_vec());
    let (code, stdout, _) = refresh_cli(&["--url", &url], &[("GTFS_OPS_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("sim/bart: failed: "), "{stdout}");

    // An instance the service does not have is a usage error.
    let (code, _, stderr) = refresh_cli(&["--url", &url, "--instance", "nope"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"nope\""), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn refresh_of_an_unknown_instance_exits_2_and_nothing_running_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[instances]]\nname = \"city\"\nurl = \"http://127.0.0.1:1\"\napi = \"otp2\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for args in [
        &["--config", config, "refresh", "--instance", "nope"][..],
        &[
            "--config",
            config,
            "refresh",
            "--local",
            "--instance",
            "nope",
        ][..],
    ] {
        let out = gtfs_fetch(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("\"nope\""), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    // No service where the configuration says it listens.
    let port = crate::support::binary::free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = gtfs_fetch(
        &["--config", config, "refresh"],
        &[("GTFS_LISTEN", &listen)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&listen) && stderr.contains("is it running?"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn refresh_local_runs_in_its_own_process_and_says_what_happened() {
    let db = crate::support::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let zip = format!("{}/bart.zip", crate::support::otp_sim::FIXTURE_DIR);
    std::fs::write(
        &config,
        format!(
            "[[instances]]\nname = \"files\"\nurl = \"http://127.0.0.1:1\"\napi = \"gtfs\"\n\
             [[instances.feeds]]\ngtfs_id = \"bart\"\nzip_url = \"file://{zip}\"\n"
        ),
    )
    .unwrap();
    let mut cmd = crate::support::binary::command(&[
        "--config",
        config.to_str().unwrap(),
        "refresh",
        "--local",
    ]);
    cmd.env("DATABASE_URL", &db);
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let size = std::fs::metadata(&zip).unwrap().len();
    let expected = format!(", {}", indicatif::DecimalBytes(size));
    assert!(
        stdout.starts_with("files/bart: updated, version ")
            && stdout.trim_end().ends_with(&expected),
        "{stdout}"
    );
}

#[test]
fn config_into_a_closed_pipe_is_no_panic() {
    use std::process::Stdio;
    let mut child = crate::support::binary::command(&["config"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gtfs-fetch");
    // Like `gtfs-fetch config | head -0`: the reader is gone before anything is read.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn migrate_says_where_the_database_is_and_why_it_cannot_be_reached() {
    let port = crate::support::binary::free_port();
    let url = format!("postgres://gtfs:secret-pw@127.0.0.1:{port}/waybills");
    let out = gtfs_fetch(
        &["migrate"],
        &[("DATABASE_URL", &url), ("WAYBILLS_DB_ACQUIRE_TIMEOUT", "1")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}
