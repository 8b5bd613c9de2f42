//! Job exclusivity for the SQLite backend: one drainer per job across processes,
//! held as an advisory lock file beside the database (`<db>.locks/JOB.lock`),
//! released by the kernel even on kill -9. The database's setup lock lives in the
//! same folder.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::domain::JobName;

/// Held while a process sends a job's runs; dropping it lets go.
#[derive(Debug)]
pub struct Lease {
    _file: Option<File>,
}

/// The lock could not be taken or the lock file not opened.
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

impl Lease {
    /// Takes the lock of `job` for the database at `db` without waiting.
    /// An in-memory database has no other process to exclude.
    pub(crate) fn try_acquire(db: Option<&Path>, job: &JobName) -> Result<Self, LeaseError> {
        let Some(db) = db else {
            return Ok(Self { _file: None });
        };
        let (file, path) = open_lock_file(db, &format!("{job}.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(LeaseError::Busy(job.to_string())),
            Err(TryLockError::Error(source)) => Err(LeaseError::Io { path, source }),
        }
    }
}

/// The lock file `name` in the folder of lock files beside the database at `db`
/// (`<db>.locks/`), created with that folder if missing.
pub(crate) fn open_lock_file(db: &Path, name: &str) -> Result<(File, PathBuf), LeaseError> {
    let mut dir = db.as_os_str().to_owned();
    dir.push(".locks");
    let dir = PathBuf::from(dir);
    let path = dir.join(name);
    let io = |source| LeaseError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let job = JobName::parse("daily").unwrap();
        let first = Lease::try_acquire(Some(&db), &job).unwrap();
        assert!(matches!(
            Lease::try_acquire(Some(&db), &job),
            Err(LeaseError::Busy(_))
        ));
        let other = JobName::parse("weekly").unwrap();
        assert!(Lease::try_acquire(Some(&db), &other).is_ok());
        drop(first);
        assert!(Lease::try_acquire(Some(&db), &job).is_ok());
    }
}
