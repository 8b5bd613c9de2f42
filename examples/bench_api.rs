//! Sends on demand over the HTTP API (#25): how fast `POST /v1/sends` accepts,
//! how late the daemon sends what falls due at 1,000 a second, and what a
//! million scheduled sends in the store cost it.
//!
//! Usage (see scripts/bench-api.sh, which builds everything in release mode first):
//!   bench_api --wxpush target/release/wxpush [--database sqlite|postgres]
//!             [--clients 32] [--requests 20000] [--due 10000] [--latency-ms 0]
//!             [--scheduled 1000000] [--rate 0] [--scenarios a,b,c]
//!             [--skip-a] [--skip-b] [--skip-c]
//!
//! Every scenario starts on a fresh database (a new SQLite file; with
//! `--database postgres` a new database on a throwaway cluster from testpg:
//! `initdb`, `fsync=off`, loopback, gone when the benchmark exits), its own fake
//! WeChat on 127.0.0.1 (`--latency-ms` added to every send; one long-term
//! template everyone is subscribed to) and its own release `wxpush run` with
//! `[api] enabled` on `[http] listen` and `[delivery]` as shipped (concurrency
//! 16, no rate limit), after `wxpush check` cached the fake's template list (the
//! API refuses a template it has not cached). The fake and the HTTP clients run
//! in this process, on two threads, on the same machine as the daemon (and
//! PostgreSQL): the figures are end to end on loopback. Lines are `key: value`;
//! every figure comes from this run.
//!
//! A. Accept throughput: `--requests` POST /v1/sends from `--clients`
//!    concurrent keep-alive clients (a `reqwest::Client`, one connection, each),
//!    each with its own Idempotency-Key and `send_at` a day ahead (+08:00), so
//!    that only the accept path is measured. By default each client sends its
//!    next request as soon as it has the answer (closed loop: the rate is the
//!    most the daemon takes, and the latency includes the queueing at that
//!    rate); `--rate R` paces them instead, request `i` starting at `i / R`
//!    seconds (open loop; its latency counts from that scheduled start, so
//!    that a stall is not hidden by the requests it delayed). `a_mode`,
//!    `a_wall_s`, `a_requests_per_s`, `a_latency_ms` (p50, p99, max of each
//!    request, sent to body read), `a_non_202` (anything but 202 Accepted,
//!    transport errors included; the benchmark exits 1 unless 0),
//!    `a_pending_rows` (the sends made, read back `pending`: must be all),
//!    `a_daemon_cpu_s` (the daemon's user+system CPU during the load),
//!    `a_daemon_rss_kib` (VmRSS after, VmHWM peak) and `a_target` (met when
//!    at least 2,000/s, within 1 %, with p99 under 25 ms; informative).
//!
//! B. Lag at 1,000 due a second: `--due` sends accepted through the API (as in
//!    A) with `send_at` spread evenly over 10 seconds that start a few seconds
//!    after they are all accepted (the start is guessed from A's rate, or 500/s
//!    without A: `b_accepted` says by how much the last accept came before the
//!    first due time). Once the fake has accepted them all and every row is
//!    final, the sends table is read: lag is a send's `updated_at` (set when
//!    WeChat's answer is recorded) minus its `send_at`. `b_lag_ms` (p50, p99,
//!    max), `b_all_sent` (every row `sent`, and the fake accepted exactly
//!    `--due` messages in this scenario; exit 1 otherwise),
//!    `b_done_after_last_due_ms` (when the fake had them all, after the last
//!    `send_at`), `b_daemon_cpu_s` (from the first request to the last
//!    record) and `b_target` (p99 under 1 s).
//!
//! C. `--scheduled` sends in the store: one send is made through the API (a
//!    day ahead, then cancelled through it), and the daemon is restarted on
//!    that database of no pending send and measured idle; then it is stopped,
//!    `--scheduled` pending sends a year ahead (one a second from then on,
//!    `message` and `request` copied from the API's row) are inserted by one
//!    statement (a recursive CTE on SQLite, generate_series on PostgreSQL,
//!    followed there by `VACUUM ANALYZE sends` as autovacuum would soon do;
//!    SQLite gets no ANALYZE, as wxpush runs none), and it is started again on
//!    them and measured the same way. For each of the two (`0` and the
//!    `--scheduled` count): `c_ready_s` (spawn to /readyz 200),
//!    `c_startup_cpu_s` (its CPU from spawn until 10 s after ready),
//!    `c_idle_rss_kib` (VmRSS 10 s after ready), `c_idle_cpu_s_per_10s` (its
//!    CPU over the next 10 s, idle: the sender looks every second; on
//!    PostgreSQL also the CPU of the server backends serving this database,
//!    summed from /proc by process title, approximate) and
//!    `c_metrics_scrape_ms` (GET /metrics, which counts the queue; median of
//!    5). `c_query_ms_*` are the sender's statements as the daemon runs them,
//!    timed from here with the daemon stopped, median of 50 runs after one
//!    warm-up, on one connection: `next_due` (`SELECT MIN(send_at) ...`, the
//!    wake-up time after each pass), `due` (the page of 64 due sends, each
//!    pass), `expire` (the UPDATE of sends past `expires_at` that opens each
//!    pass; none match) and `queue` (the count /metrics reads), each with the
//!    database's plan at the 1M size (`c_plan_*`). `c_insert_s` is the bulk
//!    insert (and `c_db_size_mib` the database after). Then, on this daemon
//!    with the sends in place, A's load (`c_a_*` lines as `a_*`) and B again
//!    (`c_b_*` lines as `b_*`).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use fake_wechat::{FakeOptions, FakeTemplate, FakeWechat};
use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::Row as _;

