//! Test support: a PostgreSQL for the whole test process, a fresh database per test, and
//! `spawn_app()`, the service on a loopback port 0 exactly as `serve` runs it.
//!
//! With `DATABASE_URL` set, tests create their databases on that server. Without it, the
//! first test to need one starts a throwaway embedded cluster (the service's own
//! `db::embedded`, in a temporary directory), stopped when the test process exits.

#![allow(dead_code)]

pub mod binary;
pub mod fixtures;
pub mod gtfs;
pub mod http;
pub mod otp_sim;
pub mod real_otp;
pub mod wire;

pub use fixtures::{fixture_csv, fixture_path, fixture_rows};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use gtfs_fetch::app::App;
use gtfs_fetch::config::Config;
use gtfs_fetch::db::embedded::EmbeddedPostgres;
use gtfs_fetch::state::AppState;
use gtfs_fetch::{api, server};
use sqlx::Connection;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

enum Cluster {
    /// `DATABASE_URL` of the environment: a server someone else runs.
    External(url::Url),
    /// Our own throwaway cluster.
    Embedded(EmbeddedPostgres, PathBuf),
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return Cluster::External(url.parse().expect("DATABASE_URL is a URL"));
            }
            let dir = tempfile::Builder::new()
                .prefix("gtfs-it-")
                .tempdir()
                .unwrap()
                .keep();
            let pg = EmbeddedPostgres::start(&dir)
                .await
                .expect("start the test PostgreSQL");
            Cluster::Embedded(pg, dir)
        })
        .await
}

/// Stops the shared cluster when the test process exits (statics are never dropped).
#[dtor::dtor(unsafe)]
fn stop_cluster() {
    if let Some(Cluster::Embedded(pg, dir)) = CLUSTER.get() {
        let _ = pg.stop_blocking();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Creates an empty database and returns its URL, with a password that must never show.
pub async fn fresh_database() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin_url = match cluster().await {
        Cluster::External(url) => url.clone(),
        Cluster::Embedded(pg, _) => pg.url("postgres").parse().unwrap(),
    };
    let mut admin = sqlx::PgConnection::connect(admin_url.as_str())
        .await
        .expect("connect as admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    admin.close().await.ok();
    let mut url = admin_url;
    url.set_path(&name);
    if url.password().is_none() {
        // The embedded cluster trusts its socket; the password is there to be redacted.
        url.set_password(Some(SECRET_PASSWORD)).unwrap();
    }
    url.to_string()
}

/// The password in test database URLs, when the server does not impose its own.
pub const SECRET_PASSWORD: &str = "hunter2-never-shown";

/// A configuration built the way the service builds it, from variables (no process env).
pub fn config_from(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse(None, |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect("test configuration is valid")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<server::Drained>>>,
    app: Option<App>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path`, read whole.
    pub async fn get(&self, path: &str) -> http::Answer {
        self.get_with(path, &[]).await
    }

    /// Sends the shutdown signal (what SIGTERM does in `serve`), without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the server to drain and the app to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal_shutdown();
        let served = self.server.take().unwrap().await.expect("server task");
        self.app.take().unwrap().stop().await?;
        served.map(|_| ())
    }

    /// Asks for a refresh of the (first) instance `sim` and waits for it to finish.
    pub async fn refresh_now(&self) {
        let before = self.state.instances[0].status().refreshes;
        let res = self
            .client
            .post(self.url("/instances/sim/refresh"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "{:?}", res.text().await);
        self.wait_refreshes(before + 1).await;
    }

    /// Waits until the (first) instance has finished `n` refreshes (at most a minute).
    pub async fn wait_refreshes(&self, n: u64) {
        for _ in 0..1200 {
            if self.state.instances[0].status().refreshes >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("refresh {n} did not finish");
    }

    /// Waits until `/readyz` answers `status`, or panics after `within`.
    pub async fn wait_ready_status(&self, status: u16, within: Duration) {
        let start = Instant::now();
        loop {
            let got = self.get("/readyz").await.status;
            if got == status {
                return;
            }
            assert!(
                start.elapsed() < within,
                "/readyz still {got}, not {status}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The service on 127.0.0.1:0 with a fresh database, ready.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[], Router::new()).await
}

/// The service with extra variables (on top of a fresh `DATABASE_URL` and port 0) and
/// extra routes merged outside the API's layers, ready.
pub async fn spawn_app_with(vars: &[(&str, &str)], extra: Router) -> TestApp {
    let url = fresh_database().await;
    let mut all = vec![
        ("DATABASE_URL", url.as_str()),
        ("GTFS_LISTEN", "127.0.0.1:0"),
    ];
    all.extend_from_slice(vars);
    let app = spawn_config(config_from(&all), extra).await;
    app.wait_ready_status(200, Duration::from_secs(30)).await;
    app
}

/// The service for `config` (listening where it says), not waiting for readiness.
pub async fn spawn_config(config: Config, extra: Router) -> TestApp {
    let listener = server::bind(config.listen).expect("bind");
    let addr = listener.local_addr().unwrap();
    let app = App::start(config, true).await.expect("start the app");
    let state = app.state.clone();
    let router = api::router(state.clone()).merge(extra);
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(server::serve(
        listener,
        router,
        state.clone(),
        async move {
            let _ = rx.await;
        },
        std::future::pending(),
    ));
    TestApp {
        addr,
        state,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        server: Some(server),
        app: Some(app),
    }
}

/// A configuration with one instance `sim` at `url` speaking `api`, plus `instance_extra`
/// TOML lines in its table, plus environment variables.
pub fn sim_config(url: &str, api: &str, instance_extra: &str, env: &[(&str, &str)]) -> Config {
    let file = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{url}\"\napi = \"{api}\"\n{instance_extra}\n"
    );
    // Tests refresh on demand back to back; the spacing of manual refreshes has a test of
    // its own, which sets it.
    let spacing = [("GTFS_REFRESH_MIN_SPACING", "0")];
    let env: Vec<(String, String)> = env
        .iter()
        .chain(
            spacing
                .iter()
                .filter(|(k, _)| !env.iter().any(|(e, _)| e == k)),
        )
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse(Some(("test.toml", &file)), |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .expect("valid test config")
}

/// `[[instances.feeds]]` tables for fixture zips served by the simulator.
pub fn zip_feeds(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[instances.feeds]]\ngtfs_id = \"{n}\"\nzip_url = \"/gtfs/{n}.zip\"\n"))
        .collect()
}

/// The service with `config` (plus a fresh database and port 0), once every instance has
/// finished its first refresh.
pub async fn spawn_loaded(config: Config) -> TestApp {
    let app = spawn_fresh(config).await;
    app.wait_ready_status(200, Duration::from_secs(120)).await;
    app
}

/// The service with `config` (plus a fresh database and port 0), not waiting for
/// readiness.
pub async fn spawn_fresh(mut config: Config) -> TestApp {
    let url = fresh_database().await;
    config.database_url = Config::parse(None, |k| (k == "DATABASE_URL").then(|| url.clone()))
        .expect("database URL")
        .database_url;
    config.listen = "127.0.0.1:0".parse().expect("address");
    spawn_config(config, Router::new()).await
}
