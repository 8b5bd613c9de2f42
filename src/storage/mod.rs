//! The only place with SQL. `Store` is the front door; the statements in these
//! modules are plain SQL, and what is one database's own (connection, PRAGMAs,
//! migrations, transactions, row sets, job locks) sits behind them in a backend
//! module: `sqlite` today.

mod batch;
#[cfg(test)]
mod batch_tests;
mod consents;
mod deliveries;
mod import;
mod push_events;
mod recipients;
mod run_changes;
mod runs;
mod schedules;
mod sqlite;
mod templates;
mod tokens;

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use backend::{DbFile, WriteTx, io_error};
/// The backend every statement here runs on.
use sqlite as backend;

pub use crate::domain::{ConsentGate, Outcome, Status};
pub use crate::domain::{Counts, RunStatus, Trigger};
pub use backend::{Lease, LeaseError};
pub use consents::{ConsentRow, SubscriberRow, TemplateRow};
pub use deliveries::{DeliveryRow, PendingDelivery, RunAudit};
pub use import::{ImportReport, RecipientImport};
pub use recipients::{RecipientRow, StoredRecipient, SyncReport};
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
    pool: backend::Pool,
    /// The database file, when there is one.
    file: Option<DbFile>,
}

impl Store {
    /// Opens (creating it and its folder if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let (pool, file) = backend::open(url).await?;
        Ok(Self { pool, file })
    }

    /// Opens the database only if it exists, for commands that must not create one.
    pub async fn open_existing(url: &str) -> Result<Option<Self>, StorageError> {
        if backend::is_missing(url)? {
            return Ok(None);
        }
        Self::open(url).await.map(Some)
    }

    /// Fails when the file this store opened is gone or another took its place.
    fn check_identity(&self) -> Result<(), StorageError> {
        self.file.as_ref().map_or(Ok(()), DbFile::check)
    }

    /// The database file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(DbFile::path)
    }

    /// Takes `job` for this process without waiting: only the holder drains its
    /// runs. Busy while another process (or task) holds it.
    pub fn lease(&self, job: &crate::domain::JobName) -> Result<Lease, LeaseError> {
        backend::lease(self.file.as_ref(), job)
    }

    /// Succeeds when the database this store opened is still in place (not removed,
    /// not replaced), migrated, and writable, job locks included. (SQLite keeps
    /// answering through an open handle after the file is deleted, but nothing
    /// written then would survive a restart.)
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.check_identity()?;
        if !backend::is_migrated(&self.pool).await? {
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
        if let Some(file) = &self.file {
            file.probe_locks()?;
        }
        Ok(())
    }

    /// A write transaction on the database this store opened (never on a file put
    /// in its place), holding the write lock from its start.
    async fn write(&self) -> Result<WriteTx, StorageError> {
        self.check_identity()?;
        WriteTx::begin(&self.pool)
            .await
            .context("begin a write transaction")
    }

    /// Closes the pool (SQLite checkpoints its WAL).
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
