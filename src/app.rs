//! Start and stop: turns a [`Config`] into a running application.
//!
//! [`App::start`] starts the embedded database when no `DATABASE_URL` is set, creates the
//! (lazy) pool, builds the [`AppState`] and spawns the task that migrates and pre-warms
//! the pool, the refresh scheduler and the idempotency-key expiry (which waits for the
//! migrations). [`App::stop`] stops them again.

use anyhow::{Context, Result};

use crate::config::Config;
use crate::db::{self, Db, embedded::EmbeddedPostgres};
use crate::refresh;
use crate::state::AppState;

/// The longest [`App::stop`] waits for database connections in use to be returned.
pub const POOL_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A started application: its state, and the embedded database it owns, if any.
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    embedded: Option<EmbeddedPostgres>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Starts the database side (embedded server when `database_url` is unset), spawns
    /// the migrate-and-pre-warm task (`/readyz` turns 200 once it has succeeded) and, with
    /// `schedule`, the refresh scheduler.
    pub async fn start(config: Config, schedule: bool) -> Result<App> {
        let (options, embedded) = connect_options(&config).await?;
        let db = Db::new_lazy(&config, options);
        let state = AppState::new(config, db)?;
        let db_state = state.clone();
        let mut tasks = vec![tokio::spawn(async move {
            db_state.db.prepare_until_ready().await
        })];
        if schedule {
            tasks.extend(refresh::spawn_scheduler(&state));
            tasks.push(spawn_key_expiry(state.clone()));
            tasks.push(db::fetches::spawn_retention(
                state.db.clone(),
                state.config.feed_fetch_retention_days,
            ));
        }
        Ok(App {
            state,
            embedded,
            tasks,
        })
    }

    /// Stops what [`App::start`] started. Call after the HTTP server has drained.
    ///
    /// Closing the pool waits for checked-out connections, but at most [`POOL_CLOSE_WAIT`]:
    /// after a shutdown that abandoned requests (a second signal), one may still hold a
    /// connection; the embedded server's fast stop then disconnects it.
    pub async fn stop(self) -> Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        if tokio::time::timeout(POOL_CLOSE_WAIT, self.state.db.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still in use at exit: closing them anyway");
        }
        if let Some(pg) = &self.embedded {
            pg.stop().await?;
        }
        Ok(())
    }
}

/// Connection options for the configured database, starting the embedded server if needed.
pub async fn connect_options(
    config: &Config,
) -> Result<(sqlx::postgres::PgConnectOptions, Option<EmbeddedPostgres>)> {
    Ok(match &config.database_url {
        Some(url) => (db::options_from_url(url.expose())?, None),
        None => {
            let pg = EmbeddedPostgres::start(&config.data_dir)
                .await
                .context("cannot start the embedded PostgreSQL")?;
            (pg.connect_options(db::embedded::DATABASE), Some(pg))
        }
    })
}

/// Forgets idempotency keys after 48 hours (the contract keeps them at least 24), hourly,
/// from the moment the migrations have run: on a fresh database the table does not exist
/// before, and a first try then would only log a warning.
fn spawn_key_expiry(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        state.db.wait_prepared().await;
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            match db::waybills::expire_keys(&state.db.pool, 48).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired idempotency keys"),
                Err(e) => tracing::warn!("cannot expire idempotency keys: {e}"),
            }
        }
    })
}
