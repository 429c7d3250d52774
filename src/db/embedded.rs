//! The embedded default database: a private PostgreSQL run from the machine's own server
//! binaries when no `DATABASE_URL` is configured.
//!
//! Layout under `data_dir`:
//!
//! ```text
//! data_dir/gtfs-fetch.lock   held (flock) for as long as one service uses the cluster
//! data_dir/pg/               PGDATA, created by initdb on first start
//! data_dir/pg-run/           the Unix socket; no TCP port is opened
//! ```
//!
//! The cluster listens on a Unix socket in a directory only its owner can enter, with
//! `trust` authentication: nobody else on the machine can reach it. PostgreSQL refuses to
//! run as root, so when the service is root the server runs as the `postgres` system user.
//! The lock keeps a second service off the same data directory; a server left running by a
//! service that was killed is stopped and started again by the next one.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The database the service uses inside the embedded cluster.
pub const DATABASE: &str = "gtfs_fetch";
const SUPERUSER: &str = "postgres";
/// Port number in the socket's file name (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;

/// A running private PostgreSQL. Stopped by [`EmbeddedPostgres::stop`], or on drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// uid and gid to run the server as, when this process is root.
    run_as: Option<(u32, u32)>,
    running: std::sync::atomic::AtomicBool,
    _lock: File,
}

