//! Files beside the database stay its folder owner's. An operator who runs a
//! command as root on a packaged host (the service runs as its own user)
//! would otherwise leave root's `-wal`, `-shm` and lock files behind, and the
//! service would fail every firing with "Permission denied" until someone
//! found them. Only root can give a file away, and only root needs to.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The files of the database at `db` that wxpush or SQLite create beside it.
fn companions(db: &Path) -> Vec<PathBuf> {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let locks = with(".locks");
    let mut out = vec![
        db.to_path_buf(),
        with("-wal"),
        with("-shm"),
        with("-journal"),
        locks.clone(),
    ];
    if let Ok(entries) = std::fs::read_dir(&locks) {
        out.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    out
}

/// When running as root, gives the database at `db` and the files beside it
/// to the owner of its folder, if that is another user. Best effort: a file
/// that cannot be given away is logged, and the service's own error names it.
pub(crate) fn fit(db: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    let Ok(folder) = std::fs::metadata(dir) else {
        return;
    };
    let (uid, gid) = (folder.uid(), folder.gid());
    if uid == 0 {
        return;
    }
    for path in companions(db) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != uid
            && let Err(e) = std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot give a database file to its folder's owner");
        }
    }
}
