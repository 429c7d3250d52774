//! The command line: `serve` (the default), `migrate`, `config`.
//!
//! Exit codes: 0 ok, 2 bad configuration or usage, 1 any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::config::Config;
use crate::{api, db, server, telemetry};

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
    telemetry::init_logging();
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
    let app = App::start(config).await?;
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
