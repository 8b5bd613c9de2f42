//! Lock files beside a SQLite database (`<db>.locks/`): a job's lease
//! (`JOB.lock`) and the database's setup lock, released by the kernel even on
//! kill -9.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::domain::JobName;
use crate::storage::LeaseError;

/// Takes the lock file of `job` beside the database at `db` without waiting.
pub(crate) fn try_lock_job(db: &Path, job: &JobName) -> Result<File, LeaseError> {
    let (file, path) = open_lock_file(db, &format!("{job}.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LeaseError::Busy(job.to_string())),
        Err(TryLockError::Error(source)) => Err(LeaseError::Io { path, source }),
    }
}

/// The lock file `name` in the folder of lock files beside the database at `db`
/// (`<db>.locks/`), created with that folder if missing (see
/// `owner::open_lock_file`: never through a link, and as root given to the
/// database folder's owner).
pub(crate) fn open_lock_file(db: &Path, name: &str) -> Result<(File, PathBuf), LeaseError> {
    let mut dir = db.as_os_str().to_owned();
    dir.push(".locks");
    let path = PathBuf::from(dir).join(name);
    let file = super::owner::open_lock_file(db, name).map_err(|source| LeaseError::Io {
        path: path.clone(),
        source,
    })?;
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
        let first = try_lock_job(&db, &job).unwrap();
        assert!(matches!(try_lock_job(&db, &job), Err(LeaseError::Busy(_))));
        let other = JobName::parse("weekly").unwrap();
        assert!(try_lock_job(&db, &other).is_ok());
        drop(first);
        assert!(try_lock_job(&db, &job).is_ok());
    }
}