/// The API's bearer token.
const TOKEN: &str = "bench-api-token-0123456789abcdef";
/// The fake's AppSecret.
const SECRET: &str = "test-secret";
/// The fake's one template: long-term, one keyword.
const TEMPLATE: &str = "tmpl-bench";
/// B's sends fall due over this long.
const WINDOW: Duration = Duration::from_secs(10);

/// The sender's statements, as src/storage/sends.rs has them.
const NEXT_DUE: &str = "SELECT MIN(send_at) FROM sends WHERE status = 'pending'";
const DUE: &str = "SELECT id, appid, one_time FROM sends WHERE status = 'pending' \
    AND send_at <= $1 AND expires_at > $1 ORDER BY send_at, id LIMIT 64";
const EXPIRE: &str = "UPDATE sends SET status = 'expired', \
    errmsg = 'not sent before its expires_at', updated_at = $2 \
    WHERE status = 'pending' AND send_at <= $1 AND expires_at <= $1 RETURNING appid";
/// The larger of the two counts /metrics reads (the other is of due sends only).
const QUEUE: &str = "SELECT COUNT(*) FROM sends WHERE status = 'pending' AND send_at > $1";

struct Args {
    wxpush: PathBuf,
    postgres: bool,
    clients: usize,
    requests: usize,
    due: usize,
    latency_ms: u64,
    scheduled: u64,
    /// A's pace, requests a second; 0: as fast as the clients go.
    rate: f64,
    run_a: bool,
    run_b: bool,
    run_c: bool,
}

/// The flags `bench_api` knows; any other is an error.
const FLAGS: &[&str] = &[
    "wxpush",
    "database",
    "clients",
    "requests",
    "due",
    "latency-ms",
    "scheduled",
    "rate",
    "scenarios",
    "skip-a",
    "skip-b",
    "skip-c",
];

fn usage(why: &str) -> ! {
    eprintln!("bench_api: {why}");
    std::process::exit(2)
}

fn args() -> Args {
    let mut map: HashMap<String, String> = HashMap::new();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let Some(key) = raw[i].strip_prefix("--") else {
            usage(&format!(
                "unexpected argument {:?} (flags are --name value)",
                raw[i]
            ));
        };
        if !FLAGS.contains(&key) {
            usage(&format!(
                "unknown flag --{key}; known: --{}",
                FLAGS.join(", --")
            ));
        }
        // A flag followed by another flag (or by nothing) is a bare switch.
        match raw.get(i + 1).filter(|v| !v.starts_with("--")) {
            Some(value) => {
                map.insert(key.to_owned(), value.clone());
                i += 2;
            }
            None => {
                map.insert(key.to_owned(), String::new());
                i += 1;
            }
        }
    }
    let get = |k: &str, d: &str| map.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let number = |k: &str, d: &str| -> u64 {
        get(k, d)
            .parse()
            .unwrap_or_else(|_| usage(&format!("--{k}: a number")))
    };
    let scenarios = get("scenarios", "a,b,c").to_ascii_lowercase();
    let listed: Vec<&str> = scenarios.split(',').map(str::trim).collect();
    if let Some(bad) = listed.iter().find(|s| !["a", "b", "c"].contains(s)) {
        usage(&format!("--scenarios: {bad:?} is not a, b or c"));
    }
    let run = |s: &str| listed.contains(&s) && !map.contains_key(&format!("skip-{s}"));
    let a = Args {
        wxpush: PathBuf::from(get("wxpush", "target/release/wxpush")),
        postgres: match get("database", "sqlite").as_str() {
            "sqlite" => false,
            "postgres" => true,
            other => usage(&format!("--database {other:?}: sqlite or postgres")),
        },
        clients: number("clients", "32") as usize,
        requests: number("requests", "20000") as usize,
        due: number("due", "10000") as usize,
        latency_ms: number("latency-ms", "0"),
        scheduled: number("scheduled", "1000000"),
        rate: number("rate", "0") as f64,
        run_a: run("a"),
        run_b: run("b"),
        run_c: run("c"),
    };
    if a.clients == 0 || a.requests == 0 || a.due == 0 || a.scheduled == 0 {
        usage("--clients, --requests, --due and --scheduled must be at least 1");
    }
    a
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `wxpush --config CONFIG`, with the fake's secret.
fn wxpush(a: &Args, config: &Path) -> Command {
    let mut c = Command::new(&a.wxpush);
    c.arg("--config")
        .arg(config)
        .env("WXPUSH__WECHAT__SECRET", SECRET);
    c
}

