//! The SQLite database file: created under a setup lock, known by its inode so
//! that a file put in its place is noticed, and in-memory URLs told apart.

use std::path::Path;

use crate::storage::StorageError;

/// The device and inode of the file at `path`.
pub(crate) fn identity_of(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

pub(crate) fn io_error(action: &'static str, message: String) -> StorageError {
    StorageError {
        action,
        source: crate::storage::Failure::Said(message),
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:`, `mode=memory`):
/// no file, no lock file. (sqlx gives such a database a made-up file name.)
pub(crate) fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (db, params) = rest.split_once('?').unwrap_or((rest, ""));
    db == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Creates the database's folder and (empty: SQLite reads that as an empty
/// database) file if missing, under the setup lock, which it returns held.
pub(crate) async fn create_file(path: &Path) -> Result<std::fs::File, StorageError> {
    let io = |action, e: std::io::Error| StorageError {
        action,
        source: crate::storage::Failure::Said(format!("{}: {e}", path.display())),
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
    use super::lock_file::open_lock_file;
    use crate::storage::LeaseError;
    let fail = |e: LeaseError| StorageError {
        action: "take the database setup lock",
        source: crate::storage::Failure::Said(e.to_string()),
    };
    // A dot cannot start a job name, so this never meets a job's lock file.
    let (file, path) = open_lock_file(db, ".setup.lock").map_err(fail)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .expect("the lock task does not panic")
        .map_err(|source| fail(LeaseError::Io { path, source }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

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
