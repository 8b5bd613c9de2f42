//! Test harness: a fake WeChat on 127.0.0.1, a temp folder with a config file and a
//! database, and ways to run the real binary or the library against them.

mod daemon;

pub use daemon::{Daemon, Logs};

use std::path::PathBuf;
use std::process::Output;

pub use fake_wechat::{FakeOptions, FakeTemplate, FakeWechat, Scripted};
use tempfile::TempDir;
use wxpush::storage::Store;

pub const APPID: &str = "wx0123456789abcdef";
pub const SECRET: &str = "test-secret";

/// The AppID `s`, as the store takes it.
pub fn appid(s: &str) -> wxpush::domain::AppId {
    wxpush::domain::AppId::parse(s).unwrap()
}

/// The job `s`, as the store takes it.
pub fn job_name(s: &str) -> wxpush::domain::JobName {
    wxpush::domain::JobName::parse(s).unwrap()
}

/// The openid `s`, as the store takes it.
pub fn oid(s: &str) -> wxpush::domain::OpenId {
    wxpush::domain::OpenId::parse(s).unwrap()
}

/// The template id `s`, as the store takes it.
pub fn tmpl(s: &str) -> wxpush::domain::TemplateId {
    wxpush::domain::TemplateId::parse(s).unwrap()
}

/// A config file's `[[jobs]]` and `[[recipients]]`: one job `daily`, given recipients.
/// A daily cron line whose slot was two minutes ago in `tz`: the latest slot is
/// recent, inside the default send window, and stays the same for the whole
/// test, whatever the time of day it runs (a fixed hour would turn under a
/// test that sends twice across it).
pub fn recent_cron(tz: chrono_tz::Tz) -> String {
    use chrono::Timelike;
    let at = (chrono::Utc::now() - chrono::Duration::minutes(2)).with_timezone(&tz);
    format!("0 {} {} * * *", at.minute(), at.hour())
}

/// `daily_job` firing at `recent_cron` (UTC).
pub fn recent_daily(extra_job_keys: &str) -> String {
    daily_job(extra_job_keys)
        .replace(
            "cron = \"0 0 9 * * *\"",
            &format!("cron = \"{}\"", recent_cron(chrono_tz::UTC)),
        )
        .replace("timezone = \"Asia/Shanghai\"", "timezone = \"UTC\"")
}

pub fn daily_job(extra_job_keys: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "daily"
cron = "0 0 9 * * *"
timezone = "Asia/Shanghai"
template_id = "tmpl-checkin"
page = "pages/index/index"
{extra_job_keys}
[jobs.data]
thing1 = "{{{{name}}}}, check in"
date2 = "{{{{today}}}}"
"#
    )
}

/// The account's template that `daily_job` sends: long-term, everyone subscribed.
pub fn checkin_template() -> FakeTemplate {
    FakeTemplate {
        id: "tmpl-checkin".into(),
        title: "签到提醒".into(),
        content: "活动:{{thing1.DATA}}\n日期:{{date2.DATA}}\n".into(),
        kind: 3,
        everyone_subscribed: true,
    }
}

/// `[[recipients]]` entries for `openids`, each named after itself, in job `daily`.
pub fn recipients(openids: &[&str]) -> String {
    openids
        .iter()
        .map(|o| {
            format!(
                "\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"daily\"]\nname = \"n{}\"\n",
                &o[o.len().saturating_sub(4)..]
            )
        })
        .collect()
}

/// `count` openids like `oUser0000000000000000000001`.
pub fn openids(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("oUser{i:023}")).collect()
}

/// `count` generated openids and a config body sending job `daily` to them.
pub fn daily_audience(count: usize) -> (Vec<String>, String) {
    let ids = openids(count);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = format!("{}{}", daily_job(""), recipients(&refs));
    (ids, body)
}

/// Sends `signal` (`-TERM`, `-HUP`, ...) to a running child.
pub async fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let ok = tokio::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(ok.success());
}

/// Fails the test at once, rather than at its deadline, when `child` has exited.
pub fn still_running(child: &mut tokio::process::Child) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("wxpush exited early ({status}); rerun with TEST_LOG=info to see its log");
    }
}

/// SIGTERM, then the exit status within 10 s.
pub async fn stop(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    signal(child, "-TERM").await;
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("stopped within 10 s")
        .unwrap()
}

/// A temp folder holding `wxpush.toml` and the database, and a fake WeChat.
pub struct TestEnv {
    pub dir: TempDir,
    pub fake: FakeWechat,
    pub config: PathBuf,
    /// The daemon's HTTP listener, on a port free when the env was made.
    pub http: std::net::SocketAddr,
    /// The database: a SQLite file in `dir`, or with `WXPUSH_TEST_DATABASE=postgres`
    /// a fresh database on the test process's PostgreSQL cluster.
    pub db_url: String,
}

