//! A throwaway PostgreSQL cluster for tests: a copy of an `initdb` template
//! (made once per machine and server version) in a temporary folder,
//! `postgres` on a free loopback port with `fsync=off`, one per test process,
//! gone when the process ends. Each caller gets a fresh database on it.
//!
//! The server binaries are looked for on the PATH, then in the folder
//! `pg_config --bindir` names, then in `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package). `initdb` refuses to run as root, so as root the
//! cluster runs as the `postgres` user.
//!
//! Without the binaries, `cluster()` says why; tests then skip with that
//! reason, unless `WXPUSH_REQUIRE_POSTGRES=1` (set by CI) makes it a failure.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    user: Option<(u32, u32)>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first use; or why there is none.
pub fn cluster() -> Result<&'static Cluster, &'static str> {
    CLUSTER.get_or_init(start).as_ref().map_err(String::as_str)
}

/// The process's cluster, or `None` after printing why the caller skips.
/// Panics instead when `WXPUSH_REQUIRE_POSTGRES=1`.
pub fn cluster_or_skip(test: &str) -> Option<&'static Cluster> {
    match cluster() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("WXPUSH_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (WXPUSH_REQUIRE_POSTGRES=1) but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: PostgreSQL tests need the server binaries: {why}");
            None
        }
    }
}