/// One scenario's world: a fresh database, a fake WeChat, a config naming both.
struct Env {
    /// Holds the config (and the SQLite file) until the scenario ends.
    _dir: tempfile::TempDir,
    db_url: String,
    fake: FakeWechat,
    config: PathBuf,
    port: u16,
}

impl Env {
    async fn new(a: &Args, pg: Option<&testpg::Cluster>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let db_url = match pg {
            Some(c) => c.database(),
            None => format!("sqlite://{}", dir.path().join("bench.db").display()),
        };
        let fake = FakeWechat::start(FakeOptions {
            latency: Duration::from_millis(a.latency_ms),
            secret: SECRET.into(),
            keep_bodies: false,
            templates: vec![FakeTemplate {
                id: TEMPLATE.into(),
                title: "bench".into(),
                content: "{{thing1.DATA}}".into(),
                kind: 3,
                everyone_subscribed: true,
            }],
            ..FakeOptions::default()
        })
        .await;
        let port = free_port();
        let config = dir.path().join("bench-api.toml");
        let text = format!(
            r#"[wechat]
appid = "wx0123456789abcdef"
api_base = "{api_base}"
[database]
url = "{db_url}"
[http]
listen = "127.0.0.1:{port}"
[api]
enabled = true
token = "{TOKEN}"
[log]
level = "warn"
[scheduler]
reload_on_change = false
[[jobs]]
name = "bench"
cron = "0 0 0 1 1 *"
template_id = "{TEMPLATE}"
[jobs.data]
thing1 = "{{{{name}}}} check in"
"#,
            api_base = fake.base_url(),
        );
        std::fs::write(&config, text).expect("write the config");
        // The database made and migrated first: `check` caches the template
        // list only in a database that exists.
        wxpush::storage::Store::open(&db_url)
            .await
            .expect("create the database")
            .close()
            .await;
        let out = wxpush(a, &config)
            .arg("check")
            .output()
            .expect("run wxpush check");
        if !out.status.success() {
            eprintln!(
                "bench_api: wxpush check failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::process::exit(1);
        }
        Self {
            _dir: dir,
            db_url,
            fake,
            config,
            port,
        }
    }

    async fn db(&self) -> AnyPool {
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.db_url)
            .await
            .expect("open the database")
    }

    /// The PostgreSQL database's name (backends show it in their title).
    fn pg_database(&self) -> Option<&str> {
        self.db_url
            .starts_with("postgres")
            .then(|| self.db_url.rsplit('/').next())
            .flatten()
    }
}

/// A `wxpush run`, killed if still running when dropped.
struct Daemon {
    child: Child,
    base: String,
    ready: Duration,
}

