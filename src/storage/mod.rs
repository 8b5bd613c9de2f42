//! The only place with SQL. SQLite today; statements stay portable where it costs
//! nothing so that a PostgreSQL backend can sit beside this one.

mod batch;
mod consents;
mod deliveries;
mod lease;
mod push_events;
mod recipients;
mod run_changes;
mod runs;
mod schedules;
mod sql_batch;
mod templates;
mod tokens;
mod tx;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tx::WriteTx;

pub use crate::domain::{ConsentGate, Outcome, Status};
pub use crate::domain::{Counts, RunStatus, Trigger};
pub use consents::{ConsentRow, SubscriberRow, TemplateRow};
pub use deliveries::{DeliveryRow, PendingDelivery, RunAudit};
pub use lease::{Lease, LeaseError};
pub use recipients::{ImportReport, RecipientImport, RecipientRow, StoredRecipient, SyncReport};
pub use runs::{Audience, Enqueued, NewRun, RunRow};
pub use tokens::StoredToken;

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("database: failed to {action}: {source}")]
pub struct StorageError {
    action: &'static str,
    #[source]
    source: sqlx::Error,
}

/// Attaches what was being done to a sqlx error.
trait Context<T> {
    fn context(self, action: &'static str) -> Result<T, StorageError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, action: &'static str) -> Result<T, StorageError> {
        self.map_err(|source| StorageError { action, source })
    }
}

impl<T> Context<T> for Result<T, sqlx::migrate::MigrateError> {
    fn context(self, action: &'static str) -> Result<T, StorageError> {
        self.map_err(|e| StorageError {
            action,
            source: sqlx::Error::Migrate(Box::new(e)),
        })
    }
}

/// The database: runs, deliveries, recipients and the cached token.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: Option<PathBuf>,
    /// The file's device and inode when it was opened: a file put in its place
    /// later (restored, recreated by another process) is another database.
    identity: Option<(u64, u64)>,
}

