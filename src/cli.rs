//! The command line: `serve` (the default), `migrate`, `config`, `refresh`.
//!
//! Exit codes:
//! - 0: ok;
//! - 2: bad configuration or usage (an unknown flag or subcommand, an instance name that
//!   does not exist, an invalid `GTFS_LOG_FORMAT`): one line naming the key, variable or
//!   argument;
//! - 1: any other failure, among them a refresh with a failed feed, and a `serve` whose
//!   shutdown gave up on requests in flight (a second SIGINT/SIGTERM, or
//!   `shutdown_timeout`).
//!
//! An error is printed once: by `serve` as its last log line (its stderr is the log
//! stream, JSON off a terminal), by the other commands as one `gtfs-fetch: ...` line.
//!
//! `--version` shows the git commit and build date ([`crate::build`]); `--help` lists the
//! environment variables, generated from the configuration's own table of keys
//! ([`config::KEYS`]), so the list cannot drift from what is read.

mod refresh;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::{self, App};
use crate::config::{self, Config};
use crate::telemetry::{self, LogFormat};
use crate::{api, db, server};

#[derive(Debug, Parser)]
#[command(
    name = "gtfs-fetch",
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
    /// Refresh the feeds of every instance (or one) now, in the running service, wait for
    /// the outcome, print it, and exit (1 when a feed failed).
    Refresh(refresh::RefreshArgs),
}

/// A mistake in how the program was called: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2025-01-31)`.
static VERSION: LazyLock<String> = LazyLock::new(crate::build::version_line);

/// The text after `--help`'s options: where the configuration is, and every variable.
fn after_help() -> String {
    let mut vars: Vec<(&str, String)> = config::KEYS
        .iter()
        .map(|(key, var)| (*var, format!("sets `{key}`")))
        .collect();
    vars.push(("GTFS_CONFIG", "the configuration file, as --config".into()));
    vars.push((
        telemetry::LOG_FORMAT_VAR,
        "json | text (default: text on a terminal, json otherwise)".into(),
    ));
    vars.push(("RUST_LOG", "log filter (default: info)".into()));
    let width = vars.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let mut text = format!(
        "Configuration: built-in defaults, then {} (or --config FILE), then the environment.\n\
         {} documents every key; `gtfs-fetch config` prints the effective values.\n\n\
         Environment variables:\n",
        config::DEFAULT_FILE,
        config::DEFAULT_FILE
    );
    for (var, what) in vars {
        text.push_str(&format!("  {var:width$}  {what}\n"));
    }
    text.push_str(
        "\nExit codes: 0 ok, 2 bad configuration or usage, 1 other failure \
         (a failed feed; serve: requests in flight abandoned at shutdown).",
    );
    text
}

/// The clap command with what is only known at run time: version line and help text.
pub fn command() -> clap::Command {
    Cli::command()
        .version(VERSION.as_str())
        .after_help(after_help())
}

/// Runs the command line; what `main` calls.
pub fn run() -> ExitCode {
    // clap prints help, version and usage errors itself, and exits 0 or 2.
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gtfs-fetch: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config = command {
        // `gtfs-fetch config | head` closes the pipe early: that is no error (and
        // `println!` would panic on it).
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{:#}", config.to_redacted_json()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("gtfs-fetch: cannot write the configuration: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    let format = match LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("gtfs-fetch: {e}");
            return ExitCode::from(2);
        }
    };
    // `refresh` draws progress bars on stderr: its log lines go through them, so that a
    // line printed while a bar is drawn does not tear it.
    let bars = indicatif::MultiProgress::new();
    let log_guard = match &command {
        Command::Refresh(_) => telemetry::init_logging_to(format, refresh::BarWriter(bars.clone())),
        _ => telemetry::init_logging(format),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gtfs-fetch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_serve = matches!(command, Command::Serve);
    let result = runtime.block_on(async {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await.map(|()| ExitCode::SUCCESS),
            Command::Refresh(args) => refresh::run(config, args, bars)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Config => Ok(ExitCode::SUCCESS),
        }
    });
    // Connections of requests given up on may still be running: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<UsageError>().is_some();
            if is_serve && log_guard.is_some() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("gtfs-fetch: {e:#}");
            }
            if usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    drop(log_guard);
    code
}

/// The service, until a signal; exit 1 when its shutdown abandoned requests in flight.
async fn serve(config: Config) -> Result<ExitCode> {
    let listener = server::bind(config.listen)?;
    let app = App::start(config, true).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        version = crate::build::VERSION,
        git_sha = crate::build::GIT_SHA,
        "gtfs-fetch listening"
    );
    let router = api::router(app.state.clone());
    let (shutdown, abort) = server::shutdown_signals()?;
    let served = server::serve(listener, router, app.state.clone(), shutdown, abort).await;
    app.stop().await?;
    let drained = served?;
    if drained.abandoned > 0 {
        tracing::warn!(
            abandoned = drained.abandoned,
            "exiting with code 1: requests in flight were abandoned"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Config) -> Result<()> {
    let (options, embedded) = app::connect_options(&config).await?;
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.db_acquire_timeout)
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            // "pool timed out" says nothing about where or why: ask the server once.
            let why = db::why_unreachable(&options, config.db_acquire_timeout)
                .await
                .unwrap_or_else(|| e.to_string());
            anyhow::bail!(
                "cannot reach the database at {}: {why}",
                db::describe_target(&options)
            );
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn help_names_the_default_file_and_every_variable() {
        let help = command().render_help().to_string();
        assert!(help.contains("config/default.toml"), "{help}");
        for (_, var) in config::KEYS {
            assert!(help.contains(var), "{var} missing from --help");
        }
        for var in ["GTFS_CONFIG", "GTFS_LOG_FORMAT", "RUST_LOG"] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