impl EmbeddedPostgres {
    /// Locks `data_dir`, creates the cluster on first use, starts the server and makes sure
    /// the service's database exists.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        let data_dir = data_dir.to_owned();
        let this = tokio::task::spawn_blocking(move || Self::prepare(&data_dir)).await??;
        this.start_server().await?;
        this.create_database(DATABASE).await?;
        Ok(this)
    }

    fn prepare(data_dir: &Path) -> Result<Self> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data_dir {}", data_dir.display()))?;
        let lock_path = data_dir.join("gtfs-fetch.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow!(
                "{} is in use by another gtfs-fetch (its lock {} is held); \
                 give this one another data_dir or set DATABASE_URL",
                data_dir.display(),
                lock_path.display()
            )
        })?;

        let bin_dir = find_bin_dir()?;
        let run_as = if running_as_root()? {
            Some(lookup_user(SUPERUSER).context(
                "running as root, and PostgreSQL refuses to run as root: \
                 a `postgres` system user is needed to run the embedded database",
            )?)
        } else {
            None
        };
        let pgdata = data_dir.join("pg");
        let socket_dir = data_dir.join("pg-run");
        // The socket path must fit in sockaddr_un (107 bytes).
        let socket_len = socket_dir.as_os_str().len() + ".s.PGSQL.5432".len() + 1;
        if socket_len > 107 {
            bail!(
                "data_dir {} is too long for a Unix socket path ({socket_len} > 107 bytes): choose a shorter data_dir",
                data_dir.display()
            );
        }
        if run_as.is_some() {
            // The postgres user must be able to pass through data_dir (not list it).
            let mode = fs::metadata(&data_dir)?.permissions().mode();
            if mode & 0o001 == 0 {
                fs::set_permissions(&data_dir, fs::Permissions::from_mode(mode | 0o001))?;
            }
        }
        for dir in [&pgdata, &socket_dir] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).with_context(|| {
                    format!("cannot hand {} to the postgres user", dir.display())
                })?;
            }
        }
        let this = Self {
            pgdata,
            socket_dir,
            bin_dir,
            run_as,
            running: false.into(),
            _lock: lock,
        };
        if !this.pgdata.join("PG_VERSION").exists() {
            tracing::info!(pgdata = %this.pgdata.display(), "creating the embedded PostgreSQL cluster");
            this.run(
                "initdb",
                &[
                    "-D".as_ref(),
                    this.pgdata.as_os_str(),
                    "-U".as_ref(),
                    SUPERUSER.as_ref(),
                    "--auth=trust".as_ref(),
                    "--encoding=UTF8".as_ref(),
                    "--no-locale".as_ref(),
                    "--no-instructions".as_ref(),
                ],
            )?;
            let conf = this.pgdata.join("postgresql.conf");
            let mut text = fs::read_to_string(&conf)?;
            text.push_str("\n# Settings of gtfs-fetch's embedded cluster, rewritten at every start.\ninclude_if_exists = 'gtfs-fetch.conf'\n");
            fs::write(&conf, text)?;
        }
        // Settings that depend on where data_dir is now; written at every start.
        let socket = this.socket_dir.display().to_string().replace('\'', "''");
        fs::write(
            this.pgdata.join("gtfs-fetch.conf"),
            format!(
                "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{socket}'\n\
                 unix_socket_permissions = 0700\nmax_connections = 200\n"
            ),
        )?;
        if this.status_running() {
            // We hold the lock, so the server is an orphan of a service that was killed:
            // restart it so that it runs with the settings just written.
            tracing::warn!("stopping the embedded PostgreSQL left running by an earlier service");
            this.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    this.pgdata.as_os_str(),
                    "-m".as_ref(),
                    "fast".as_ref(),
                    "-w".as_ref(),
                    "stop".as_ref(),
                ],
            )?;
        }
        Ok(this)
    }

    /// Starts the server (again): used at start-up and by tests that stop it midway.
    pub async fn start_server(&self) -> Result<()> {
        let log = self.pgdata.join("server.log");
        let args: Vec<std::ffi::OsString> = vec![
            "-D".into(),
            self.pgdata.clone().into(),
            "-l".into(),
            log.clone().into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "start".into(),
        ];
        let this = self.command("pg_ctl", &args);
        let out = tokio::task::spawn_blocking(move || run_command(this, "pg_ctl start")).await?;
        out.with_context(|| {
            format!(
                "the embedded PostgreSQL did not start; see {}",
                log.display()
            )
        })?;
        self.running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(socket_dir = %self.socket_dir.display(), "embedded PostgreSQL running");
        Ok(())
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed data is kept).
    pub async fn stop(&self) -> Result<()> {
        let cmd = self.stop_command();
        tokio::task::spawn_blocking(move || run_command(cmd, "pg_ctl stop")).await??;
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    /// Stops the server without an async runtime (for `Drop` and process-exit hooks).
    pub fn stop_blocking(&self) -> Result<()> {
        if self
            .running
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            run_command(self.stop_command(), "pg_ctl stop")?;
        }
        Ok(())
    }

    /// Connection options for `database` in this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgres://` URL for `database`, for tools and for configuration.
    pub fn url(&self, database: &str) -> String {
        let mut url = url::Url::parse("postgres://localhost/").expect("static URL");
        url.set_username(SUPERUSER).expect("URL with a host");
        url.set_path(database);
        url.query_pairs_mut()
            .append_pair("host", &self.socket_dir.display().to_string())
            .append_pair("port", &PORT.to_string());
        url.to_string()
    }

    /// Creates `name` unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("cannot connect to the embedded PostgreSQL")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    fn status_running(&self) -> bool {
        self.command(
            "pg_ctl",
            &["-D".as_ref(), self.pgdata.as_os_str(), "status".as_ref()],
        )
        .output()
        .is_ok_and(|o| o.status.success())
    }

    fn stop_command(&self) -> Command {
        self.command(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.pgdata.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    fn run<S: AsRef<std::ffi::OsStr>>(&self, program: &str, args: &[S]) -> Result<()> {
        run_command(self.command(program, args), program)
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.args(args)
            .current_dir(self.pgdata.parent().unwrap_or(Path::new("/")))
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.gid(gid).uid(uid);
        }
        cmd
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_blocking() {
            tracing::error!("could not stop the embedded PostgreSQL: {e:#}");
        }
    }
}

fn run_command(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            stderr.trim(),
            stdout.trim()
        );
    }
    Ok(())
}

/// The message for a machine without PostgreSQL's server binaries.
pub const NO_BINARIES: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, \
     via pg_config --bindir, or in /usr/lib/postgresql/*/bin: install them \
     (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to an existing server";

/// Where `initdb`, `pg_ctl` and `postgres` live: PATH, then `pg_config --bindir`, then the
/// newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| complete(d))
    {
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| anyhow!(NO_BINARIES))
}

fn running_as_root() -> Result<bool> {
    // The owner of /proc/self is this process's effective user.
    Ok(fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid()
        == 0)
}

/// uid and gid of a system user, from /etc/passwd.
fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| anyhow!("no `{name}` user in /etc/passwd"))
}