/// The newest migration this build knows; a database below it is not ready.
fn latest_migration() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The device and inode of the file at `path`.
fn identity_of(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn io_error(action: &'static str, message: String) -> StorageError {
    StorageError {
        action,
        source: sqlx::Error::Io(std::io::Error::other(message)),
    }
}

impl Store {
    /// Opens (creating it and its folder if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("run migrations")?;
        let identity = match &path {
            Some(p) => Some(identity_of(p).map_err(|e| {
                io_error("find the database file", format!("{}: {e}", p.display()))
            })?),
            None => None,
        };
        Ok(Self {
            pool,
            path,
            identity,
        })
    }

    /// Opens the database only if its file exists, for commands that must not create one.
    pub async fn open_existing(url: &str) -> Result<Option<Self>, StorageError> {
        if is_in_memory(url) {
            return Self::open(url).await.map(Some);
        }
        let options = SqliteConnectOptions::from_str(url).context("parse [database] url")?;
        if !options.get_filename().is_file() {
            return Ok(None);
        }
        Self::open(url).await.map(Some)
    }

    /// Fails when the file this store opened is gone or another file took its place:
    /// writing then would go nowhere, or into a database nobody migrated.
    fn check_identity(&self) -> Result<(), StorageError> {
        let (Some(path), Some(opened)) = (&self.path, self.identity) else {
            return Ok(());
        };
        match identity_of(path) {
            Ok(now) if now == opened => Ok(()),
            Ok(_) => Err(io_error(
                "use the database file",
                format!(
                    "{} was replaced by another file while wxpush had it open; restart wxpush to use the new one",
                    path.display()
                ),
            )),
            Err(e) => Err(io_error(
                "find the database file",
                format!("{} was removed or cannot be read: {e}", path.display()),
            )),
        }
    }

    /// The database file, if it is one (lock files live beside it).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Takes `job` for this process without waiting: only the holder drains its
    /// runs. Busy while another process (or task) holds it.
    pub fn lease(&self, job: &crate::domain::JobName) -> Result<Lease, LeaseError> {
        Lease::try_acquire(self.path(), job)
    }

    /// Succeeds when the database this store opened is still in place (not removed,
    /// not replaced), migrated, and writable, lock folder included. (SQLite keeps
    /// answering through an open handle after the file is deleted, but nothing
    /// written then would survive a restart.)
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.check_identity()?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .context("read the database's migrations")?;
        if version.unwrap_or(0) < latest_migration() {
            return Err(io_error(
                "check the database's migrations",
                "the database is not migrated to this version of wxpush; restart wxpush".into(),
            ));
        }
        // Takes the write lock and lets go: fails on a read-only or locked-out file.
        self.write()
            .await?
            .rollback()
            .await
            .context("write to the database")?;
        if let Some(path) = &self.path {
            lease::open_lock_file(path, ".probe.lock")
                .map_err(|e| io_error("use the lock folder", e.to_string()))?;
        }
        Ok(())
    }

    /// A write transaction on the file this store opened (never on one put in its
    /// place), holding the write lock from its start.
    async fn write(&self) -> Result<WriteTx, StorageError> {
        self.check_identity()?;
        WriteTx::begin(&self.pool)
            .await
            .context("begin a write transaction")
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:`, `mode=memory`):
/// no file, no lock file. (sqlx gives such a database a made-up file name.)
fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (db, params) = rest.split_once('?').unwrap_or((rest, ""));
    db == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Creates the database's folder and (empty: SQLite reads that as an empty
/// database) file if missing, under the setup lock, which it returns held.
async fn create_file(path: &Path) -> Result<std::fs::File, StorageError> {
    let io = |action, e: std::io::Error| StorageError {
        action,
        source: sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| io("create the database folder", e))?;
    }
    let lock = setup_lock(path).await?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io("create the database file", e))?;
    Ok(lock)
}

/// Waits for the setup lock of the database at `db`, held while a process creates,
/// switches to WAL and migrates it. sqlx takes no lock when migrating SQLite, and the
/// switch to WAL can fail at once with SQLITE_BUSY, so a daemon and a cron `send`
/// opening a new file together could both fail. The kernel drops the lock on exit.
async fn setup_lock(db: &Path) -> Result<std::fs::File, StorageError> {
    use lease::{LeaseError, open_lock_file};
    let fail = |e: LeaseError| StorageError {
        action: "take the database setup lock",
        source: sqlx::Error::Io(std::io::Error::other(e.to_string())),
    };
    // A dot cannot start a job name, so this never meets a job's lock file.
    let (file, path) = open_lock_file(db, ".setup.lock").map_err(fail)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .expect("the lock task does not panic")
        .map_err(|source| fail(LeaseError::Io { path, source }))
}

/// Timestamps are stored as RFC 3339 UTC text, which sorts in time order.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now() -> String {
    ts(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_opened_at_once_on_a_new_file_all_migrate_it() {
        // The daemon starting while a cron `send` starts is the same race.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().expect("every concurrent open succeeds");
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_has_no_file_and_answers_pings() {
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
            assert!(is_in_memory(url), "{url}");
            let store = Store::open(url).await.unwrap();
            assert_eq!(store.path(), None, "{url}");
            store.ping().await.unwrap();
        }
        assert!(!is_in_memory("sqlite:///var/lib/wxpush/wxpush.db"));
        assert!(!is_in_memory("sqlite://memory.db?mode=rwc"));
        // Nothing was written where the tests run.
        let stray = std::fs::read_dir(".")
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("sqlx-in-memory"));
        assert!(
            !stray,
            "no stray file or lock folder for an in-memory database"
        );
    }

    #[tokio::test]
    async fn a_new_connection_does_not_recreate_a_removed_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        // Holding every connection forces the pool to open new ones.
        let mut held = Vec::new();
        let mut failed = 0;
        for _ in 0..4 {
            match store.pool.acquire().await {
                Ok(c) => held.push(c),
                Err(_) => failed += 1,
            }
        }
        assert!(failed > 0, "a new connection to a removed file fails");
        assert!(!path.exists(), "and leaves no empty database behind");
        assert!(store.ping().await.is_err());
    }
}
