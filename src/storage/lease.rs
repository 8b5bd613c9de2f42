//! Job exclusivity on SQLite: while a process holds a job's lease (a lock file
//! beside the database, which the kernel lets go even on kill -9), no other
//! process drains that job's runs. On PostgreSQL instances share a job's runs,
//! each taking its own deliveries, and the lease is always granted.

use std::fs::File;
use std::path::PathBuf;

/// Held while a process sends a job's runs; dropping it lets go.
#[derive(Debug)]
pub struct Lease {
    /// The lock file, when there is one; kept for what dropping it lets go.
    _file: Option<File>,
}

impl Lease {
    pub(super) fn nothing() -> Self {
        Self { _file: None }
    }

    pub(super) fn file(file: File) -> Self {
        Self { _file: Some(file) }
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
}
