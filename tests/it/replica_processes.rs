//! Replicas as an operator runs them: separate `gtfs-fetch serve` processes on loopback
//! ports, one PostgreSQL, one OTP simulator (issue 12, part 5). `replicas.rs` checks the
//! protocol in one test process; here the failures are the real ones:
//!
//! - the replica holding the refresh lease is killed with SIGKILL: another refreshes
//!   within one interval, and the survivors go on serving new versions together; the
//!   next holder, stopped with SIGTERM, releases the lease and the last replica takes it;
//! - PostgreSQL is stopped in the middle of a refresh and started again: the replicas
//!   serve throughout, a waybill taken before is still there, one asked for meanwhile
//!   gets a 503 (not a lost write), the new version the refresh brought is stored once
//!   the database is back (the refresh is retried) and reaches every replica.

use std::time::{Duration, Instant};

use gtfs_fetch::db::embedded::EmbeddedPostgres;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::binary::Served;
use crate::support::fixtures::{
    CALTRAIN_DAY as DAY, CALTRAIN_ROUTE as ROUTE, caltrain_waybill as waybill,
};
use crate::support::fresh_database;
use crate::support::http::{Answer, routes_path, trips_path};
use crate::support::otp_sim::{Fault, OtpSim, fixture_zip};

/// The zip feed's path on the simulator.
const ZIP: &str = "/gtfs/caltrain.zip";

/// A replica: a `serve` process.
struct Process {
    id: String,
    served: Served,
    http: reqwest::Client,
}

