//! A real OpenTripPlanner, for the `real_otp` tests: the Java, jar and graph that
//! `scripts/real-otp.sh` prepared (it passes them in `GTFS_OTP_*` variables), started on
//! a loopback port of its own, killed, paused and started again as a test needs.
//!
//! The suite is `#[ignore]`d in a plain `cargo test`; `bash scripts/real-otp.sh` runs it
//! with `--ignored` on each OTP version. Run by hand without the variables, a test fails
//! and says how to run it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What `scripts/real-otp.sh prepare` set up.
#[derive(Debug, Clone)]
pub struct OtpSetup {
    /// `2.9.0`, `2.5.0`, `1.4.0`...
    pub version: String,
    /// The fixture feeds in the graph, in build order.
    pub feeds: Vec<String>,
    /// The serving command line, with `{port}` and `{secure_port}` to fill in.
    command: String,
}

impl OtpSetup {
    pub fn from_env() -> OtpSetup {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the real-OTP suite with `bash scripts/real-otp.sh`")
            })
        };
        OtpSetup {
            version: var("GTFS_OTP_VERSION"),
            feeds: var("GTFS_OTP_FEEDS")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            command: var("GTFS_OTP_CMD"),
        }
    }

    /// OTP 1 (REST index API, `api = "otp1"`) rather than OTP 2 (GraphQL).
    pub fn is_otp1(&self) -> bool {
        self.version.starts_with("1.")
    }

    /// The service's `api` for this server.
    pub fn api(&self) -> &'static str {
        if self.is_otp1() { "otp1" } else { "otp2" }
    }

    /// Whether the server invents a black or white text colour for a route with a colour
    /// and none of its own (OTP 1 and OTP 2 before 2.6 do; 2.9 gives none).
    pub fn derives_text_color(&self) -> bool {
        self.is_otp1() || self.before_2_6()
    }

    /// OTP 2 before 2.6 has no `Route.sortOrder`.
    pub fn before_2_6(&self) -> bool {
        let mut parts = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        major == 2 && minor < 6
    }
}

/// A free loopback port (bound, then released: the OTP process binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One OTP server process.
pub struct RealOtp {
    pub setup: OtpSetup,
    pub port: u16,
    secure_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl RealOtp {
    /// Starts OTP on a new loopback port and waits until it answers.
    pub async fn start() -> RealOtp {
        let setup = OtpSetup::from_env();
        let log = std::env::temp_dir().join(format!(
            "gtfs-it-otp-{}-{}.log",
            setup.version,
            uuid::Uuid::new_v4().simple()
        ));
        let mut otp = RealOtp {
            setup,
            port: free_port(),
            secure_port: free_port(),
            child: None,
            log,
        };
        otp.start_again().await;
        otp
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("OTP is running").id()
    }

    /// Starts the process (again, after [`RealOtp::kill`]) on the same port, and waits
    /// until it answers a query (at most two minutes).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "OTP is already running");
        let line = self
            .setup
            .command
            .replace("{port}", &self.port.to_string())
            .replace("{secure_port}", &self.secure_port.to_string());
        let mut words = line.split_whitespace();
        let program = words.next().expect("GTFS_OTP_CMD is a command line");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("OTP log file");
        let child = Command::new(program)
            .args(words)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start OTP ({line}): {e}"));
        self.child = Some(child);
        self.wait_serving(Duration::from_secs(120)).await;
    }

    /// A query that every version answers once the graph is loaded.
    pub async fn probe(&self, client: &reqwest::Client) -> Result<u16, reqwest::Error> {
        let res = if self.setup.is_otp1() {
            client
                .get(format!("{}/otp/routers/default/index/feeds", self.url()))
                .send()
                .await?
        } else {
            client
                .post(format!("{}/otp/gtfs/v1", self.url()))
                .json(&serde_json::json!({ "query": "{ feeds { feedId } }" }))
                .send()
                .await?
        };
        let status = res.status().as_u16();
        res.bytes().await?;
        Ok(status)
    }

    async fn wait_serving(&mut self, within: Duration) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Ok(200) = self.probe(&client).await {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("OTP exited ({status}) while starting: {}", self.log_tail());
            }
            assert!(
                start.elapsed() < within,
                "OTP not serving after {within:?}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The end of OTP's own log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the kernel still accepts connections, the server never answers.
    pub fn pause(&self) {
        signal("STOP", self.pid());
    }

    /// SIGCONT after [`RealOtp::pause`].
    pub fn resume(&self) {
        signal("CONT", self.pid());
    }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill -{name} {pid}");
}

impl Drop for RealOtp {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused JVM would not die of SIGTERM; SIGKILL works either way.
            signal("CONT", child.id());
        }
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
