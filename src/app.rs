//! Start and stop: turns a [`Config`] into a running application.
//!
//! [`App::start`] starts the embedded database when no `DATABASE_URL` is set, creates the
//! (lazy) pool, builds the [`AppState`] and spawns the task that migrates and pre-warms
//! the pool, the refresh scheduler (each instance's warm start from the feed store, then
//! its refreshes, or its following of the replica that holds its refresh lease), the
//! listener for the other replicas' new versions, and the idempotency-key expiry,
//! `feed_fetch` retention and feed store retention (which wait for the migrations).
//! Every background task runs under one cancellation token: [`App::stop`] cancels it and
//! waits for the tasks to end (each stops at its next await point), releases the refresh
//! leases this replica holds, then closes the pool, so no task touches the database after
//! that.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::{self, Db, embedded::EmbeddedPostgres};
use crate::refresh;
use crate::state::AppState;

/// The longest [`App::stop`] waits for database connections in use to be returned.
pub const POOL_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The longest [`App::stop`] waits for the background tasks to end once cancelled.
const TASKS_STOP_WAIT: Duration = Duration::from_secs(5);

/// A started application: its state, and the embedded database it owns, if any.
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    embedded: Option<EmbeddedPostgres>,
    /// Cancelled by [`App::stop`]: every background task ends.
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl App {
    /// Starts the database side (embedded server when `database_url` is unset), spawns
    /// the migrate-and-pre-warm task (`/readyz` turns 200 once it has succeeded) and, with
    /// `schedule`, the refresh scheduler.
    pub async fn start(config: Config, schedule: bool) -> Result<App> {
        let (options, embedded) = connect_options(&config).await?;
        let db = Db::new_lazy(&config, options);
        let state = AppState::new(config, db)?;
        let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
        let db_state = state.clone();
        spawn_until_cancelled(&tasks, &cancel, async move {
            db_state.db.prepare_until_ready().await
        });
        if schedule {
            for instance in &state.instances {
                let task = refresh::schedule(state.clone(), instance.clone());
                spawn_until_cancelled(&tasks, &cancel, task);
            }
            spawn_until_cancelled(&tasks, &cancel, key_expiry(state.clone()));
            let retention = state.config.feed_fetch_retention_days;
            let task = db::fetches::retention(state.db.clone(), retention);
            spawn_until_cancelled(&tasks, &cancel, task);
            let task = db::feed_store::retention(
                state.db.clone(),
                state.config.feed_versions_kept,
                state.store_retention.clone(),
            );
            spawn_until_cancelled(&tasks, &cancel, task);
            let task = refresh::follow::listen(state.clone());
            spawn_until_cancelled(&tasks, &cancel, task);
        }
        tasks.close();
        Ok(App {
            state,
            embedded,
            cancel,
            tasks,
        })
    }

    /// Stops what [`App::start`] started. Call after the HTTP server has drained.
    ///
    /// Closing the pool waits for checked-out connections, but at most [`POOL_CLOSE_WAIT`]:
    /// after a shutdown that abandoned requests (a second signal), one may still hold a
    /// connection; the embedded server's fast stop then disconnects it.
    pub async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        if tokio::time::timeout(TASKS_STOP_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after cancellation");
        }
        // No refresh runs any more: another replica may take over at once.
        refresh::lease::release_all(&self.state).await;
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

/// Runs `task` on `tasks` until it ends or `cancel` is cancelled.
fn spawn_until_cancelled(
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let cancel = cancel.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = task => {}
        }
    });
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
async fn key_expiry(state: AppState) {
    state.db.wait_prepared().await;
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match db::waybills::expire_keys(&state.db.pool, 48).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired idempotency keys"),
            Err(e) => tracing::warn!("cannot expire idempotency keys: {e}"),
        }
    }
}