/// Whether this run puts the behaviour tests on PostgreSQL
/// (`WXPUSH_TEST_DATABASE=postgres`) instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("WXPUSH_TEST_DATABASE").as_deref() == Ok("postgres")
}

/// A database URL for a new env in `dir`: see `TestEnv::db_url`.
pub fn new_db_url(dir: &std::path::Path) -> String {
    if on_postgres() {
        match testpg::cluster() {
            Ok(cluster) => cluster.database(),
            Err(why) => panic!("WXPUSH_TEST_DATABASE=postgres, but {why}"),
        }
    } else {
        format!("sqlite://{}", dir.join("wxpush.db").display())
    }
}

/// A loopback address whose port was free a moment ago, below the kernel's
/// ephemeral range (32768 and up on Linux). A port that bind(0) handed out could be
/// taken, before the daemon binds it, by one of the many client connections the
/// tests make; a port below that range is only ever handed out here.
pub fn free_addr() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    for _ in 0..2_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port between 20000 and 32000");
}

impl TestEnv {
    /// Starts a fake with `opts` and writes a config with `body` after the standard sections.
    /// The fake lists `checkin_template` unless `opts` names templates of its own.
    pub async fn new(mut opts: FakeOptions, delivery: &str, body: &str) -> Self {
        if opts.templates.is_empty() {
            opts.templates.push(checkin_template());
            // The other templates the tests' jobs name.
            for (id, content) in [
                ("tmpl-tick", "{{thing1.DATA}}{{time2.DATA}}"),
                ("tmpl", "{{thing1.DATA}}"),
            ] {
                opts.templates.push(FakeTemplate {
                    id: id.into(),
                    content: content.into(),
                    ..checkin_template()
                });
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWechat::start(opts).await;
        let config = dir.path().join("wxpush.toml");
        let db_url = new_db_url(dir.path());
        let env = Self {
            dir,
            fake,
            config,
            http: free_addr(),
            db_url,
        };
        env.write_config(delivery, body);
        env
    }

    /// The common case: default fake, fast retries.
    pub async fn with(body: &str) -> Self {
        Self::new(FakeOptions::default(), "", body).await
    }

    /// Rewrites the config file (the operator editing it). `delivery` holds
    /// `key = value` lines that replace the test defaults of `[delivery]`.
    pub fn write_config(&self, delivery: &str, body: &str) {
        let mut section: Vec<(String, String)> = [
            ("concurrency", "8"),
            ("max_attempts", "4"),
            ("backoff_base", "\"10ms\""),
            ("backoff_max", "\"40ms\""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for line in delivery.lines().filter(|l| l.contains('=')) {
            let (k, v) = line.split_once('=').unwrap();
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            match section.iter_mut().find(|(key, _)| *key == k) {
                Some(entry) => entry.1 = v,
                None => section.push((k, v)),
            }
        }
        let delivery: String = section
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let text = format!(
            "[wechat]\nappid = \"{APPID}\"\ntimeout = \"1s\"\n\n[database]\nurl = \"{db}\"\n\n[http]\nlisten = \"{http}\"\n\n[delivery]\n{delivery}\n{body}",
            db = self.db_url,
            http = self.http
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// The SQLite database file (tests of the file itself skip on PostgreSQL).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("wxpush.db")
    }

    /// The binary with this env's config, the fake as api_base and the secret in
    /// the environment (as operators are told to pass it).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxpush"));
        c.args(args)
            .env("WXPUSH_CONFIG", &self.config)
            .env("WXPUSH__WECHAT__API_BASE", self.fake.base_url())
            .env("WXPUSH__WECHAT__SECRET", SECRET)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("JOURNAL_STREAM")
            .kill_on_drop(true);
        if std::env::var_os("TEST_LOG").is_none() {
            c.stderr(std::process::Stdio::null());
        }
        c
    }

    /// Runs a command in this process, as `wxpush ARGS` with `command`'s
    /// config, fake and secret: the binary's own path after parsing, printing
    /// into buffers. Its logs are not in `stderr` (see `binary`).
    pub async fn wxpush(&self, args: &[&str]) -> Run {
        use clap::Parser;
        use wxpush::commands::{Console, Host};
        log_for_test_log();
        let cli = match wxpush::cli::Cli::try_parse_from(
            std::iter::once("wxpush").chain(args.iter().copied()),
        ) {
            Ok(cli) => cli,
            // What clap prints and exits with, as the binary's `Cli::parse`.
            Err(e) => {
                let text = e.render().to_string();
                let (stdout, stderr) = if e.use_stderr() {
                    (String::new(), text)
                } else {
                    (text, String::new())
                };
                return Run::shown(e.exit_code(), stdout, stderr);
            }
        };
        let cli = wxpush::cli::Cli {
            config: cli.config.or_else(|| Some(self.config.clone())),
            ..cli
        };
        let env = wxpush::config::Env::Given(
            [
                ("WXPUSH__WECHAT__API_BASE", self.fake.base_url()),
                ("WXPUSH__WECHAT__SECRET", SECRET.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        let (out, err) = (Captured::default(), Captured::default());
        let console = Console::new(Box::new(out.clone()), Box::new(err.clone()));
        let host = Host::guest(console, env, tokio_util::sync::CancellationToken::new());
        let exit = wxpush::commands::run(cli, host).await;
        Run::shown(exit as i32, out.text(), err.text())
    }

    /// Runs the binary to completion: for what needs a process of its own
    /// (its log lines on stderr, the environment, signals, its exit).
    pub async fn binary(&self, args: &[&str]) -> Run {
        finish(&mut self.command(args)).await
    }

    /// The database, opened by the library.
    pub async fn store(&self) -> Store {
        Store::open(&self.db_url).await.unwrap()
    }

    /// Writes a file into the temp folder and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Runs a prepared command (another environment or folder) to completion.
pub async fn finish(command: &mut tokio::process::Command) -> Run {
    Run::from(command.output().await.unwrap())
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self::shown(
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Run {
    /// The run, printed when `TEST_LOG` is set.
    fn shown(code: i32, stdout: String, stderr: String) -> Self {
        let run = Self {
            code,
            stdout,
            stderr,
        };
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!(
                "exit {}\n--- stdout\n{}--- stderr\n{}",
                run.code, run.stdout, run.stderr
            );
        }
        run
    }
}

impl Run {
    /// Everything printed, for leak checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A command's stdout or stderr in process.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// With `TEST_LOG` set, the logs of commands run in process, shown with the
/// test's output (the binary's go to its stderr).
fn log_for_test_log() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    }
}

/// Polls `cond` every 10 ms; panics with `what` after `secs` seconds.
pub async fn wait_until(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits until the daemon's listener at `addr` answers /healthz.
pub async fn wait_http(addr: std::net::SocketAddr) {
    wait_http_path(addr, "/healthz").await;
}

/// Waits until `addr` answers HTTP at `path` (with any status).
pub async fn wait_http_path(addr: std::net::SocketAddr, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while reqwest::get(format!("http://{addr}{path}")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// GET `path` on `addr`: the status and body, or 0 and the error when nothing answers.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Each recipient's status in run 1, once the database answers.
pub async fn statuses(env: &TestEnv) -> std::collections::BTreeMap<String, String> {
    env.store()
        .await
        .deliveries(1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.openid, d.status.as_str().to_owned()))
        .collect()
}

/// A send on demand to each of `ids`, all due now, stored as `sends add`
/// stores them (straight into the store: thousands of command runs would be slow).
pub async fn add_due_sends(env: &TestEnv, ids: &[String]) {
    use wxpush::domain::{AppId, IdempotencyKey, OpenId, TemplateId};
    let store = env.store().await;
    let body = wxpush::delivery::SendBody {
        template_id: "tmpl-checkin".into(),
        page: None,
        miniprogram_state: Default::default(),
        lang: Default::default(),
        data: [("thing1", "取件提醒"), ("date2", "2026-12-07")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    };
    let message = serde_json::to_string(&body).unwrap();
    let (appid, template) = (
        AppId::parse(APPID).unwrap(),
        TemplateId::parse("tmpl-checkin").unwrap(),
    );
    let now = chrono::Utc::now();
    // Eight writers at once: the accepts of 2,000 take a fraction of the time.
    let mut writers = tokio::task::JoinSet::new();
    for part in 0..8 {
        let (store, ids, message) = (store.clone(), ids.to_vec(), message.clone());
        let (appid, template) = (appid.clone(), template.clone());
        writers.spawn(async move {
            for (i, id) in ids.iter().enumerate().skip(part).step_by(8) {
                let key = IdempotencyKey::parse(&format!("k{i}")).unwrap();
                let openid = OpenId::parse(id).unwrap();
                store
                    .accept_send(&wxpush::storage::NewSend {
                        appid: &appid,
                        key: &key,
                        request: "{}",
                        openid: &openid,
                        template_id: &template,
                        job: None,
                        one_time: false,
                        message: &message,
                        cancel_key: None,
                        metadata: None,
                        send_at: now,
                        expires_at: now + chrono::Duration::hours(1),
                        tz: None,
                        policy: None,
                        digest: "",
                    })
                    .await
                    .unwrap();
            }
        });
    }
    writers.join_all().await;
    store.close().await;
}
