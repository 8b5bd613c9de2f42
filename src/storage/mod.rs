//! The only place with SQL. SQLite today; statements stay portable where it costs
//! nothing so that a PostgreSQL backend can sit beside this one.

mod batch;
mod consents;
mod deliveries;
mod file;
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
use file::{create_file, identity_of, io_error, is_in_memory, latest_migration};
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

/// Timestamps are stored as RFC 3339 UTC text, which sorts in time order.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now() -> String {
    ts(Utc::now())
}
