//! The only place with SQL. `Store` is the front door; the statements in these
//! modules are plain SQL that SQLite and PostgreSQL both read (through sqlx's
//! `Any` driver). Where the two differ, a statement asks the store's
//! `Dialect` (chosen once, when the URL is opened, here); what is one
//! database's own (connecting, PRAGMAs, migrations, the file, job leases,
//! signals between instances) sits in its backend module, `sqlite` or
//! `postgres`, and nothing outside this module asks which one it is.

mod apps;
mod batch;
#[cfg(test)]
mod batch_tests;
mod consents;
mod db;
mod deliveries;
mod dialect;
mod history;
mod import;
mod instances;
mod lease;
mod policy;
#[cfg(test)]
mod policy_tests;
mod postgres;
mod push_events;
mod recipients;
mod retention;
mod run_changes;
mod runs;
mod schedules;
mod send_claims;
mod sends;
#[cfg(test)]
mod sends_tests;
mod sets;
mod settle;
#[cfg(test)]
mod shared_tests;
mod snapshot;
mod sqlite;
mod status;
mod templates;
mod test_sends;
#[cfg(test)]
mod test_stores;
mod tokens;
mod tx;

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use db::Backend;
use dialect::Dialect;
use sqlite::{DbFile, io_error};
use tx::WriteTx;

pub use batch::Held;
pub use consents::{ConsentRow, JobSet, SubscriberRow, TemplateRow};
pub use deliveries::{DeliveryRow, Holder, PendingDelivery, RunAudit};
pub use import::{ImportReport, RecipientImport};
pub use instances::{InstanceInfo, InstanceRow, Rescue, RescuedRun};
pub use lease::{Lease, LeaseError};
pub use policy::{HeldDelivery, PolicyDelivery, PolicyRun};
pub use postgres::RunChanges;
pub use recipients::{RecipientRow, StoredRecipient, SyncReport};
pub use retention::{OpenSlots, Pruned};
pub use runs::{Audience, Enqueued, NewRun, RunRow};
pub use send_claims::{Claim, DueSend};
pub use sends::{Accepted, Cancel, NewSend, SendFilter, SendRow, SendWakes, SentEvent};
pub use snapshot::{AudienceRow, Snapshot};
pub use status::{ConsentSummary, DeliveryFilter, RunFilter, SendShown};
pub use tokens::{StoredToken, TokenRefresh};

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("database: failed to {action}: {source}")]
pub struct StorageError {
    action: &'static str,
    #[source]
    source: Failure,
}

/// What went wrong: sqlx's error, or wxpush's own words (a file that is gone,
/// a lock folder), which sqlx would have prefixed with "error communicating
/// with database".
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("{0}")]
    Said(String),
}

impl From<std::sync::Arc<StorageError>> for StorageError {
    /// The same failure again, for a caller of its own (a shared error was
    /// handed to several waiters; sqlx's errors cannot be cloned).
    fn from(e: std::sync::Arc<StorageError>) -> Self {
        Self {
            action: e.action,
            source: Failure::Said(e.source.to_string()),
        }
    }
}

/// Attaches what was being done to a sqlx error.
trait Context<T> {
    fn context(self, action: &'static str) -> Result<T, StorageError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, action: &'static str) -> Result<T, StorageError> {
        self.map_err(|source| StorageError {
            action,
            source: source.into(),
        })
    }
}

impl<T> Context<T> for Result<T, sqlx::migrate::MigrateError> {
    fn context(self, action: &'static str) -> Result<T, StorageError> {
        self.map_err(|e| StorageError {
            action,
            source: sqlx::Error::Migrate(Box::new(e)).into(),
        })
    }
}

/// How a store opens its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Pooled connections; the backend's default when `None`.
    pub max_connections: Option<u32>,
    /// SQLite: how long a statement waits for another's write lock before it
    /// fails as `database is locked` (PostgreSQL waits on its row locks).
    pub busy_timeout: std::time::Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            busy_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// How the instances of a deployment share their work: decided once, by the
/// database they share, and handed to the scheduler and the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One process holds a job at a time (SQLite: one file on one machine).
    Alone,
    /// Several instances drain one run together, each taking its own
    /// deliveries (PostgreSQL).
    Shared,
}

/// The database: runs, deliveries, recipients and the cached token.
#[derive(Debug, Clone)]
pub struct Store {
    pool: db::Pool,
    /// How this database says what the two say differently.
    dialect: &'static dyn Dialect,
    /// The database file, when there is one.
    file: Option<DbFile>,
    /// The instance this store takes deliveries as (see `as_instance`).
    instance: Option<std::sync::Arc<str>>,
    /// What other instances signal (PostgreSQL), listened to from the first waiter on.
    signals: Option<std::sync::Arc<postgres::Signals>>,
    /// Rung when this process accepts a send that is due: its sender looks at once.
    sends_added: std::sync::Arc<tokio::sync::Notify>,
    /// This process's turn to write a send, where the database has one writer.
    sends_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// SQLite: the WAL's checkpoints, stopped by `close` or with the last clone.
    checkpoints: Option<std::sync::Arc<sqlite::Checkpoints>>,
}

