//! The SQLite backend: everything that is SQLite's own lives here (connection
//! options and PRAGMAs, the migrations folder, `BEGIN IMMEDIATE`, `json_each`
//! row sets, the database file and the lock files beside it), so that the
//! statements in `storage` stay plain SQL and another backend only adds code.

mod file;
mod lease;
mod sets;
mod tx;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Context, StorageError};
use file::{create_file, identity_of, is_in_memory};

pub(super) use file::io_error;
pub use lease::{Lease, LeaseError};
pub(super) use sets::{
    CHUNK, bind_ids, bind_outcomes, bind_recipients, id_set, outcome_set, recipient_set,
};
pub(super) use tx::WriteTx;

/// The sqlx driver of this backend.
pub(super) type Db = sqlx::Sqlite;
/// A pool of connections to the database.
pub(super) type Pool = sqlx::SqlitePool;
/// One connection, inside a transaction.
pub(super) type Conn = sqlx::SqliteConnection;
/// A row read back.
pub(super) type Row = sqlx::sqlite::SqliteRow;
/// A statement with its bound values.
pub(super) type Query<'q> = sqlx::query::Query<'q, Db, sqlx::sqlite::SqliteArguments>;
/// A statement returning one column, with its bound values.
pub(super) type QueryScalar<'q, T> =
    sqlx::query::QueryScalar<'q, Db, T, sqlx::sqlite::SqliteArguments>;

/// The schema, one file per version.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
        lease::open_lock_file(&self.path, ".probe.lock")
            .map(drop)
            .map_err(|e| io_error("use the lock folder", e.to_string()))
    }
}

/// Opens (creating it and its folder if missing) and migrates the database at `url`.
pub(super) async fn open(url: &str) -> Result<(Pool, Option<DbFile>), StorageError> {
    // Only `open` creates the file (below): a connection opened later must not
    // quietly start an empty database where an operator removed the real one.
    let options = SqliteConnectOptions::from_str(url)
        .context("parse [database] url")?
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL makes NORMAL durable against process crashes; only power loss can
        // lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let path = (!is_in_memory(url)).then(|| options.get_filename().to_path_buf());
    // Held until the pool is open and the file migrated.
    let _setup = match &path {
        Some(path) => Some(create_file(path).await?),
        None => None,
    };
    // One connection keeps an in-memory database simple: nothing to share.
    let connections = if path.is_some() { 4 } else { 1 };
    let pool = SqlitePoolOptions::new()
        .max_connections(connections)
        // An in-process database has no server that could have dropped an idle
        // connection; the ping sqlx makes before each acquire by default is a
        // round trip to SQLite's thread on every batch of the send path.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .context("open the database")?;
    MIGRATOR.run(&pool).await.context("run migrations")?;
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

/// Whether the database holds every migration this build knows.
pub(super) async fn is_migrated(pool: &Pool) -> Result<bool, StorageError> {
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .context("read the database's migrations")?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    Ok(version.unwrap_or(0) >= latest)
}

/// Takes `job` for this process without waiting: an advisory lock file beside
/// the database, which the kernel releases even on kill -9.
pub(super) fn lease(
    file: Option<&DbFile>,
    job: &crate::domain::JobName,
) -> Result<Lease, LeaseError> {
    Lease::try_acquire(file.map(DbFile::path), job)
}