impl Process {
    /// `serve` with replica id `id`, one instance `sim` (the caltrain zip, refreshed every
    /// `interval` seconds) on `database`.
    fn start(sim: &OtpSim, database: &str, id: &str, interval: f64) -> Process {
        let toml = format!(
            "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"gtfs\"\n\
             refresh_interval = {interval}\n\
             [[instances.feeds]]\ngtfs_id = \"caltrain\"\nzip_url = \"{ZIP}\"\n",
            sim.url()
        );
        let served = Served::start(
            &toml,
            &[
                ("DATABASE_URL", database),
                ("GTFS_REPLICA_ID", id),
                ("GTFS_RATE_LIMIT_DELAY", "0"),
                ("GTFS_RETRY_ATTEMPTS", "0"),
                ("GTFS_REFRESH_MIN_SPACING", "0"),
                ("WAYBILLS_DB_MIN_CONNECTIONS", "1"),
                ("RUST_LOG", "info"),
            ],
        );
        Process {
            id: id.to_owned(),
            served,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        Answer::send(self.http.get(self.served.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        Answer::send(self.http.post(self.served.url(path)).json(body)).await
    }

    /// `refresh_lease` of the one instance, as this replica reports it.
    async fn lease(&self) -> Value {
        let instances = self.get("/instances").await.ok();
        instances["instances"][0]["refresh_lease"].clone()
    }

    /// The version caltrain is served at (`null` before the first load).
    async fn version(&self) -> Value {
        let feeds = self.get("/feeds").await.ok();
        feeds["feeds"][0]["version"].clone()
    }

    /// Waits until this replica serves `version`, at most `within`.
    async fn wait_version(&self, version: &Value, within: Duration) {
        let start = Instant::now();
        while &self.version().await != version {
            assert!(
                start.elapsed() < within,
                "{} does not serve {version} after {within:?}:\n{}",
                self.id,
                self.served.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `n` replicas `r1`, `r2`... on `database`, each ready and serving the same version.
async fn start(sim: &OtpSim, database: &str, n: usize, interval: f64) -> Vec<Process> {
    let mut replicas: Vec<Process> = (1..=n)
        .map(|i| Process::start(sim, database, &format!("r{i}"), interval))
        .collect();
    for r in &mut replicas {
        r.served.wait_ready(Duration::from_secs(60)).await;
    }
    let first = replicas[0].version().await;
    assert!(first.is_string(), "{first}");
    for r in &replicas {
        r.wait_version(&first, Duration::from_secs(30)).await;
    }
    replicas
}

/// The replica holding the lease, by index, once every replica names the same holder.
async fn holder(replicas: &[Process]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut leases = Vec::new();
        for r in replicas {
            leases.push(r.lease().await);
        }
        let holding: Vec<usize> = (0..replicas.len())
            .filter(|&i| leases[i]["role"] == "holder")
            .collect();
        if let [i] = holding[..]
            && leases
                .iter()
                .all(|l| l["holder"] == replicas[i].id.as_str())
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no single holder: {leases:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The same feed in new bytes (so a new version): `zip` with a comment in its end of
/// central directory record, which no reader takes for data.
fn recommented(zip: &[u8], comment: &str) -> Vec<u8> {
    let eocd = zip.len() - 22;
    assert_eq!(
        &zip[eocd..eocd + 4],
        b"PK\x05\x06",
        "a zip without a comment"
    );
    let mut out = zip.to_vec();
    out[eocd + 20..eocd + 22].copy_from_slice(&(comment.len() as u16).to_le_bytes());
    out.extend_from_slice(comment.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_killed_with_sigkill_another_process_refreshes_within_one_interval() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let database = fresh_database().await;
    let interval = Duration::from_secs(3);
    let mut replicas = start(&sim, &database, 3, interval.as_secs_f64()).await;

    // About one upstream fetch per interval in all, not one per replica.
    sim.reset_counts();
    tokio::time::sleep(interval * 3).await;
    let fetches = sim.requests_for(ZIP);
    eprintln!("{fetches} zip fetches by 3 processes in 3 intervals");
    assert!(
        (2..=4).contains(&fetches),
        "{fetches} fetches in 3 intervals"
    );

    let h = holder(&replicas).await;
    let killed = replicas.remove(h);
    killed.served.signal("KILL");
    sim.reset_counts();
    let handed_over = sim
        .first_request_for(ZIP, interval * 3)
        .await
        .expect("a survivor refreshed after the holder was killed");
    eprintln!("a survivor refreshed {handed_over:?} after the holder was SIGKILLed");
    // One interval, plus some slack for a busy machine.
    assert!(
        handed_over <= interval + Duration::from_millis(500),
        "{handed_over:?}"
    );
    let h2 = holder(&replicas).await;
    assert_ne!(replicas[h2].id, killed.id);

    // The survivors go on as one: a new version reaches both.
    let new_zip = recommented(&fixture_zip("caltrain"), "after the kill");
    let new_version = json!(sha256(&new_zip));
    sim.set_zip("caltrain", new_zip);
    for r in &replicas {
        r.wait_version(&new_version, interval * 2 + Duration::from_secs(5))
            .await;
    }

    // A holder stopped cleanly (SIGTERM) releases its lease: the last replica takes it.
    let h3 = holder(&replicas).await;
    let mut stopped = replicas.remove(h3);
    stopped.served.signal("TERM");
    let status = stopped.served.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        stopped.served.stderr().contains("refresh lease released"),
        "{}",
        stopped.served.stderr()
    );
    assert_eq!(holder(&replicas).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_during_a_refresh_loses_nothing_and_the_refresh_is_retried() {
    // A cluster of this test's own, since it is stopped midway.
    let dir = tempfile::Builder::new()
        .prefix("gtfs-pg-restart-")
        .tempdir()
        .unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    pg.create_database("replicas").await.unwrap();
    let database = pg.url("replicas");
    let sim = OtpSim::start(&["caltrain"]).await;
    let interval = Duration::from_secs(2);
    let replicas = start(&sim, &database, 2, interval.as_secs_f64()).await;
    let h = holder(&replicas).await;
    let (holder, follower) = (&replicas[h], &replicas[1 - h]);
    let old_version = holder.version().await;
    let routes = follower.get(&routes_path("caltrain")).await.ok();

    // A waybill, taken before.
    let trips = follower.get(&trips_path("caltrain", ROUTE, DAY)).await.ok();
    let trip = trips["trips"][0]["trip_id"].as_str().unwrap().to_owned();
    let before = follower
        .post("/waybills", &waybill(&trip, "bus-before"))
        .await
        .created();

    // A new version, sent slowly (about 2 s): the database goes away during its download.
    let zip = fixture_zip("caltrain");
    let new_zip = recommented(&zip, "during the restart");
    let new_version = json!(sha256(&new_zip));
    sim.set_zip("caltrain", new_zip);
    sim.set_fault(Fault::SlowBody {
        chunk: zip.len() / 20,
        every: Duration::from_millis(100),
    });
    sim.reset_counts();
    let asked = Answer::send(
        holder
            .http
            .post(holder.served.url("/instances/sim/refresh")),
    )
    .await;
    assert_eq!(asked.status, 202, "{}", asked.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.requests_for(ZIP) == 0 {
        assert!(Instant::now() < deadline, "the refresh did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.stop().await.unwrap();
    let stopped = Instant::now();

    // Without the database: the refresh ends, the new version is served (serving first,
    // storing second), but it cannot be stored. The other replica, which cannot reach
    // the lease either, refreshes alone and fares the same: once both have, nothing but
    // a retry can put the version in the store.
    for r in &replicas {
        r.wait_version(&new_version, Duration::from_secs(20)).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !r.served.stderr().contains("not stored in the database") {
            assert!(
                Instant::now() < deadline,
                "{}: no failed store logged:\n{}",
                r.id,
                r.served.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Both serve what they have (the same routes: only the bytes of the zip changed), and
    // a write is refused, not lost.
    let now = follower.get(&routes_path("caltrain")).await.ok();
    assert_eq!(now["routes"], routes["routes"]);
    assert!(now["routes"].as_array().is_some_and(|r| !r.is_empty()));
    follower
        .post("/waybills", &waybill(&trip, "bus-during"))
        .await
        .unavailable();
    eprintln!(
        "both replicas had failed to store it {:?} after PostgreSQL stopped",
        stopped.elapsed()
    );

    sim.clear_fault();
    sim.reset_counts();
    pg.start_server().await.unwrap();
    let restarted = Instant::now();

    // The refresh is retried: the version is stored, and every replica serves it.
    let check = sqlx::PgPool::connect(&database).await.unwrap();
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let current: Option<String> = sqlx::query_scalar(
            "SELECT v.version FROM feed_current c JOIN feed_version v ON v.id = c.version_id \
             WHERE c.instance = 'sim' AND c.gtfs_id = 'caltrain'",
        )
        .fetch_optional(&check)
        .await
        .unwrap_or(None);
        if current.as_deref() == new_version.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new version was not stored after the restart (current: {current:?}):\n{}",
            holder.served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "stored {:?} after PostgreSQL was back, {} zip fetches meanwhile",
        restarted.elapsed(),
        sim.requests_for(ZIP)
    );
    assert!(
        sim.requests_for(ZIP) >= 1,
        "stored without fetching it again"
    );
    for r in &replicas {
        r.wait_version(&new_version, Duration::from_secs(10)).await;
    }
    assert_ne!(new_version, old_version);

    // Nothing lost: the waybill from before is there, and new ones are taken.
    let id = before["id"].as_str().unwrap();
    let read = holder.get(&format!("/waybills/{id}")).await.ok();
    assert_eq!(read["vehicle_id"], "bus-before");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = follower
            .post("/waybills", &waybill(&trip, "bus-after"))
            .await;
        if after.status == 201 {
            after.created();
            break;
        }
        // A pooled connection from before the restart fails once, then is replaced.
        after.unavailable();
        assert!(
            Instant::now() < deadline,
            "no waybill taken after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill")
        .fetch_one(&check)
        .await
        .unwrap();
    assert_eq!(rows, 2, "bus-before and bus-after");
    check.close().await;
    drop(replicas);
    pg.stop().await.unwrap();
}