impl Store {
    /// Opens (creating it and its folder if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, &OpenOptions::default()).await
    }

    /// Opens and migrates the database at `url` as `options` say.
    pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Self, StorageError> {
        let max_connections = options.max_connections;
        db::install_drivers();
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => {
                let (pool, file) = sqlite::open(url, options).await?;
                let checkpoints = file
                    .is_some()
                    .then(|| std::sync::Arc::new(sqlite::Checkpoints::start(pool.clone())));
                Ok(Self {
                    pool,
                    dialect: &sqlite::Sqlite,
                    file,
                    instance: None,
                    signals: None,
                    sends_added: Default::default(),
                    sends_turn: Default::default(),
                    checkpoints,
                })
            }
            Some(Backend::Postgres) => Ok(Self {
                pool: postgres::open(url, max_connections).await?,
                dialect: &postgres::Postgres,
                file: None,
                instance: None,
                signals: Some(std::sync::Arc::new(postgres::Signals::new(url))),
                sends_added: Default::default(),
                sends_turn: Default::default(),
                checkpoints: None,
            }),
            None => Err(io_error(
                "parse [database] url",
                "not a supported database; use sqlite://PATH or postgres://USER@HOST/DB".into(),
            )),
        }
    }

    /// Opens the database only if it exists, as `options` say, for commands
    /// that must not create one (a PostgreSQL database always exists once it
    /// can be connected to).
    pub async fn open_existing_with(
        url: &str,
        options: &OpenOptions,
    ) -> Result<Option<Self>, StorageError> {
        if Backend::of_url(url) == Some(Backend::Sqlite) && sqlite::is_missing(url)? {
            return Ok(None);
        }
        Self::open_with(url, options).await.map(Some)
    }

    /// Opens the database to read it, never creating or migrating anything (for
    /// `check`, which may run in CI against a newer schema than production's):
    /// `None` when there is no database yet, or when it is not migrated to this
    /// version of wxpush.
    pub async fn open_to_inspect(
        url: &str,
        options: &OpenOptions,
    ) -> Result<Option<Self>, StorageError> {
        let max_connections = options.max_connections;
        match Backend::of_url(url) {
            Some(Backend::Postgres) => {
                db::install_drivers();
                let store = Self {
                    pool: postgres::connect(url, max_connections).await?,
                    dialect: &postgres::Postgres,
                    file: None,
                    instance: None,
                    signals: Some(std::sync::Arc::new(postgres::Signals::new(url))),
                    sends_added: Default::default(),
                    sends_turn: Default::default(),
                    checkpoints: None,
                };
                let migrated = store.is_migrated().await.unwrap_or(false);
                Ok(migrated.then_some(store))
            }
            _ => Self::open_existing_with(url, options).await,
        }
    }

    /// How instances share work on this database.
    pub fn topology(&self) -> Topology {
        if self.dialect.shares_runs() {
            Topology::Shared
        } else {
            Topology::Alone
        }
    }

    /// Fails when the file this store opened is gone or another took its place.
    fn check_identity(&self) -> Result<(), StorageError> {
        self.file.as_ref().map_or(Ok(()), DbFile::check)
    }

    /// What is wrong with the database file itself, if anything: removed, or
    /// another file in its place. Said instead of the error a statement met
    /// (SQLite answers `disk I/O error`, or nothing at all, on a file that is
    /// gone), since restoring the file is the fix.
    pub fn diagnose(&self) -> Option<StorageError> {
        self.check_identity().err()
    }

    /// The database file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(DbFile::path)
    }

    /// Takes `job` for this process without waiting: on SQLite only the holder
    /// drains its runs, and it is busy while another process (or task) holds it.
    /// On PostgreSQL it is always granted: instances share the job's runs.
    pub async fn lease(&self, job: &crate::domain::JobName) -> Result<Lease, LeaseError> {
        if self.dialect.shares_runs() {
            // Every instance drains the job's runs together, each taking its own
            // deliveries; the `sending` mark is what keeps a send to one.
            return Ok(Lease::nothing());
        }
        sqlite::lease(self.file.as_ref(), job)
    }

    /// Succeeds when the database this store opened is still in place (not removed,
    /// not replaced), migrated, and writable, job locks included. (SQLite keeps
    /// answering through an open handle after the file is deleted, but nothing
    /// written then would survive a restart.)
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.check_identity()?;
        if !self.is_migrated().await? {
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
        WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("begin a write transaction")
    }

    /// Whether the database holds every migration this build knows.
    async fn is_migrated(&self) -> Result<bool, StorageError> {
        let migrator = self.dialect.migrator();
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .context("read the database's migrations")?;
        let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        Ok(version.unwrap_or(0) >= latest)
    }

    /// Writes a consistent copy of a SQLite database to `target` (a new file)
    /// while others use it; returns its size in bytes. PostgreSQL has its own
    /// tools (`pg_dump`), so it is refused there.
    pub async fn backup(&self, target: &Path) -> Result<u64, StorageError> {
        if self.file.is_none() {
            return Err(sqlite::io_error(
                "write the backup",
                "only a SQLite database file is backed up by wxpush; for PostgreSQL use pg_dump"
                    .into(),
            ));
        }
        sqlite::backup(&self.pool, target).await
    }

    /// Why `wxpush backup` cannot copy the database at `url`, told by the URL
    /// alone (before connecting): a PostgreSQL database is the operator's to
    /// dump, whether or not it can be reached now.
    pub fn backup_refused(url: &str) -> Option<&'static str> {
        (Backend::of_url(url) != Some(Backend::Sqlite)).then_some(
            "is PostgreSQL; back it up with pg_dump (wxpush backup copies a SQLite file)",
        )
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// Closes the pool (SQLite checkpoints its WAL) and stops listening to
    /// other instances.
    pub async fn close(&self) {
        if let Some(signals) = &self.signals {
            signals.close();
        }
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.stop().await;
        }
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