impl Cluster {
    /// A new, empty database on the cluster, as a `postgres://` URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name` on the cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A data folder made by `initdb` once per machine and server version, which
    /// each new cluster copies: a copy takes a tenth of an initdb, and every
    /// test binary and private cluster starts with one.
    fn template(&self) -> Result<PathBuf, String> {
        let key: String = self
            .bin
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let template = std::env::temp_dir().join(format!("wxpush-pgtemplate-{uid}-{key}"));
        if template.join("PG_VERSION").is_file() {
            return Ok(template);
        }
        // Named as a cluster of this process, so that a killed initdb's
        // leftovers are removed with the other stale clusters.
        let partial = std::env::temp_dir().join(format!(
            "wxpush-pg-{}-template-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&partial);
        let out = self
            .command("initdb")
            .args(["-D"])
            .arg(&partial)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Several processes may make one at once: the first rename wins.
        if std::fs::rename(&partial, &template).is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        if template.join("PG_VERSION").is_file() {
            Ok(template)
        } else {
            Err(format!("no cluster template at {}", template.display()))
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        // The server user may not be able to read the working folder, nor the
        // caller's home (libpq looks there for ~/.postgresql/ client
        // certificates and fails on one it may not read).
        cmd.current_dir(std::env::temp_dir())
            .env("HOME", std::env::temp_dir());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// A cluster of one test's own, which it may stop and start (a database
/// restart or outage) without disturbing the other tests' shared cluster.
/// Stopped and removed when dropped.
#[derive(Debug)]
pub struct Private {
    cluster: Cluster,
    dir: PathBuf,
    data: PathBuf,
    pid: std::sync::Mutex<Option<u32>>,
}

/// Starts a cluster of the caller's own (see `Private`), or says why not.
pub fn private() -> Result<Private, String> {
    private_with(false)
}

/// A private cluster that accepts TLS connections only (`hostssl`), with a
/// self-signed certificate for `127.0.0.1` and `localhost`: `Private::ca`
/// names it, for `sslrootcert`.
pub fn private_tls() -> Result<Private, String> {
    private_with(true)
}

fn private_with(tls: bool) -> Result<Private, String> {
    let n = NEXT_PRIVATE.fetch_add(1, Ordering::Relaxed);
    let (mut cluster, dir, data) = init(&format!("wxpush-pg-{}-{n}", std::process::id()))?;
    if tls {
        serve_tls_only(&cluster, &dir, &data)?;
    }
    let mut last = String::new();
    for _ in 0..5 {
        cluster.port = free_port();
        match serve(&cluster, &dir, &data) {
            Ok(pid) => {
                return Ok(Private {
                    cluster,
                    dir,
                    data,
                    pid: std::sync::Mutex::new(Some(pid)),
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A private cluster, or `None` after printing why the caller skips; panics
/// instead when `WXPUSH_REQUIRE_POSTGRES=1`.
pub fn private_or_skip(test: &str) -> Option<Private> {
    match private() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("WXPUSH_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (WXPUSH_REQUIRE_POSTGRES=1) but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: PostgreSQL tests need the server binaries: {why}");
            None
        }
    }
}

static NEXT_PRIVATE: AtomicU32 = AtomicU32::new(0);

impl std::ops::Deref for Private {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Private {
    /// The authority that signed the server's certificate, when it was
    /// started by `private_tls`: what `sslrootcert` names.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Stops the server as `pg_ctl stop -m fast` does (SIGINT: every session is
    /// terminated, "terminating connection due to administrator command") and
    /// waits until it has exited and its port is closed.
    pub fn stop_fast(&self) {
        let Some(pid) = self.pid.lock().unwrap().take() else {
            return;
        };
        // SAFETY: kill with a valid signal number has no preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid as i32, 0) } == 0 && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the stopped server again, on the same port.
    pub fn start(&self) {
        let mut pid = self.pid.lock().unwrap();
        assert!(pid.is_none(), "the server is running");
        *pid = Some(serve(&self.cluster, &self.dir, &self.data).expect("postgres starts again"));
    }

    /// `pg_ctl restart -m fast`: stopped, then started at once.
    pub fn restart_fast(&self) {
        self.stop_fast();
        self.start();
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.lock().unwrap().take() {
            // SAFETY: as in `stop_fast`.
            unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes the cluster in `data` take TLS connections only: a certificate for
/// `127.0.0.1` and `localhost` signed by a certificate authority of its own
/// (both made with the `openssl` command), `ssl = on`, and a pg_hba.conf whose
/// only TCP line is `hostssl`.
fn serve_tls_only(cluster: &Cluster, dir: &Path, data: &Path) -> Result<(), String> {
    let file = |name: &str| dir.join(name);
    let (crt, key) = (file("server.crt"), file("server.key"));
    std::fs::write(
        file("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("run openssl (Debian's openssl package): {e}"))?;
        out.status.success().then_some(()).ok_or_else(|| {
            format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wxpush test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = cluster.user {
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
    }
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
    text.push_str(&format!(
        "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        crt.display(),
        key.display()
    ));
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .map_err(|e| e.to_string())
}

/// Writes the certificate of another authority to `path`: one the server's
/// certificate is not signed by.
pub fn other_ca(path: &Path) -> Result<(), String> {
    let key = path.with_extension("key");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=another test CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(path)
        .output()
        .map_err(|e| format!("run openssl: {e}"))?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// A child that exited and was not reaped yet (the thread that spawned it
/// parks forever) still answers signal 0.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn start() -> Result<Cluster, String> {
    let (mut cluster, dir, data) = init(&format!("wxpush-pg-{}", std::process::id()))?;
    // A free port can be taken by someone else before the server binds it: retry.
    let mut last = String::new();
    for _ in 0..5 {
        cluster.port = free_port();
        match serve(&cluster, &dir, &data) {
            Ok(_) => return Ok(cluster),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A new cluster's data folder in `<tmp>/<name>`, not started yet.
fn init(name: &str) -> Result<(Cluster, PathBuf, PathBuf), String> {
    let bin = find_bindir().ok_or_else(|| {
        "initdb and postgres were not found on the PATH, in `pg_config --bindir`, or in /usr/lib/postgresql/*/bin (install Debian's postgresql package)".to_string()
    })?;
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        Some(
            postgres_user()
                .ok_or("running as root and there is no postgres user to run the server as")?,
        )
    } else {
        None
    };
    remove_stale_clusters();
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let cluster = Cluster { port: 0, bin, user };
    let template = cluster.template()?;
    // `cp -a` keeps the owner (the postgres user, as root) and the 0700 mode
    // the server insists on.
    let out = Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(&data)
        .output()
        .map_err(|e| format!("run cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "copy {} to {}: {}",
            template.display(),
            data.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((cluster, dir, data))
}

/// Starts the server from a thread that lives as long as the process, so that
/// the parent-death signal (sent when the spawning thread ends) stops it only
/// when the test process ends. Returns its pid.
fn serve(cluster: &Cluster, dir: &Path, data: &Path) -> Result<u32, String> {
    let mut cmd = cluster.command("postgres");
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &cluster.port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(dir)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))
                .map_err(|e| e.to_string())?,
        ));
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // SIGQUIT: immediate shutdown, children included.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        let ok = child.is_ok();
        let _ = tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()));
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    let pid = rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = cluster
            .command("pg_isready")
            .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(pid);
        }
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid as i32, 0) } != 0 || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not start: {}", log.trim()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the folders of clusters whose test process has ended (their server
/// stopped with it; nothing else would remove them).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wxpush-pg-"))
            .and_then(|p| p.split('-').next()?.parse::<i32>().ok())
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

fn find_bindir() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has(&dir) {
                // Follow symlinks (Debian links some into /usr/local/bin) so that
                // pg_isready and createdb come from the same installation.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&dir) {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|d| has(d))
        .collect();
    found.sort();
    found.pop()
}

fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: getpwnam returns a pointer into static storage or null; it is read
    // at once, before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}
