//! The command line: `serve` (the default), `migrate`, `config`.
//!
//! Exit codes: 0 ok, 2 bad configuration or usage, 1 any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::config::Config;
use crate::{api, db, refresh, server, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "gtfs-fetch",
    version,
    about = "Pulls GTFS data from OpenTripPlanner, serves routes, keeps waybills"
)]
pub struct Cli {
    /// Configuration file (default: config/default.toml when present).
    #[arg(long, global = true, env = "GTFS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the effective configuration as JSON, secrets redacted, and exit.
    Config,
    /// Refresh the feeds of every instance (or one) now, print a summary, and exit
    /// (non-zero when a feed failed).
    Refresh {
        /// Only this instance.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
}

/// Runs the command line; what `main` calls.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gtfs-fetch: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config = command {
        println!("{:#}", config.to_redacted_json());
        return ExitCode::SUCCESS;
    }
    let _log_guard = telemetry::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gtfs-fetch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Refresh { instance } => refresh(config, instance).await,
            Command::Config => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gtfs-fetch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    let listener = server::bind(config.listen)?;
    let app = App::start(config, true).await?;
    tracing::info!(listen = %listener.local_addr()?, "gtfs-fetch listening");
    let router = api::router(app.state.clone());
    let served = server::serve(
        listener,
        router,
        app.state.clone(),
        server::shutdown_signal(),
    )
    .await;
    app.stop().await?;
    served
}

/// One refresh per selected instance, downloads shown with progress bars on stderr.
async fn refresh(config: Config, only: Option<String>) -> Result<()> {
    if let Some(name) = &only
        && !config.instances.iter().any(|i| &i.name == name)
    {
        anyhow::bail!("no instance named {name:?} in the configuration");
    }
    if config.instances.is_empty() {
        anyhow::bail!("no [[instances]] in the configuration: nothing to refresh");
    }
    let app = App::start(config, false).await?;
    // Fetches are recorded in the database: have it ready first.
    if let Err(e) = app.state.db.prepare().await {
        tracing::warn!("the database is not ready, fetches will not be recorded: {e:#}");
    }
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>12} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let progress_bars =
        std::sync::Mutex::new(std::collections::HashMap::<String, indicatif::ProgressBar>::new());
    let progress = |gtfs_id: &str, done: u64, total: Option<u64>| {
        let mut map = progress_bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = map.entry(gtfs_id.to_owned()).or_insert_with(|| {
            let bar = bars.add(indicatif::ProgressBar::new(total.unwrap_or(0)));
            bar.set_style(style.clone());
            bar.set_prefix(gtfs_id.to_owned());
            bar
        });
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let mut failed = 0;
    for instance in app
        .state
        .instances
        .iter()
        .filter(|i| only.as_ref().is_none_or(|n| n == i.name()))
    {
        let summary = refresh::refresh_instance(&app.state, instance, Some(&progress)).await;
        for bar in progress_bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            bar.1.finish();
        }
        for feed in &summary.feeds {
            let id = feed.gtfs_id.as_deref().unwrap_or("(feed list)");
            let version = feed.version.as_deref().map_or(String::new(), |v| {
                format!(" version {}", &v[..v.len().min(12)])
            });
            let bytes = feed.bytes.map_or(String::new(), |b| format!(", {b} bytes"));
            let error = feed
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"));
            println!(
                "{}/{id}: {:?}{version}{bytes}{error}",
                summary.instance, feed.outcome
            );
        }
        if !summary.ok() {
            failed += 1;
        }
    }
    app.stop().await?;
    if failed > 0 {
        anyhow::bail!("{failed} instance(s) had failed feeds");
    }
    Ok(())
}

async fn migrate(config: Config) -> Result<()> {
    let (options, embedded) = app::connect_options(&config).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.db_acquire_timeout)
        .connect_with(options)
        .await
        .context("cannot connect to the database")?;
    db::MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply the migrations")?;
    pool.close().await;
    tracing::info!(
        migrations = db::MIGRATOR.iter().count(),
        "database migrated"
    );
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    Ok(())
}
