//! `wxpush backup`: a consistent copy of the SQLite database while the daemon
//! runs. `VACUUM INTO` reads one snapshot (WAL readers never block the writer)
//! and writes a compact file; it goes to a temporary name beside the target and
//! is renamed only once complete and checked, so a crash or a full disk never
//! leaves a half-written backup under the name asked for.

use std::path::Path;

use sqlx::Connection as _;

use super::super::db::Pool;
use super::super::{Context, StorageError};
use super::file::io_error;

/// Copies the database behind `pool` to `target`, which must not exist.
/// Returns the backup's size in bytes.
pub(crate) async fn backup(pool: &Pool, target: &Path) -> Result<u64, StorageError> {
    if target.exists() {
        return Err(io_error(
            "write the backup",
            format!("{} already exists; choose a new name", target.display()),
        ));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target.file_name().ok_or_else(|| {
        io_error(
            "write the backup",
            format!("{} names no file", target.display()),
        )
    })?;
    let partial = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_file(&partial);
    let result = copy_and_check(pool, &partial).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, target).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        io_error("write the backup", format!("{}: {e}", target.display()))
    })?;
    Ok(std::fs::metadata(target).map(|m| m.len()).unwrap_or(0))
}

async fn copy_and_check(pool: &Pool, partial: &Path) -> Result<(), StorageError> {
    let path = partial.to_str().ok_or_else(|| {
        io_error(
            "write the backup",
            format!("{} is not a UTF-8 path", partial.display()),
        )
    })?;
    sqlx::query("VACUUM INTO $1")
        .bind(path)
        .execute(pool)
        .await
        .context("copy the database")?;
    // The copy is opened on its own and checked before it takes the name.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(partial)
        .read_only(true);
    let mut copy = sqlx::SqliteConnection::connect_with(&options)
        .await
        .context("open the backup")?;
    let verdict: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut copy)
        .await
        .context("check the backup")?;
    copy.close().await.context("check the backup")?;
    if verdict != "ok" {
        return Err(io_error(
            "check the backup",
            format!("the copy failed its integrity check: {verdict}"),
        ));
    }
    Ok(())
}