impl Daemon {
    async fn start(a: &Args, env: &Env) -> Self {
        let spawned = Instant::now();
        let mut child = wxpush(a, &env.config)
            .arg("run")
            .spawn()
            .expect("start wxpush run");
        let base = format!("http://127.0.0.1:{}", env.port);
        let http = client();
        let deadline = spawned + Duration::from_secs(300);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("bench_api: wxpush run exited ({status}) before it was ready");
                std::process::exit(1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("bench_api: wxpush run was not ready in 300 s");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            base,
            ready: spawned.elapsed(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for it to end.
    fn stop(mut self) {
        // SAFETY: kill with the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A keep-alive HTTP client that never goes through a proxy.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A process's user+system CPU in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
}

/// A process's CPU seconds so far.
fn cpu_s(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0.0) / clock_ticks()
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every PostgreSQL backend serving `database` (by its process title), with its CPU ticks.
fn pg_backends(database: &str) -> HashMap<u32, f64> {
    let needle = format!(" {database} ");
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if title.starts_with("postgres: ")
            && title.contains(&needle)
            && let Some(t) = cpu_ticks(pid)
        {
            found.insert(pid, t);
        }
    }
    found
}

/// CPU seconds the backends used between two `pg_backends` readings (a backend
/// that ended in between is missed).
fn pg_cpu_between(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
        .sum::<f64>()
        / clock_ticks()
}

/// The value at quantile `q` of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// An RFC 3339 time with the +08:00 offset, as a backend in China sends it.
fn rfc3339(t: DateTime<Utc>) -> String {
    let east8 = FixedOffset::east_opt(8 * 3600).expect("a valid offset");
    t.with_timezone(&east8)
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// A time as wxpush stores it (UTC, milliseconds, `Z`).
fn stored(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What a batch of POST /v1/sends got.
struct Load {
    wall: Duration,
    /// Each accepted request's latency, ms, sorted.
    latencies_ms: Vec<f64>,
    non_202: usize,
    first_refusal: Option<String>,
    /// The ids of the sends made.
    ids: Vec<i64>,
}

/// POSTs `n` sends from `clients` concurrent keep-alive clients: send `i` to
/// openid `{prefix}{i}` (28 characters) with key `{prefix}-{i}`, due at
/// `send_at(i)`; at `rate` a second (its latency from its scheduled start), or
/// as fast as answered when 0.
async fn post_sends(
    base: &str,
    clients: usize,
    n: usize,
    rate: f64,
    prefix: &str,
    send_at: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let send_at = Arc::new(send_at);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, send_at) = (Arc::clone(&next), Arc::clone(&send_at));
        let (url, prefix) = (format!("{base}/v1/sends"), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut latencies = Vec::new();
            let mut ids = Vec::new();
            let mut refused = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let width = 28 - prefix.len();
                let body = json!({
                    "to": format!("{prefix}{i:0width$}"),
                    "template_id": TEMPLATE,
                    "data": {"thing1": format!("parcel {i} shipped")},
                    "send_at": send_at(i),
                });
                let t0 = if rate > 0.0 {
                    let slot = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(slot.into()).await;
                    slot
                } else {
                    Instant::now()
                };
                let answer = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("Idempotency-Key", format!("{prefix}-{i}"))
                    .json(&body)
                    .send()
                    .await;
                let (status, text) = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().await.unwrap_or_default())
                    }
                    Err(e) => (0, e.to_string()),
                };
                let took = t0.elapsed().as_secs_f64() * 1000.0;
                if status == 202
                    && let Some(id) = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_i64())
                {
                    latencies.push(took);
                    ids.push(id);
                } else {
                    refused.push(format!("HTTP {status}: {text}"));
                }
            }
            (latencies, ids, refused)
        }));
    }
    let mut load = Load {
        wall: Duration::ZERO,
        latencies_ms: Vec::with_capacity(n),
        non_202: 0,
        first_refusal: None,
        ids: Vec::with_capacity(n),
    };
    for t in tasks {
        let (latencies, ids, refused) = t.await.expect("a client task");
        load.latencies_ms.extend(latencies);
        load.ids.extend(ids);
        load.non_202 += refused.len();
        if load.first_refusal.is_none() {
            load.first_refusal = refused.into_iter().next();
        }
    }
    load.wall = started.elapsed();
    load.latencies_ms.sort_by(f64::total_cmp);
    load
}

/// A single-number query (COUNT, SUM) as i64.
async fn count(db: &AnyPool, sql: &'static str, id_range: Option<(i64, i64)>) -> i64 {
    let mut q = sqlx::query(sql);
    if let Some((lo, hi)) = id_range {
        q = q.bind(lo).bind(hi);
    }
    q.fetch_one(db)
        .await
        .expect("a count")
        .try_get::<i64, _>(0)
        .expect("an integer")
}

/// Scenario A. Returns the rate, and whether it passed.
async fn scenario_a(a: &Args, pg: Option<&testpg::Cluster>, database: &str) -> (f64, bool) {
    println!("\n== A: accept throughput ({database}) ==");
    let env = Env::new(a, pg).await;
    let daemon = Daemon::start(a, &env).await;
    let result = accept_load(a, &env, &daemon, "a", "oBench").await;
    daemon.stop();
    result
}

