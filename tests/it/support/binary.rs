//! The built `gtfs-fetch` executable as an operator runs it: `serve` on a free port with
//! its stderr in a file, signals sent with kill(1), the exit awaited with a bound.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The executable: cargo's, or `IT_GTFS_FETCH_BIN` when set (a copy taken right after the
/// build, where several work trees share one target directory and so one
/// `target/debug/gtfs-fetch`).
pub fn bin() -> String {
    std::env::var("IT_GTFS_FETCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gtfs-fetch").into())
}

/// The command, run from the repository, without the caller's configuration variables.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (var, _) in std::env::vars() {
        if var.starts_with("GTFS_") || var.starts_with("WAYBILLS_DB_") {
            cmd.env_remove(var);
        }
    }
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    cmd
}

/// A loopback port nobody listens on (as far as anyone can know).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `gtfs-fetch --config <file> serve` running in the background.
pub struct Served {
    child: Child,
    pub port: u16,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `serve` with `toml` as its configuration file and `env` on top, listening on
    /// a free loopback port.
    pub fn start(toml: &str, env: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).unwrap();
        let stderr = dir.path().join("stderr");
        let port = free_port();
        let child = command(&["--config", config.to_str().unwrap(), "serve"])
            .env("GTFS_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start gtfs-fetch serve");
        Served {
            child,
            port,
            stderr,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` says 200 (panics after `within`, with the logs).
    pub async fn wait_ready(&mut self, within: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(res) = reqwest::get(self.url("/readyz")).await
                && res.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < within,
                "not ready after {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `SIGTERM` or `SIGINT` (`"TERM"`, `"INT"`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// The exit status, or `None` if it is still running after `within` (then killed).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON log lines of `stderr` at `level` (`"WARN"`, `"ERROR"`).
pub fn log_lines_at(stderr: &str, level: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["level"] == level)
        })
        .map(str::to_owned)
        .collect()
}
