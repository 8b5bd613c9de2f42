//! Lock files beside a SQLite database (`<db>.locks/`): a job's lease
//! (`JOB.lock`) and the database's setup lock, released by the kernel even on
//! kill -9.

use std::fs::{File, OpenOptions, TryLockError};
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
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(file) => file,
        // Another user's lock file (made before files were given to the
        // folder's owner): a lock works on a descriptor opened to read.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.exists() => {
            File::open(&path).map_err(io)?
        }
        Err(e) => return Err(io(e)),
    };
    // A folder or file made just now by root: its owner's, as the database is.
    super::owner::fit(db);
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
