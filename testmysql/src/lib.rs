//! A throwaway MariaDB server for tests: `mariadb-install-db` into a temporary
//! folder, `mariadbd` on a free loopback port with durability off, one per test
//! process, gone when the process ends. Each caller gets a fresh database on it.
//!
//! The binaries are looked for on the PATH, then in /usr/sbin (Debian's
//! `mariadb-server` puts `mariadbd` there, outside a non-root PATH). mariadbd
//! refuses to run as root, and switching users itself (`--user`) would clear the
//! parent-death signal that stops it, so as root the server runs as the `mysql`
//! user from the start. Databases are created with the `mariadb` command-line
//! client, so this crate needs no MySQL driver.
//!
//! Without the binaries, `server()` says why; tests then skip with that reason,
//! unless `WXPUSH_REQUIRE_MARIADB=1` (set by CI) makes it a failure.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A running server.
#[derive(Debug)]
pub struct Server {
    port: u16,
    /// The command-line client (`mariadb`, or `mysql` on older installations).
    client: PathBuf,
    /// The user the server runs as, when the tests run as root.
    user: Option<(u32, u32)>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Both for `mariadb-install-db` (which passes them to its bootstrap server, so
/// that the files it creates fit) and for the server: a fast start and a small
/// footprint (about 55 MB resident); nothing here needs to survive a crash.
const TUNING: &[&str] = &[
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=16M",
    "--innodb-log-buffer-size=2M",
    "--key-buffer-size=1M",
    "--aria-pagecache-buffer-size=1M",
    "--performance-schema=0",
    // Native AIO buys nothing for this little I/O, and io_uring can be refused
    // in containers (seccomp profiles, locked-memory limits).
    "--innodb-use-native-aio=0",
    // No DNS lookup per connection; root@127.0.0.1 exists without it.
    "--skip-name-resolve",
    // The compiled-in default is latin1 (Debian's my.cnf, not read here, sets utf8mb4).
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    // The pools of a binary's concurrent tests share this one server; 151 (the
    // default) can run out.
    "--max-connections=300",
];

/// The process's server, started on first use; or why there is none.
pub fn server() -> Result<&'static Server, &'static str> {
    SERVER.get_or_init(start).as_ref().map_err(String::as_str)
}

/// The process's server, or `None` after printing why the caller skips.
/// Panics instead when `WXPUSH_REQUIRE_MARIADB=1`.
pub fn server_or_skip(test: &str) -> Option<&'static Server> {
    match server() {
        Ok(s) => Some(s),
        Err(why) if std::env::var("WXPUSH_REQUIRE_MARIADB").as_deref() == Ok("1") => {
            panic!("MariaDB is required (WXPUSH_REQUIRE_MARIADB=1) but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: MariaDB tests need the server binaries: {why}");
            None
        }
    }
}

impl Server {
    /// A new, empty database on the server, as a `mysql://` URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = self.sql(&format!("CREATE DATABASE `{name}`")) {
            panic!("create database {name}: {e}");
        }
        self.url(&name)
    }

    /// The URL of database `name` on the server.
    pub fn url(&self, name: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `statements` as root through the command-line client; its output
    /// without column names, tab-separated, trimmed.
    fn sql(&self, statements: &str) -> Result<String, String> {
        let out = Command::new(&self.client)
            .arg("--no-defaults")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "root",
            ])
            // Otherwise the client picks a charset from the locale (latin1 under C).
            .arg("--default-character-set=utf8mb4")
            .args(["--connect-timeout=5", "--batch", "--skip-column-names"])
            .args(["-e", statements])
            .output()
            .map_err(|e| format!("run {}: {e}", self.client.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn start() -> Result<Server, String> {
    let missing = |what: &str| {
        format!(
            "{what} was not found on the PATH or in /usr/sbin (install Debian's mariadb-server package)"
        )
    };
    let install_db = find(&["mariadb-install-db", "mysql_install_db"])
        .ok_or_else(|| missing("mariadb-install-db (or mysql_install_db)"))?;
    let mariadbd = find(&["mariadbd", "mysqld"]).ok_or_else(|| missing("mariadbd (or mysqld)"))?;
    let client =
        find(&["mariadb", "mysql"]).ok_or_else(|| missing("the mariadb (or mysql) client"))?;
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        Some(
            mysql_user()
                .ok_or("running as root and there is no mysql user to run the server as")?,
        )
    } else {
        None
    };
    remove_stale_servers();
    let dir = std::env::temp_dir().join(format!("wxpush-mysql-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = install(&install_db, user, &dir)?;
    let mut server = Server {
        port: 0,
        client,
        user,
    };
    // A free port can be taken by someone else before the server binds it: retry.
    let mut last = String::new();
    for _ in 0..5 {
        server.port = free_port();
        match serve(&server, &mariadbd, &dir, &data) {
            Ok(()) => return Ok(server),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A data folder in a new folder `dir`, owned by the server user; the path of
/// the data folder.
fn install(install_db: &Path, user: Option<(u32, u32)>, dir: &Path) -> Result<PathBuf, String> {
    for folder in [dir.to_path_buf(), dir.join("tmp")] {
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("create {}: {e}", folder.display()))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&folder, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", folder.display()))?;
        }
    }
    let data = dir.join("data");
    let out = server_command(install_db, user)
        .arg("--no-defaults")
        .arg(option("--datadir=", &data))
        // Not the shared /tmp: with six test processes starting at once, one
        // bootstrap failed there on deleting its internal temporary table file.
        .arg(option("--tmpdir=", &dir.join("tmp")))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(TUNING)
        .output()
        .map_err(|e| format!("run {}: {e}", install_db.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}\n{}",
            install_db.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(data)
}

/// Starts the server from a thread that lives as long as the server, so that
/// the parent-death signal (sent when the spawning thread ends) stops it only
/// when the test process ends.
fn serve(server: &Server, mariadbd: &Path, dir: &Path, data: &Path) -> Result<(), String> {
    let log = dir.join("server.log");
    let mut cmd = server_command(mariadbd, server.user);
    cmd.arg("--no-defaults")
        .arg(option("--datadir=", data))
        .arg(option("--tmpdir=", &dir.join("tmp")))
        .arg(option("--socket=", &dir.join("sock")))
        .arg(option("--pid-file=", &dir.join("pid")))
        .arg(format!("--port={}", server.port))
        .args(["--skip-networking=0", "--bind-address=127.0.0.1"])
        .args(TUNING)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&log).map_err(|e| e.to_string())?,
        ));
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // SIGKILL: the data is thrown away, so no clean shutdown is owed, and
            // mariadbd's SIGTERM shutdown could outlive the test run.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (exit_tx, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            // Waiting (not just parking) also reaps a server that stopped, so
            // the loop below learns of it at once instead of at its deadline.
            let _ = exit_tx.send(child.wait());
        }
        Err(e) => {
            let _ = tx.send(Err(e.to_string()));
        }
    });
    let pid = rx.recv().map_err(|e| e.to_string())??;
    let failed = |why: String| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("mariadbd did not start: {why}: {}", log.trim())
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = exited.try_recv() {
            return Err(failed(exit_reason(status)));
        }
        // The cheap check first; the client is only run once the port answers.
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            match server.sql("SELECT @@datadir") {
                Ok(reply) if same_path(Path::new(&reply), data) => return Ok(()),
                // Another process's server got the port first; ours will fail to bind.
                Ok(reply) => {
                    stop(pid, &exited);
                    return Err(failed(format!(
                        "port {} belongs to another server (data in {reply})",
                        server.port
                    )));
                }
                // Listening, but not yet taking logins.
                Err(_) => {}
            }
        }
        if Instant::now() > deadline {
            stop(pid, &exited);
            return Err(failed("not ready within 30 s".into()));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Kills a server that failed to start and waits until it is gone, so that a
/// retry does not find the data folder still locked.
fn stop(pid: u32, exited: &Receiver<std::io::Result<ExitStatus>>) {
    // SAFETY: the child has not been reaped (its thread sends once it is), so
    // the pid is still ours.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = exited.recv();
}

fn exit_reason(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => format!("it exited ({s})"),
        Err(e) => format!("waiting for it failed: {e}"),
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    // The server may report the folder through a resolved symlink (a /tmp link).
    a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
}

/// A command for the server user: as root, the `mysql` user.
fn server_command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    // The server user may not be able to read the working folder.
    cmd.current_dir(std::env::temp_dir());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// `--name=path`, for paths that need not be UTF-8.
fn option(name: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(name);
    arg.push(path);
    arg
}

/// Removes the folders of servers whose test process has ended (their server
/// stopped with it; nothing else would remove them).
fn remove_stale_servers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wxpush-mysql-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The first of `names` found on the PATH, then in the folders where
/// distributions put server binaries.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/libexec"].map(PathBuf::from))
        .collect();
    names
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()))
}

