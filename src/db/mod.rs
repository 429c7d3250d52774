//! PostgreSQL: the connection pool, migrations, and the embedded default database.
//!
//! The pool is created lazily so that the HTTP API comes up at once; [`Db::prepare`]
//! applies the migrations and opens `db_min_connections` connections (pre-warming), and
//! until it has succeeded `/readyz` answers 503. At start-up it is retried with backoff,
//! so a database that comes up after the service is picked up by itself.

pub mod embedded;
pub mod feed_store;
pub mod fetches;
pub mod replicas;
pub mod waybills;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::watch;

use crate::config::Config;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// sqlx's threshold for logging a statement as slow (its default).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// A pooled connection idle this long is checked (a ping) before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(5);

/// The database handle the API uses: the pool plus what start-up has achieved so far.
#[derive(Debug)]
pub struct Db {
    pub pool: PgPool,
    min_connections: u32,
    /// Becomes `true` once, when the migrations are applied and the pool pre-warmed.
    prepared: watch::Sender<bool>,
    last_error: Mutex<Option<String>>,
    /// Where the database is, for messages ([`describe_target`]); no password.
    target: String,
}

/// A snapshot of the database pool for `/memory-stats`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = DatabasePool)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    #[schema(value_type = u64)]
    pub idle: usize,
    pub max: u32,
    pub min: u32,
}

impl Db {
    /// A lazy pool with the `WAYBILLS_DB_*` settings; nothing is opened yet.
    pub fn new_lazy(config: &Config, options: PgConnectOptions) -> Self {
        let target = describe_target(&options);
        let pool = PgPoolOptions::new()
            .max_connections(config.db_max_connections)
            .min_connections(config.db_min_connections)
            .acquire_timeout(config.db_acquire_timeout)
            .idle_timeout(config.db_idle_timeout)
            .max_lifetime(config.db_max_lifetime)
            // sqlx pings every connection it hands out by default: one round trip per
            // request. Only a connection that sat idle may have been closed meanwhile (a
            // server restart, a firewall); a busy one goes straight to work, and if it
            // turns out dead the request gets a 503 and the connection is dropped.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Self {
            pool,
            min_connections: config.db_min_connections,
            prepared: watch::Sender::new(false),
            last_error: Mutex::new(None),
            target,
        }
    }

    /// Applies the migrations, then opens `db_min_connections` connections at once so the
    /// first requests find them ready.
    pub async fn prepare(&self) -> Result<()> {
        let result = async {
            // On a connection of its own whose slow statements are logged at INFO, not
            // WARN: creating tables may take over a second on a busy host, and that is no
            // warning an operator should act on (queries served later still warn).
            use sqlx::ConnectOptions;
            let options = (*self.pool.connect_options())
                .clone()
                .log_slow_statements(log::LevelFilter::Info, SLOW_STATEMENT);
            let migrating = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(self.pool.options().get_acquire_timeout())
                .connect_with(options)
                .await
                .context("cannot connect to apply the database migrations")?;
            let migrated = MIGRATOR
                .run(&migrating)
                .await
                .context("cannot apply the database migrations");
            migrating.close().await;
            migrated?;
            let held = futures::future::try_join_all(
                (0..self.min_connections.max(1)).map(|_| self.pool.acquire()),
            )
            .await
            .context("cannot open the pre-warmed database connections")?;
            drop(held);
            anyhow::Ok(())
        }
        .await;
        // The pool retries a refused connection until `db_acquire_timeout` and then says
        // only "pool timed out": find out where and why.
        let result = match result {
            Err(e) if is_connect_failure(&e) => {
                let timeout = self.pool.options().get_acquire_timeout();
                match why_unreachable(&self.pool.connect_options(), timeout).await {
                    Some(why) => Err(anyhow::anyhow!(
                        "cannot reach the database at {}: {why}",
                        self.target
                    )),
                    None => Err(e),
                }
            }
            other => other,
        };
        match &result {
            Ok(()) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.prepared.send_replace(true);
            }
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"))
            }
        }
        result
    }

    /// Runs [`Db::prepare`] until it succeeds, backing off from 0.5 s up to 30 s.
    pub async fn prepare_until_ready(&self) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.prepare().await {
                Ok(()) => {
                    tracing::info!(connections = self.pool.size(), "database ready");
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        retry_in_s = delay.as_secs_f64(),
                        "database not ready: {e:#}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Whether [`Db::prepare`] has succeeded: the schema is there.
    pub fn is_prepared(&self) -> bool {
        *self.prepared.borrow()
    }

    /// Waits until [`Db::prepare`] has succeeded (at once when it has).
    pub async fn wait_prepared(&self) {
        let mut prepared = self.prepared.subscribe();
        // `wait_for` fails only when the sender is gone, and `self` holds it.
        let _ = prepared.wait_for(|p| *p).await;
    }

    /// Whether the database answers now: `Err` carries the reason for `/readyz`.
    pub async fn check(&self) -> Result<(), String> {
        if !self.is_prepared() {
            let last = self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(last.unwrap_or_else(|| "connecting".into()));
        }
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("database at {}: {e}", self.target)),
            Err(_) => Err(format!("database at {}: no answer within 2 s", self.target)),
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            min: self.min_connections,
        }
    }
}

/// Where `options` point, for messages: `db.internal:5432 (database "gtfs", user
/// "gtfs")` or the Unix socket. Never the password.
pub fn describe_target(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(dir) => format!(
            "Unix socket {}",
            dir.join(format!(".s.PGSQL.{}", options.get_port()))
                .display()
        ),
        None if options.get_host().contains(':') => {
            format!("[{}]:{}", options.get_host(), options.get_port())
        }
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    match options.get_database() {
        Some(db) => format!(
            "{place} (database {db:?}, user {:?})",
            options.get_username()
        ),
        None => format!("{place} (user {:?})", options.get_username()),
    }
}

/// Whether `e` says a connection could not be opened (rather than, say, a failed
/// migration): the pool's timeout, a socket error or a TLS failure.
fn is_connect_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
        )
    })
}

/// Why the server at `options` cannot be reached, found by trying once, directly (name
/// lookup, then a connection, within `timeout` each); `None` when it answers now.
pub async fn why_unreachable(options: &PgConnectOptions, timeout: Duration) -> Option<String> {
    use sqlx::ConnectOptions;

    if options.get_socket().is_none() {
        let lookup = tokio::net::lookup_host((options.get_host(), options.get_port()));
        match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(format!("the host name does not resolve ({e})")),
            Err(_) => {
                return Some(format!(
                    "the host name did not resolve within {} s",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            None
        }
        Ok(Err(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(
            "connection refused (nothing listens on that port, or a firewall rejects it)".into(),
        ),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within {} s (packets dropped on the way, or not a PostgreSQL server)",
            timeout.as_secs_f64()
        )),
    }
}

/// Connection options from `DATABASE_URL`.
pub fn options_from_url(url: &str) -> Result<PgConnectOptions> {
    url.parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a valid PostgreSQL URL")
}