/// A's load on a running daemon: `--requests` sends a day ahead. Prints
/// `{label}_*` lines; returns the rate, and whether every one was accepted.
async fn accept_load(
    a: &Args,
    env: &Env,
    daemon: &Daemon,
    label: &str,
    prefix: &str,
) -> (f64, bool) {
    let cpu0 = cpu_s(daemon.pid());
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    let load = post_sends(
        &daemon.base,
        a.clients,
        a.requests,
        a.rate,
        prefix,
        move |i| rfc3339(tomorrow + chrono::Duration::milliseconds(i as i64)),
    )
    .await;
    let cpu = cpu_s(daemon.pid()) - cpu0;
    let (rss, hwm) = (
        status_kib(daemon.pid(), "VmRSS:"),
        status_kib(daemon.pid(), "VmHWM:"),
    );
    let pending = match (load.ids.iter().min(), load.ids.iter().max()) {
        (Some(&lo), Some(&hi)) => {
            let db = env.db().await;
            let pending = count(
                &db,
                "SELECT COUNT(*) FROM sends WHERE id BETWEEN $1 AND $2 AND status = 'pending'",
                Some((lo, hi)),
            )
            .await;
            db.close().await;
            pending
        }
        _ => 0,
    };
    let rate = a.requests as f64 / load.wall.as_secs_f64();
    let l = &load.latencies_ms;
    // Within 1 %: a paced run's wall time also holds its last answer.
    let (p99, met) = (pct(l, 0.99), rate >= 1980.0 && pct(l, 0.99) < 25.0);
    println!(
        "{label}_requests: {} from {} keep-alive clients, send_at a day ahead",
        a.requests, a.clients
    );
    if a.rate > 0.0 {
        println!(
            "{label}_mode: paced at {:.0}/s (latency from each request's scheduled start)",
            a.rate
        );
    } else {
        println!("{label}_mode: closed loop (each client sends again once answered)");
    }
    println!("{label}_wall_s: {:.3}", load.wall.as_secs_f64());
    println!("{label}_requests_per_s: {rate:.0}");
    println!(
        "{label}_latency_ms: p50 {:.2}, p99 {p99:.2}, max {:.2}",
        pct(l, 0.5),
        pct(l, 1.0)
    );
    println!("{label}_non_202: {}", load.non_202);
    if let Some(first) = &load.first_refusal {
        println!("{label}_first_non_202: {first}");
    }
    println!("{label}_pending_rows: {pending} (of {})", a.requests);
    println!("{label}_daemon_cpu_s: {cpu:.2} (during the load)");
    println!("{label}_daemon_rss_kib: {rss} after, {hwm} peak");
    println!(
        "{label}_target: {} (at least 2000/s with p99 under 25 ms)",
        if met { "met" } else { "MISSED" }
    );
    let ok = load.non_202 == 0 && pending == a.requests as i64;
    (rate, ok)
}