fn mysql_user() -> Option<(u32, u32)> {
    // SAFETY: getpwnam returns a pointer into static storage or null; it is read
    // at once, before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwnam(c"mysql".as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_databases_apart_and_a_query_through_the_client() {
        let started = Instant::now();
        let Some(server) = server_or_skip("two_databases_apart_and_a_query_through_the_client")
        else {
            return;
        };
        eprintln!(
            "MariaDB ready in {} ms on port {}",
            started.elapsed().as_millis(),
            server.port()
        );
        assert!(std::ptr::eq(server, server_or_skip("again").unwrap()));

        let (a, b) = (server.database(), server.database());
        let prefix = format!("mysql://root@127.0.0.1:{}/", server.port());
        let name_a = a.strip_prefix(&prefix).expect("a mysql:// URL");
        let name_b = b.strip_prefix(&prefix).expect("a mysql:// URL");
        assert_ne!(name_a, name_b);
        assert_eq!(server.url(name_a), a);

        server
            .sql(&format!(
                "CREATE TABLE `{name_a}`.t (n INT, s VARCHAR(10));
                 INSERT INTO `{name_a}`.t VALUES (1, '订阅'), (2, '消息'), (3, '🙂')"
            ))
            .unwrap();
        assert_eq!(
            server
                .sql(&format!(
                    "SELECT SUM(n), GROUP_CONCAT(s ORDER BY n SEPARATOR ''), \
                     SUM(CHAR_LENGTH(s)) FROM `{name_a}`.t"
                ))
                .unwrap(),
            "6\t订阅消息🙂\t5"
        );
        assert_eq!(
            server
                .sql(&format!(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{name_b}'"
                ))
                .unwrap(),
            "0",
            "a fresh database is empty"
        );
    }

    /// The race `start` retries on: a port that was free when picked and that
    /// another process's server bound first.
    #[test]
    fn a_port_another_server_holds_is_not_taken_for_ours() {
        let Some(server) = server_or_skip("a_port_another_server_holds_is_not_taken_for_ours")
        else {
            return;
        };
        let dir = std::env::temp_dir()
            .join(format!("wxpush-mysql-{}", std::process::id()))
            .join("second");
        let install_db = find(&["mariadb-install-db", "mysql_install_db"]).unwrap();
        let data = install(&install_db, server.user, &dir).unwrap();
        let mariadbd = find(&["mariadbd", "mysqld"]).unwrap();
        let err = serve(server, &mariadbd, &dir, &data).unwrap_err();
        assert!(
            err.contains("another server") || err.contains("exited"),
            "{err}"
        );
        assert_eq!(
            server.sql("SELECT 1").unwrap(),
            "1",
            "the first server is untouched"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
