//! Job exclusivity: while a process holds a job's lease, no other process (on
//! this database) drains that job's runs. On SQLite it is a lock file beside the
//! database; on PostgreSQL a session advisory lock on a connection of its own.
//! Both are let go by the system when the holder dies, even on kill -9: the
//! kernel drops the file lock, and PostgreSQL ends the session when its socket
//! closes.

use std::fs::File;
use std::path::PathBuf;

use sqlx::pool::PoolConnection;

use super::db::Db;

/// Held while a process sends a job's runs; dropping it lets go.
#[derive(Debug)]
pub struct Lease {
    _held: Held,
}

#[derive(Debug)]
#[allow(
    dead_code,
    reason = "each variant is held for what dropping it lets go"
)]
enum Held {
    /// An in-memory database: no other process to exclude.
    Nothing,
    File(File),
    Session(SessionLock),
}

/// A connection holding a session-level advisory lock. It is closed, never
/// returned to the pool, so the lock ends with it.
#[derive(Debug)]
struct SessionLock(Option<PoolConnection<Db>>);

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Closing the session releases its advisory locks; a pooled
            // connection would keep holding the lock for the next borrower.
            drop(conn.detach());
        }
    }
}

impl Lease {
    pub(super) fn nothing() -> Self {
        Self {
            _held: Held::Nothing,
        }
    }

    pub(super) fn file(file: File) -> Self {
        Self {
            _held: Held::File(file),
        }
    }

    pub(super) fn session(conn: PoolConnection<Db>) -> Self {
        Self {
            _held: Held::Session(SessionLock(Some(conn))),
        }
    }
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process (or task) holds it.
    #[error("job {0} is already being sent by another wxpush process or task")]
    Busy(String),
    /// The lock file could not be created.
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be asked for the lock.
    #[error(transparent)]
    Database(#[from] super::StorageError),
}
