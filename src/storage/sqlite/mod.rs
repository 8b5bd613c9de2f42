//! The SQLite backend: what is SQLite's own lives here (connection options and
//! PRAGMAs, the migrations folder, the database file and the lock files beside
//! it), so that the statements in `storage` stay plain SQL.

mod backup;
mod dialect;
mod file;
mod lock_file;
mod owner;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;

use super::db::Pool;
use super::{Context, Lease, LeaseError, StorageError};
use file::{create_file, identity_of, is_in_memory};

pub(super) use backup::backup;
pub(super) use dialect::Sqlite;
pub(super) use file::io_error;

/// The schema, one file per version.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database file a store opened: where it is and which file it was.
#[derive(Debug, Clone)]
pub(super) struct DbFile {
    path: PathBuf,
    /// The file's device and inode when it was opened: a file put in its place
    /// later (restored, recreated by another process) is another database.
    identity: (u64, u64),
}

impl DbFile {
    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Fails when the file is gone or another file took its place: writing then
    /// would go nowhere, or into a database nobody migrated.
    pub(super) fn check(&self) -> Result<(), StorageError> {
        match identity_of(&self.path) {
            Ok(now) if now == self.identity => Ok(()),
            Ok(_) => Err(io_error(
                "use the database file",
                format!(
                    "{} was replaced by another file while wxpush had it open; restart wxpush to use the new one",
                    self.path.display()
                ),
            )),
            Err(e) => Err(io_error(
                "find the database file",
                format!("{} was removed or cannot be read: {e}", self.path.display()),
            )),
        }
    }

    /// Fails when the lock folder beside the file cannot hold lock files.
    pub(super) fn probe_locks(&self) -> Result<(), StorageError> {
        lock_file::open_lock_file(&self.path, ".probe.lock")
            .map(drop)
            .map_err(|e| io_error("use the lock folder", e.to_string()))
    }
}

/// Opens (creating it and its folder if missing) and migrates the database at `url`.
pub(super) async fn open(
    url: &str,
    options: &crate::storage::OpenOptions,
) -> Result<(Pool, Option<DbFile>), StorageError> {
    let max_connections = options.max_connections;
    let busy_ms = options.busy_timeout.as_millis().clamp(1, i32::MAX as u128);
    // Only `open` creates the file (below): a connection opened later must not
    // quietly start an empty database where an operator removed the real one.
    let options = SqliteConnectOptions::from_str(url)
        .context("parse [database] url")?
        .create_if_missing(false);
    let path = (!is_in_memory(url)).then(|| options.get_filename().to_path_buf());
    // Held until the pool is open and the file migrated.
    let _setup = match &path {
        Some(path) => Some(create_file(path).await?),
        None => None,
    };
    // One connection keeps an in-memory database simple: nothing to share.
    let connections = if path.is_some() {
        max_connections.unwrap_or(4)
    } else {
        1
    };
    // A file's URL is rebuilt from the parsed options (dropping any `mode=rwc`);
    // an in-memory one has no file name a URL could carry.
    let any = if path.is_some() {
        AnyConnectOptions::from_url(&options.to_url_lossy())
    } else {
        AnyConnectOptions::from_str(url)
    }
    .context("parse [database] url")?;
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        // An in-process database has no server that could have dropped an idle
        // connection; the ping sqlx makes before each acquire by default is a
        // round trip to SQLite's thread on every batch of the send path.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL makes NORMAL durable against process crashes; only power
                // loss can lose the last commits. A commit checkpoints the WAL
                // only past 100,000 pages (400 MB), a backstop: the commit that
                // crossed SQLite's default 1,000 (or 10,000, with readers
                // keeping the WAL from restarting) waited out the copy and its
                // fsync, tens of milliseconds, with every writer queued behind
                // it. `Checkpoints` does it beside them, every second.
                let pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; \
                     PRAGMA wal_autocheckpoint = 100000"
                );
                sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(pragmas))
                    .await
                    .map(drop)
            })
        })
        .connect_with(any)
        .await
        .context("open the database")?;
    MIGRATOR.run(&pool).await.context("run migrations")?;
    if let Some(path) = &path {
        // The file, its -wal and -shm (made by the first connection) and the
        // lock files: the folder owner's, whoever runs this.
        owner::fit(path);
    }
    let file = match path {
        Some(path) => {
            let identity = identity_of(&path).map_err(|e| {
                io_error("find the database file", format!("{}: {e}", path.display()))
            })?;
            Some(DbFile { path, identity })
        }
        None => None,
    };
    Ok((pool, file))
}

/// Whether `url` names a database file that does not exist (an in-memory
/// database always exists).
pub(super) fn is_missing(url: &str) -> Result<bool, StorageError> {
    if is_in_memory(url) {
        return Ok(false);
    }
    let options = SqliteConnectOptions::from_str(url).context("parse [database] url")?;
    Ok(!options.get_filename().is_file())
}

/// Takes `job` for this process without waiting: an advisory lock file beside
/// the database, which the kernel releases even on kill -9.
pub(super) fn lease(
    file: Option<&DbFile>,
    job: &crate::domain::JobName,
) -> Result<Lease, LeaseError> {
    match file {
        Some(file) => lock_file::try_lock_job(&file.path, job).map(Lease::file),
        None => Ok(Lease::nothing()),
    }
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the WAL of a pool's database every second, on a connection of
/// its own (passively: writers go on meanwhile, and the pool keeps all its
/// connections), until stopped or dropped (with the last clone of its store).
#[derive(Debug)]
pub(in crate::storage) struct Checkpoints {
    stop: tokio_util::sync::CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpoints {
    /// Starts checkpointing `pool`'s database.
    pub(in crate::storage) fn start(pool: Pool) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(checkpoint_every_second(pool, stop.clone()));
        Self {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops, its connection closed once this returns: the pool's close is
    /// then the last one, which checkpoints the WAL into the file.
    pub(in crate::storage) async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("never poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn checkpoint_every_second(pool: Pool, stop: tokio_util::sync::CancellationToken) {
    let mut conn: Option<sqlx::AnyConnection> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if pool.is_closed() {
            break;
        }
        if conn.is_none() {
            conn = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&pool.connect_options())
                .await
                .inspect_err(
                    |e| tracing::debug!(error = %e, "cannot open the checkpointer's connection"),
                )
                .ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *c)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed; trying again");
            conn = None;
        }
    }
    if let Some(c) = conn {
        let _ = sqlx::Connection::close(c).await;
    }
}