/// Scenario B on a running daemon: `--due` sends falling due over `WINDOW`.
/// `rate_hint` (accepts a second) sets how far ahead the first is. Prints
/// `{label}_*` lines; returns whether every send went exactly once.
async fn scenario_b(
    a: &Args,
    env: &Env,
    daemon: &Daemon,
    rate_hint: f64,
    label: &str,
    prefix: &str,
) -> bool {
    let d = a.due;
    let accept_s = d as f64 / rate_hint.max(100.0);
    let lead_ms = ((accept_s * 1.5 + 3.0) * 1000.0) as i64;
    let start = Utc::now() + chrono::Duration::milliseconds(lead_ms);
    let window_us = WINDOW.as_micros() as i64;
    let send_at = move |i: usize| {
        rfc3339(start + chrono::Duration::microseconds(i as i64 * window_us / d as i64))
    };
    let last_due = start + chrono::Duration::microseconds((d as i64 - 1) * window_us / d as i64);
    let before = env.fake.accepted_count();
    let cpu0 = cpu_s(daemon.pid());
    let load = post_sends(&daemon.base, a.clients, d, 0.0, prefix, send_at).await;
    let accepted = Utc::now();
    println!(
        "{label}_accepted: {} in {:.2} s, the last {:.2} s before the first due time",
        load.ids.len(),
        load.wall.as_secs_f64(),
        (start - accepted).as_seconds_f64()
    );
    if load.non_202 > 0 {
        println!(
            "{label}_non_202: {} (first: {})",
            load.non_202,
            load.first_refusal.as_deref().unwrap_or("")
        );
        return false;
    }
    let (lo, hi) = (
        *load.ids.iter().min().expect("sends made"),
        *load.ids.iter().max().expect("sends made"),
    );
    // Everything at the fake, then every row final.
    let deadline = Instant::now()
        + (last_due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(120);
    while env.fake.accepted_count() - before < d as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done_at = Utc::now();
    let db = env.db().await;
    let finals = "SELECT COUNT(*) FROM sends WHERE id BETWEEN $1 AND $2 \
                  AND status NOT IN ('pending', 'sending')";
    while count(&db, finals, Some((lo, hi))).await < d as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_s(daemon.pid()) - cpu0;
    // A moment for anything sent twice to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_fake = env.fake.accepted_count() - before;
    let rows =
        sqlx::query("SELECT status, send_at, updated_at FROM sends WHERE id BETWEEN $1 AND $2")
            .bind(lo)
            .bind(hi)
            .fetch_all(&db)
            .await
            .expect("read the sends");
    db.close().await;
    let mut sent = 0;
    let mut lags: Vec<f64> = Vec::with_capacity(d);
    for r in &rows {
        let status: String = r.get("status");
        if status != "sent" {
            continue;
        }
        sent += 1;
        let due: DateTime<Utc> = r.get::<String, _>("send_at").parse().expect("send_at");
        let at: DateTime<Utc> = r
            .get::<String, _>("updated_at")
            .parse()
            .expect("updated_at");
        lags.push((at - due).as_seconds_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    let all = rows.len() == d && sent == d && at_fake == d as u64;
    println!(
        "{label}_due: {d} over {} s ({:.0} a second), fake latency {} ms",
        WINDOW.as_secs(),
        d as f64 / WINDOW.as_secs_f64(),
        a.latency_ms
    );
    println!(
        "{label}_lag_ms: p50 {:.1}, p99 {:.1}, max {:.1}",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        pct(&lags, 1.0)
    );
    println!(
        "{label}_all_sent: {all} (rows {}, sent {sent}, fake accepted {at_fake} of {d})",
        rows.len()
    );
    println!(
        "{label}_done_after_last_due_ms: {:.0}",
        (done_at - last_due).as_seconds_f64() * 1000.0
    );
    println!("{label}_daemon_cpu_s: {cpu:.2} (first request to last record)");
    println!(
        "{label}_target: {} (p99 under 1 s)",
        if pct(&lags, 0.99) < 1000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    all
}

/// A daemon measured idle, as C reports it.
struct Idle {
    ready_s: f64,
    startup_cpu_s: f64,
    rss_kib: i64,
    cpu_s: f64,
    pg_cpu_s: Option<f64>,
    scrape_ms: f64,
}

/// Starts the daemon and measures it idle: RSS 10 s after ready, CPU over the 10 s after.
async fn idle(a: &Args, env: &Env) -> (Daemon, Idle) {
    let daemon = Daemon::start(a, env).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_kib = status_kib(daemon.pid(), "VmRSS:");
    let startup_cpu_s = cpu_s(daemon.pid());
    let pg0 = env.pg_database().map(pg_backends);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = cpu_s(daemon.pid()) - startup_cpu_s;
    let pg_cpu_s = env
        .pg_database()
        .zip(pg0)
        .map(|(name, before)| pg_cpu_between(&before, &pg_backends(name)));
    let http = client();
    let mut scrapes = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let r = http
            .get(format!("{}/metrics", daemon.base))
            .send()
            .await
            .expect("GET /metrics");
        let _ = r.text().await;
        scrapes.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    scrapes.sort_by(f64::total_cmp);
    let idle = Idle {
        ready_s: daemon.ready.as_secs_f64(),
        startup_cpu_s,
        rss_kib,
        cpu_s: cpu,
        pg_cpu_s,
        scrape_ms: pct(&scrapes, 0.5),
    };
    (daemon, idle)
}

/// The median of 50 runs of `run` (after one warm-up), in ms.
async fn median_ms<F, Fut>(mut run: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    run().await;
    let mut took = Vec::with_capacity(50);
    for _ in 0..50 {
        let t0 = Instant::now();
        run().await;
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    pct(&took, 0.5)
}

/// The sender's statements' times (ms): next due, due page, expire, queue.
async fn query_times(db: &AnyPool) -> [f64; 4] {
    let now = stored(Utc::now());
    let (db, now) = (db, now.as_str());
    [
        median_ms(|| async move {
            sqlx::query(NEXT_DUE).fetch_one(db).await.expect("next due");
        })
        .await,
        median_ms(|| async move {
            sqlx::query(DUE)
                .bind(now)
                .fetch_all(db)
                .await
                .expect("due sends");
        })
        .await,
        median_ms(|| async move {
            sqlx::query(EXPIRE)
                .bind(now)
                .bind(now)
                .fetch_all(db)
                .await
                .expect("expire");
        })
        .await,
        median_ms(|| async move {
            sqlx::query(QUEUE)
                .bind(now)
                .fetch_one(db)
                .await
                .expect("queue");
        })
        .await,
    ]
}

/// The database's plan for `sql` with `$1` and `$2` at now, on one line.
async fn plan(db: &AnyPool, postgres: bool, sql: &str) -> String {
    let now = format!("'{}'", stored(Utc::now()));
    let sql = sql.replace("$1", &now).replace("$2", &now);
    let explain = if postgres {
        format!("EXPLAIN {sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {sql}")
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
        .fetch_all(db)
        .await
        .expect("explain");
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            if postgres {
                r.get::<String, _>(0).trim().to_owned()
            } else {
                r.get::<String, _>("detail")
            }
        })
        .collect();
    lines.join(" | ")
}

/// Inserts `n` pending sends a year ahead, one a second, copying send `model`'s
/// columns; returns the seconds it took (with VACUUM ANALYZE on PostgreSQL).
async fn bulk_insert(db: &AnyPool, postgres: bool, model: i64, n: u64) -> f64 {
    let from = stored(Utc::now() + chrono::Duration::days(365));
    let columns = "appid, idem_key, request, openid, template_id, job, one_time, message, \
                   cancel_key, metadata, send_at, expires_at, status, created_at, updated_at";
    let sql = if postgres {
        format!(
            "INSERT INTO sends ({columns}) \
             SELECT t.appid, 'bulk-' || i, t.request, 'oBulk' || lpad(i::text, 23, '0'), \
             t.template_id, NULL, 0, t.message, NULL, NULL, \
             to_char(($3::timestamptz + make_interval(secs => i)) AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             to_char(($3::timestamptz + make_interval(secs => i + 10800)) AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             'pending', t.created_at, t.created_at \
             FROM generate_series(1::bigint, $2) AS i, (SELECT * FROM sends WHERE id = $1) AS t"
        )
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
             INSERT INTO sends ({columns}) \
             SELECT t.appid, 'bulk-' || n.i, t.request, printf('oBulk%023d', n.i), \
             t.template_id, NULL, 0, t.message, NULL, NULL, \
             strftime('%Y-%m-%dT%H:%M:%fZ', $3, '+' || n.i || ' seconds'), \
             strftime('%Y-%m-%dT%H:%M:%fZ', $3, '+' || (n.i + 10800) || ' seconds'), \
             'pending', t.created_at, t.created_at \
             FROM n, (SELECT * FROM sends WHERE id = $1) AS t"
        )
    };
    let t0 = Instant::now();
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(model)
        .bind(n as i64)
        .bind(from)
        .execute(db)
        .await
        .expect("the bulk insert");
    assert_eq!(done.rows_affected(), n, "rows inserted");
    if postgres {
        sqlx::query("VACUUM ANALYZE sends")
            .execute(db)
            .await
            .expect("VACUUM ANALYZE");
    }
    t0.elapsed().as_secs_f64()
}

/// The database's size in MiB.
async fn db_size_mib(env: &Env, db: &AnyPool) -> f64 {
    if env.pg_database().is_some() {
        let bytes: i64 = sqlx::query("SELECT pg_database_size(current_database())")
            .fetch_one(db)
            .await
            .expect("pg_database_size")
            .get(0);
        bytes as f64 / 1048576.0
    } else {
        let file = env.db_url.trim_start_matches("sqlite://");
        ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{file}{s}")).ok())
            .map(|m| m.len() as f64)
            .sum::<f64>()
            / 1048576.0
    }
}

/// Scenario C; returns whether its A and its B passed.
async fn scenario_c(
    a: &Args,
    pg: Option<&testpg::Cluster>,
    database: &str,
    rate_hint: f64,
) -> (bool, bool) {
    println!(
        "\n== C: {} scheduled sends in the store ({database}) ==",
        a.scheduled
    );
    let env = Env::new(a, pg).await;
    // The model row, made through the API, then cancelled: no pending send left.
    let daemon = Daemon::start(a, &env).await;
    let tomorrow = rfc3339(Utc::now() + chrono::Duration::days(1));
    let made = post_sends(&daemon.base, 1, 1, 0.0, "oModel", move |_| tomorrow.clone()).await;
    let Some(&model) = made.ids.first() else {
        eprintln!(
            "bench_api: the model send was refused: {}",
            made.first_refusal.unwrap_or_default()
        );
        std::process::exit(1);
    };
    let cancelled = client()
        .post(format!("{}/v1/sends/{model}/cancel", daemon.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("cancel the model send");
    assert_eq!(cancelled.status().as_u16(), 200, "cancel the model send");
    daemon.stop();

    let (daemon, empty) = idle(a, &env).await;
    daemon.stop();
    let db = env.db().await;
    let before = query_times(&db).await;
    let insert_s = bulk_insert(&db, a.postgres, model, a.scheduled).await;
    let pending = count(
        &db,
        "SELECT COUNT(*) FROM sends WHERE status = 'pending'",
        None,
    )
    .await;
    assert_eq!(
        pending, a.scheduled as i64,
        "pending sends after the insert"
    );
    let size = db_size_mib(&env, &db).await;
    let after = query_times(&db).await;
    let mut plans = Vec::new();
    for (name, sql) in [
        ("next_due", NEXT_DUE),
        ("due", DUE),
        ("expire", EXPIRE),
        ("queue", QUEUE),
    ] {
        plans.push((name, plan(&db, a.postgres, sql).await));
    }
    db.close().await;
    let (daemon, full) = idle(a, &env).await;

    let n = a.scheduled;
    println!(
        "c_insert_s: {insert_s:.1} ({n} rows, one statement{})",
        if a.postgres {
            ", then VACUUM ANALYZE sends"
        } else {
            ""
        }
    );
    println!("c_db_size_mib: {size:.0}");
    println!(
        "c_ready_s: 0: {:.2}, {n}: {:.2}",
        empty.ready_s, full.ready_s
    );
    println!(
        "c_startup_cpu_s: 0: {:.2}, {n}: {:.2} (spawn to 10 s after ready)",
        empty.startup_cpu_s, full.startup_cpu_s
    );
    println!(
        "c_idle_rss_kib: 0: {}, {n}: {} (10 s after ready)",
        empty.rss_kib, full.rss_kib
    );
    println!(
        "c_idle_cpu_s_per_10s: 0: {:.2}, {n}: {:.2} (the daemon){}",
        empty.cpu_s,
        full.cpu_s,
        match (empty.pg_cpu_s, full.pg_cpu_s) {
            (Some(e), Some(f)) => format!("; postgres backends 0: {e:.2}, {n}: {f:.2}"),
            _ => String::new(),
        }
    );
    println!(
        "c_metrics_scrape_ms: 0: {:.1}, {n}: {:.1}",
        empty.scrape_ms, full.scrape_ms
    );
    for (i, name) in ["next_due", "due", "expire", "queue"].iter().enumerate() {
        println!(
            "c_query_ms_{name}: 0: {:.3}, {n}: {:.3}",
            before[i], after[i]
        );
    }
    for (name, p) in &plans {
        println!("c_plan_{name}: {p}");
    }
    let (_, accepted) = accept_load(a, &env, &daemon, "c_a", "oBenchC").await;
    let sent = scenario_b(a, &env, &daemon, rate_hint, "c_b", "oLagC").await;
    daemon.stop();
    (accepted, sent)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    sqlx::any::install_default_drivers();
    let pg = a.postgres.then(|| {
        testpg::cluster().unwrap_or_else(|why| usage(&format!("--database postgres: {why}")))
    });
    let database = if a.postgres { "postgres" } else { "sqlite" };
    let version = Command::new(&a.wxpush)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| usage(&format!("{}: {e}", a.wxpush.display())));
    println!("wxpush: {version}");
    println!("database: {database}");
    println!(
        "clients: {}, requests: {}, rate: {}, due: {}, fake_latency_ms: {}, scheduled: {}",
        a.clients, a.requests, a.rate, a.due, a.latency_ms, a.scheduled
    );
    let mut failed = Vec::new();
    // B's first send is due after its accepts: guessed from A's rate.
    let mut rate_hint = 500.0;
    if a.run_a {
        let (rate, ok) = scenario_a(&a, pg, database).await;
        rate_hint = rate;
        if !ok {
            failed.push("A: a request was not accepted");
        }
    }
    if a.run_b {
        println!("\n== B: lag at {} due a second ({database}) ==", a.due / 10);
        let env = Env::new(&a, pg).await;
        let daemon = Daemon::start(&a, &env).await;
        if !scenario_b(&a, &env, &daemon, rate_hint, "b", "oLagB").await {
            failed.push("B: not every send went exactly once");
        }
        daemon.stop();
    }
    if a.run_c {
        let (accepted, sent) = scenario_c(&a, pg, database, rate_hint).await;
        if !accepted {
            failed.push("C: a request was not accepted");
        }
        if !sent {
            failed.push("C: not every send went exactly once");
        }
    }
    if !failed.is_empty() {
        eprintln!("bench_api: {}", failed.join("; "));
        std::process::exit(1);
    }
}
