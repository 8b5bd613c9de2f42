//! Files beside the database stay its folder owner's. An operator who runs a
//! command as root on a packaged host (the service runs as its own user)
//! would otherwise leave root's `-wal`, `-shm` and lock files behind, and the
//! service would fail every firing with "Permission denied" until someone
//! found them. Only root can give a file away, and only root needs to.
//!
//! The folder belongs to the service's user, who could put a symbolic link
//! where a lock folder or file is expected (`wxpush.db.locks -> /etc`) to
//! have root give away or create files elsewhere. So everything here works
//! relative to descriptors of the folders, never follows a link in the last
//! step (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and opens the lock folder only
//! if it is a real folder.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `name` (a single path component) under the folder `dir` with `flags`
/// (and `O_NOFOLLOW`, `O_CLOEXEC`), creating it with `mode` if `O_CREAT`.
fn open_at(dir: &OwnedFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is
    // checked before it is owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the folder at `path` (the configured database's folder).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as in `open_at`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The owner of the folder `dir` refers to.
fn owner_of(dir: &OwnedFd) -> io::Result<(u32, u32)> {
    // SAFETY: fstat fills the zeroed struct for a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_uid, st.st_gid))
}

/// Gives `name` under `dir` to `uid:gid`, a link itself rather than its target.
fn chown_at(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) {
    let Ok(c) = CString::new(name.as_bytes()) else {
        return;
    };
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let r = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    let e = io::Error::last_os_error();
    if r != 0 && e.kind() != io::ErrorKind::NotFound {
        tracing::warn!(name = %name.to_string_lossy(), error = %e, "cannot give a database file to its folder's owner");
    }
}

/// `name` with `suffix` appended.
fn with(name: &OsStr, suffix: &str) -> OsString {
    let mut n = name.to_owned();
    n.push(suffix);
    n
}

/// Root and the owner of the database's folder, when they differ: whom a
/// file root makes beside the database should belong to.
fn foreign_owner(dir: &OwnedFd) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    owner_of(dir).ok().filter(|(uid, _)| *uid != 0)
}

/// When running as root, gives the database at `db` and the files beside it
/// (`-wal`, `-shm`, `-journal`, the lock folder and its files) to the owner of
/// its folder, if that is another user. Best effort: what cannot be given
/// away is logged, and the service's own error names it.
pub(crate) fn fit(db: &Path) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(dir) = open_dir(dir) else {
        return;
    };
    let Some((uid, gid)) = foreign_owner(&dir) else {
        return;
    };
    for suffix in ["", "-wal", "-shm", "-journal", ".locks"] {
        chown_at(&dir, &with(name, suffix), uid, gid);
    }
    // Only a real folder: a link there is not followed.
    let Ok(locks) = open_at(
        &dir,
        &with(name, ".locks"),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    ) else {
        return;
    };
    // Listed through the descriptor, which names that folder whatever is put
    // at its path meanwhile.
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", locks.as_raw_fd()));
    for entry in listed.into_iter().flatten().flatten() {
        chown_at(&locks, &entry.file_name(), uid, gid);
    }
}

/// Opens (creating it, and the lock folder, if missing) the lock file `name`
/// in the folder `<db>.locks/` beside the database at `db`, never through a
/// link; as root, a folder or file made here is given to the database
/// folder's owner. Another user's existing lock file is opened to read: a
/// lock works on such a descriptor too.
pub(crate) fn open_lock_file(db: &Path, name: &str) -> io::Result<File> {
    let (Some(dir), Some(db_name)) = (db.parent(), db.file_name()) else {
        return Err(io::Error::other("the database path has no file name"));
    };
    let dir = open_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?;
    let locks_name = with(db_name, ".locks");
    let c = CString::new(locks_name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let locks = open_at(&dir, &locks_name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
            io::Error::other(format!(
                "{} is not a folder (a link or a file is there): remove it",
                locks_name.to_string_lossy()
            ))
        } else {
            e
        }
    })?;
    let file_name = OsStr::new(name);
    let fd = match open_at(&locks, file_name, libc::O_RDWR | libc::O_CREAT, 0o644) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_at(&locks, file_name, libc::O_RDONLY, 0)?
        }
        Err(e) => return Err(e),
    };
    if let Some((uid, gid)) = foreign_owner(&dir) {
        chown_at(&dir, &locks_name, uid, gid);
        chown_at(&locks, file_name, uid, gid);
    }
    Ok(File::from(fd))
}
