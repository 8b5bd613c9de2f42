//! The wxpush benchmark: a real `wxpush send` against the fake WeChat on 127.0.0.1.
//!
//! Usage (see scripts/bench.sh, which builds everything in release mode first):
//!   bench --wxpush target/release/wxpush [--n 10000] [--concurrency 64]
//!         [--latency-ms 0] [--busy-rate 0] [--rate-limit 0] [--seq 20000] [--idle-secs 0]
//!         [--database sqlite|postgres] [--instances 1] [--kill-one] [--lease 1s]
//!
//! `--database postgres` runs on a fresh database of a throwaway cluster
//! (testpg: `initdb`, `fsync=off`, loopback; gone when the benchmark exits), or
//! on the empty database `WXPUSH_BENCH_DB` names when it is set (for looking
//! inside with `pg_stat_statements` or `auto_explain` while it runs).
//! `--instances K` (PostgreSQL only) first starts K-1 `wxpush run` daemons on
//! the same config, each serving /metrics on a port of its own, on a job that
//! fires once a year: they join the measured `send --again`'s run through their
//! join check (every tenth of `[database] instance_lease`, which `--lease` sets,
//! 1s by default), and are stopped with SIGTERM at the end. Extra lines:
//! `daemon_peak_rss_kib` and `sent_by_instance` (each daemon's count from its
//! /metrics, the send's as the rest). `--kill-one` (or `--kill-one 1`; needs
//! K >= 2) kills one daemon with SIGKILL once 30 % of the messages are accepted
//! by the fake and prints `killed_at_accepted`, `recovery_s` (kill to run done),
//! `unknown_after_kill` and `duplicates` (recipients the fake accepted more than
//! once or with more than one `sent` row; the benchmark exits 1 unless 0).
//!
//! `send_wall_s` is from the send's start until the whole run is done (the send
//! waits for the other instances); `run_s` is the drain as the send reports it;
//! `messages_per_s` is N over `send_wall_s`. The audit at the end (one `sent`
//! row per recipient) reads the database through `wxpush::storage::Store`, on
//! SQLite or PostgreSQL.
//!
//! `--policy open` adds a delivery policy that holds nobody (quiet hours six
//! hours away, caps of 100 a day, one of them calendar days): what the check at
//! claim time costs. `--policy capped` caps everyone at one message a day: the
//! measured run fills the caps, and the second run (`second_*` lines) is held
//! whole, with no request to WeChat.
//!
//! Prints one `key: value` line per figure. Every figure comes from this run.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_wechat::{FakeOptions, FakeWechat};

#[path = "support/mod.rs"]
mod support;
use support::{bench_openid, bench_template, free_port, write_recipients};

struct Args {
    wxpush: PathBuf,
    n: usize,
    concurrency: usize,
    latency_ms: u64,
    busy_rate: f64,
    rate_limit: u64,
    seq: usize,
    idle_secs: u64,
    postgres: bool,
    instances: usize,
    kill_one: bool,
    /// `[database] instance_lease` on PostgreSQL.
    lease: String,
    /// `none`, `open` or `capped` (see the top).
    policy: String,
}

/// The flags `bench` knows; any other is an error (a typo would otherwise be ignored).
const FLAGS: &[&str] = &[
    "wxpush",
    "n",
    "concurrency",
    "latency-ms",
    "busy-rate",
    "rate-limit",
    "seq",
    "idle-secs",
    "database",
    "instances",
    "kill-one",
    "lease",
    "policy",
];

fn args() -> Args {
    let mut map: HashMap<String, String> = HashMap::new();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let Some(key) = raw[i].strip_prefix("--") else {
            eprintln!(
                "bench: unexpected argument {:?} (flags are --name value)",
                raw[i]
            );
            std::process::exit(2);
        };
        if !FLAGS.contains(&key) {
            eprintln!(
                "bench: unknown flag --{key}; known: --{}",
                FLAGS.join(", --")
            );
            std::process::exit(2);
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
    Args {
        wxpush: PathBuf::from(get("wxpush", "target/release/wxpush")),
        n: get("n", "10000").parse().expect("--n"),
        concurrency: get("concurrency", "64").parse().expect("--concurrency"),
        latency_ms: get("latency-ms", "0").parse().expect("--latency-ms"),
        busy_rate: get("busy-rate", "0").parse().expect("--busy-rate"),
        rate_limit: get("rate-limit", "0").parse().expect("--rate-limit"),
        seq: get("seq", "20000").parse().expect("--seq"),
        idle_secs: get("idle-secs", "0").parse().expect("--idle-secs"),
        postgres: match get("database", "sqlite").as_str() {
            "sqlite" => false,
            "postgres" => true,
            other => {
                eprintln!("bench: --database {other:?}: sqlite or postgres");
                std::process::exit(2);
            }
        },
        instances: get("instances", "1").parse().expect("--instances"),
        // `--kill-one`, `--kill-one 1` or `--kill-one true`; `--kill-one 0` is off.
        kill_one: map
            .get("kill-one")
            .is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "no")),
        lease: get("lease", "1s"),
        policy: match get("policy", "none").as_str() {
            p @ ("none" | "open" | "capped") => p.to_owned(),
            other => {
                eprintln!("bench: --policy {other:?}: none, open or capped");
                std::process::exit(2);
            }
        },
    }
}

/// The `[policy]` section `--policy` names.
fn policy_toml(policy: &str) -> String {
    use chrono::Timelike;
    match policy {
        "open" => {
            // Quiet hours six hours from now in the job's zone: nobody is inside.
            let at = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
            let (start, end) = ((at.hour() + 6) % 24, (at.hour() + 7) % 24);
            format!(
                "[policy]\nquiet_hours = {{ start = \"{start:02}:00\", end = \"{end:02}:00\" }}\n\
                 frequency_caps = [{{ limit = 100, per = \"1d\" }}, \
                 {{ limit = 100, per = \"1d\", scope = \"template\", calendar = true }}]\n"
            )
        }
        "capped" => "[policy]\nfrequency_caps = [{ limit = 1, per = \"1d\" }]\n".to_owned(),
        _ => String::new(),
    }
}

fn fake_options(a: &Args) -> FakeOptions {
    FakeOptions {
        latency: Duration::from_millis(a.latency_ms),
        busy_rate: a.busy_rate,
        rate_limit_per_sec: a.rate_limit,
        keep_bodies: false,
        templates: vec![bench_template()],
        ..FakeOptions::default()
    }
}

fn write_config(
    dir: &Path,
    db_url: &str,
    api_base: &str,
    concurrency: usize,
    cron: &str,
    lease: &str,
    policy: &str,
) -> PathBuf {
    let path = dir.join("bench.toml");
    let text = format!(
        r#"[wechat]
appid = "wx0123456789abcdef"
api_base = "{api_base}"
timeout = "10s"
[database]
url = "{db_url}"
{lease}[delivery]
concurrency = {concurrency}
max_attempts = 8
backoff_base = "20ms"
backoff_max = "500ms"
[log]
level = "warn"
[[jobs]]
name = "bench"
cron = "{cron}"
template_id = "tmpl-bench"
page = "pages/index/index"
[jobs.data]
thing1 = "{{{{name}}}} check in"
date2 = "{{{{today}}}}"
{policy}"#,
        // Daemons look for the send's run to join every tenth of it (every
        // third in builds before 50f72c5), and notice a dead one at their next
        // heartbeat (a third). Only where it matters: builds from before it
        // (A/B runs on SQLite) refuse the key.
        lease = if db_url.starts_with("postgres") {
            format!("instance_lease = \"{lease}\"\n")
        } else {
            String::new()
        }
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cmd` to completion; returns (stdout, wall time, peak RSS in KiB, CPU seconds).
/// Exits the benchmark if the command fails.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn measured(cmd: Command) -> (String, Duration, i64, f64) {
    measured_allowing(cmd, 0)
}

/// `measured`, where exit codes up to `allowed` count as success.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn measured_allowing(mut cmd: Command, allowed: i32) -> (String, Duration, i64, f64) {
    cmd.stdout(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("start wxpush");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let out = reader.join().unwrap();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) > allowed {
        eprintln!("bench: {cmd:?} failed (status {status}); output:\n{out}");
        std::process::exit(1);
    }
    let wall = started.elapsed();
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    (out, wall, usage.ru_maxrss, cpu)
}

/// `BENCH_WRAP="perf record -g -o perf.data"` runs `wxpush send` under a profiler.
fn wxpush(a: &Args, config: &Path, args: &[&str]) -> Command {
    let wrap = std::env::var("BENCH_WRAP")
        .ok()
        .filter(|_| args.first() == Some(&"send"));
    let mut c = match wrap.as_deref().map(str::split_whitespace) {
        Some(mut words) => {
            let mut c = Command::new(words.next().expect("BENCH_WRAP names a program"));
            c.args(words).arg(&a.wxpush);
            c
        }
        None => Command::new(&a.wxpush),
    };
    // A new round each time: `send` alone would find the slot's run complete.
    // Builds from before `--again` (for A/B runs) started one on every send.
    let args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|arg| *arg != "--again" || send_has_again(&a.wxpush))
        .collect();
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("WXPUSH__WECHAT__SECRET", "test-secret");
    c
}

/// Whether this wxpush build knows `send --again`.
fn send_has_again(wxpush: &Path) -> bool {
    std::process::Command::new(wxpush)
        .args(["send", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--again"))
}

/// Requests per second the fake answers on its own, from `clients` concurrent clients.
async fn fake_capacity(opts: FakeOptions, clients: usize, secs: u64) -> f64 {
    let fake = FakeWechat::start(opts).await;
    let http = reqwest::Client::new();
    let token = fetch_token(&http, &fake.base_url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (http, url, token, stop, done) = (
            http.clone(),
            fake.base_url(),
            token.clone(),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                send_one(&http, &url, &token, &format!("oCap{i:04}x{k:012}")).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn fetch_token(http: &reqwest::Client, base: &str) -> String {
    let v: serde_json::Value = http
        .post(format!("{base}/cgi-bin/stable_token"))
        .json(&serde_json::json!({"grant_type":"client_credential","appid":"wx0123456789abcdef","secret":"test-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

async fn send_one(http: &reqwest::Client, base: &str, token: &str, openid: &str) {
    let body = serde_json::json!({
        "touser": openid, "template_id": "tmpl-bench", "page": "pages/index/index",
        "data": {"thing1": {"value": "someone, time to check in"}, "date2": {"value": "2026年11月24日"}},
        "miniprogram_state": "formal", "lang": "zh_CN"
    });
    let r = http
        .post(format!("{base}/cgi-bin/message/subscribe/send"))
        .query(&[("access_token", token)])
        .json(&body)
        .send()
        .await
        .unwrap();
    let _ = r.bytes().await.unwrap();
}

/// The cron-script way: one request at a time, waiting for each answer.
async fn sequential(opts: FakeOptions, n: usize) -> f64 {
    let fake = FakeWechat::start(opts).await;
    let http = reqwest::Client::new();
    let token = fetch_token(&http, &fake.base_url()).await;
    let started = Instant::now();
    for i in 0..n {
        send_one(&http, &fake.base_url(), &token, &format!("oSeq{i:024}")).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A process's peak resident memory (VmHWM), in KiB.
fn peak_rss(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `count` daemons are registered in the instances table.
fn wait_for_instances(a: &Args, config: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = wxpush(a, config, &["instances", "--json"])
            .output()
            .unwrap();
        let listed: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if listed.as_array().is_some_and(|l| l.len() >= count) {
            return;
        }
        assert!(Instant::now() < deadline, "the daemons did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rss_and_cpu(pid: u32) -> (i64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (rss, ticks / 100.0)
}

/// A `wxpush run` started for `--instances`, serving /metrics on `port`.
struct Daemon {
    child: std::process::Child,
    port: u16,
}

/// What the `--kill-one` thread did.
struct Killed {
    /// When the SIGKILL went out.
    at: Instant,
    /// Messages the fake had accepted then.
    accepted: u64,
    /// Whether the send was still running (the threshold was reached).
    mid_run: bool,
    /// What the victim had sent, by its /metrics just before.
    sent: Option<u64>,
    /// Its peak RSS, KiB, just before.
    rss: i64,
}

/// A loopback port nobody listens on right now.
/// The messages a daemon sent (`wxpush_sends_total{outcome="sent"}` on its
/// /metrics), or `None` when it does not answer.
fn daemon_sent(port: u16) -> Option<u64> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("wxpush_sends_total{") && l.contains("outcome=\"sent\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    if a.instances > 1 && !a.postgres {
        eprintln!("bench: --instances needs --database postgres (SQLite has one sender per job)");
        std::process::exit(2);
    }
    if a.kill_one && a.instances < 2 {
        eprintln!("bench: --kill-one needs --instances 2 or more");
        std::process::exit(2);
    }
    let db_url = if let Ok(u) = std::env::var("WXPUSH_BENCH_DB") {
        u
    } else if a.postgres {
        testpg::cluster()
            .unwrap_or_else(|why| {
                eprintln!("bench: --database postgres: {why}");
                std::process::exit(2)
            })
            .database()
    } else {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    };

    // A job that fires once a year: an idle daemon only waits, and daemons
    // started for `--instances` only join the send's runs.
    let config_for = |fake: &FakeWechat| {
        write_config(
            dir.path(),
            &db_url,
            &fake.base_url(),
            a.concurrency,
            "0 0 0 1 1 *",
            &a.lease,
            &policy_toml(&a.policy),
        )
    };

    if a.idle_secs > 0 {
        let fake = FakeWechat::start(fake_options(&a)).await;
        let config = config_for(&fake);
        let mut child = wxpush(&a, &config, &["run"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss0, cpu0) = rss_and_cpu(child.id());
        tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
        let (rss1, cpu1) = rss_and_cpu(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        println!("idle_seconds: {}", a.idle_secs);
        println!("idle_rss_kib: {rss1} (at start of window {rss0})");
        println!("idle_cpu_seconds_in_window: {:.2}", cpu1 - cpu0);
        return;
    }

    // The fake's own ceiling, without added latency or errors.
    let raw = FakeOptions {
        keep_bodies: false,
        ..FakeOptions::default()
    };
    let capacity = fake_capacity(raw, 64, 2).await;
    // With --kill-one the fake keeps what it accepted, to count it per openid.
    let fake = FakeWechat::start(FakeOptions {
        keep_bodies: a.kill_one,
        ..fake_options(&a)
    })
    .await;
    let config = config_for(&fake);

    let csv = dir.path().join("recipients.csv");
    write_recipients(&csv, a.n);
    let (_, import_wall, import_rss, _) = measured(wxpush(
        &a,
        &config,
        &[
            "recipients",
            "import",
            csv.to_str().unwrap(),
            "--job",
            "bench",
        ],
    ));

    // The other instances: daemons that join the measured send's run. Each
    // serves /metrics on a port of its own, for the messages it sent.
    let mut daemons: Vec<Daemon> = (1..a.instances)
        .map(|_| {
            let port = free_port();
            let mut c = wxpush(&a, &config, &["run"]);
            c.env("WXPUSH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .stdout(std::process::Stdio::null());
            Daemon {
                child: c.spawn().expect("start a daemon"),
                port,
            }
        })
        .collect();
    if !daemons.is_empty() {
        wait_for_instances(&a, &config, daemons.len());
    }
    let send_done = Arc::new(AtomicBool::new(false));
    let killer = a.kill_one.then(|| {
        let mut victim = daemons.remove(0);
        let fake = fake.clone();
        let send_done = Arc::clone(&send_done);
        let threshold = (a.n as u64 * 3) / 10;
        std::thread::spawn(move || {
            while fake.accepted_count() < threshold && !send_done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            // Just before: what it sent so far, and its memory.
            let mid_run = !send_done.load(Ordering::Relaxed);
            let sent = daemon_sent(victim.port);
            let rss = peak_rss(victim.child.id());
            victim.child.kill().expect("kill -9 a daemon");
            let killed = Instant::now();
            let at = fake.accepted_count();
            victim.child.wait().unwrap();
            Killed {
                at: killed,
                accepted: at,
                mid_run,
                sent,
                rss,
            }
        })
    });

    let tokens_before = fake.token_requests();
    let accepted_before = fake.accepted_count();
    let self_cpu = || {
        // SAFETY: rusage is plain data filled by the kernel for this process.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        u.ru_utime.tv_sec as f64
            + u.ru_utime.tv_usec as f64 / 1e6
            + u.ru_stime.tv_sec as f64
            + u.ru_stime.tv_usec as f64 / 1e6
    };
    let fake_cpu_before = self_cpu();
    // After a kill, the dead daemon's requests in flight end `unknown`: exit 1.
    let allowed = if a.kill_one { 1 } else { 0 };
    let (out, wall, rss, cpu) = measured_allowing(
        wxpush(&a, &config, &["send", "bench", "--again", "--json"]),
        allowed,
    );
    let finished = Instant::now();
    send_done.store(true, Ordering::Relaxed);
    let killed = killer.map(|k| k.join().expect("the killer thread"));
    let daemon_rss: Vec<i64> = daemons.iter().map(|d| peak_rss(d.child.id())).collect();
    // The first run only: the second one below sends to everyone again.
    let daemon_sent_first: Vec<Option<u64>> = daemons.iter().map(|d| daemon_sent(d.port)).collect();
    let accepted_first = fake.accepted_count() - accepted_before;
    let accepted_per_openid: HashMap<String, usize> = if a.kill_one {
        let mut m = HashMap::new();
        for x in fake.accepted() {
            *m.entry(x.touser).or_default() += 1;
        }
        m
    } else {
        HashMap::new()
    };
    let fake_cpu = self_cpu() - fake_cpu_before;
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("send --json output");
    let tokens_first = fake.token_requests() - tokens_before;
    let fake_added = fake.mean_added_latency();

    // A second run with the token now cached: it must fetch none.
    let accepted_before_second = fake.accepted_count();
    let (out2, wall2, _, cpu2) =
        measured(wxpush(&a, &config, &["send", "bench", "--again", "--json"]));
    let second: serde_json::Value = serde_json::from_str(out2.trim()).unwrap();
    let accepted_second = fake.accepted_count() - accepted_before_second;
    let tokens_second = second["token_requests"].as_u64().unwrap();

    for d in &mut daemons {
        // SIGTERM: a clean stop.
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
        d.child.wait().unwrap();
    }
    let store = wxpush::storage::Store::open(&db_url).await.unwrap();
    let run_id = summary["runs"][0].as_i64().unwrap();
    let wxpush::storage::RunAudit {
        total,
        sent,
        distinct_sent: distinct,
        max_per_openid: max_per,
    } = store.audit_run(run_id).await.unwrap();

    let seq_rate = if a.seq > 0 {
        sequential(fake_options(&a), a.seq).await
    } else {
        0.0
    };
    let rate = a.n as f64 / wall.as_secs_f64();
    let bound = if a.latency_ms > 0 {
        a.concurrency as f64 * 1000.0 / a.latency_ms as f64
    } else {
        f64::NAN
    };

    println!(
        "database: {}",
        if a.postgres { "postgres" } else { "sqlite" }
    );
    println!("instances: {}", a.instances);
    println!("policy: {}", a.policy);
    println!("n: {}", a.n);
    println!("concurrency: {}", a.concurrency);
    println!("fake_latency_ms: {}", a.latency_ms);
    if let Some(added) = fake_added {
        println!(
            "fake_added_latency_ms_mean: {:.2} (measured inside the fake)",
            added.as_secs_f64() * 1000.0
        );
    }
    println!("fake_busy_rate: {}", a.busy_rate);
    println!("fake_capacity_req_per_s: {capacity:.0}");
    println!(
        "import_wall_s: {:.2} (peak RSS {} KiB)",
        import_wall.as_secs_f64(),
        import_rss
    );
    println!("send_wall_s: {:.3}", wall.as_secs_f64());
    println!(
        "run_s: {:.3} (the run's drain, as the send reports it; the rest is start-up)",
        summary["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    println!("send_cpu_s: {cpu:.2} (wxpush; the fake used {fake_cpu:.2})");
    println!(
        "cpu_us_per_message: {:.1} wxpush + {:.1} fake",
        cpu * 1e6 / a.n as f64,
        fake_cpu * 1e6 / a.n as f64
    );
    println!("messages_per_s: {rate:.0}");
    println!(
        "second_send_wall_s: {:.3} (cpu {cpu2:.2} s; {} requests accepted by the fake; {} suppressed)",
        wall2.as_secs_f64(),
        accepted_second,
        second["counts"]["suppressed"]
    );
    if bound.is_finite() {
        println!("latency_bound_msg_per_s: {bound:.0} (C / latency)");
        println!("share_of_bound: {:.1}%", 100.0 * rate / bound);
    }
    println!("send_requests: {}", summary["requests"]);
    println!("p50_send_latency_ms: {}", summary["latency_p50_ms"]);
    println!("p99_send_latency_ms: {}", summary["latency_p99_ms"]);
    println!("peak_rss_kib: {rss}");
    if !daemon_rss.is_empty() {
        println!("daemon_peak_rss_kib: {daemon_rss:?}");
    }
    if let Some(k) = &killed {
        println!(
            "killed_daemon_peak_rss_kib: {} (just before the kill)",
            k.rss
        );
    }
    let shown = |v: &Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    if a.instances > 1 {
        let daemons_sent: u64 = daemon_sent_first.iter().map(|v| v.unwrap_or(0)).sum();
        let rest = (sent as u64).saturating_sub(daemons_sent);
        let listed: Vec<String> = daemon_sent_first.iter().map(shown).collect();
        match &killed {
            None => println!(
                "sent_by_instance: send {rest}, daemons [{}] (by their /metrics)",
                listed.join(", ")
            ),
            Some(k) => println!(
                "sent_by_instance: surviving daemons [{}], killed daemon {} by its /metrics just before the kill, send and killed daemon {rest} together",
                listed.join(", "),
                shown(&k.sent)
            ),
        }
    }
    println!(
        "fake_accepted_first_run: {accepted_first} (of {} recipients)",
        a.n
    );
    let mut duplicates = 0;
    if let Some(k) = &killed {
        let deliveries = store.deliveries(run_id).await.unwrap();
        let unknown = deliveries
            .iter()
            .filter(|d| d.status == wxpush::domain::Status::Unknown)
            .count();
        let mut sent_rows: HashMap<&str, usize> = HashMap::new();
        for d in &deliveries {
            if d.status == wxpush::domain::Status::Sent {
                *sent_rows.entry(d.openid.as_str()).or_default() += 1;
            }
        }
        let twice_at_fake = accepted_per_openid.values().filter(|&&c| c > 1).count();
        let twice_sent = sent_rows.values().filter(|&&c| c > 1).count();
        duplicates = (0..a.n)
            .map(bench_openid)
            .filter(|o| {
                accepted_per_openid.get(o).is_some_and(|&c| c > 1)
                    || sent_rows.get(o.as_str()).is_some_and(|&c| c > 1)
            })
            .count();
        println!(
            "killed_at_accepted: {} of {}{}",
            k.accepted,
            a.n,
            if k.mid_run {
                ""
            } else {
                " (NOT mid-run: the send had finished first)"
            }
        );
        println!(
            "recovery_s: {:.2} (from the kill until the run was done)",
            (finished - k.at).as_secs_f64()
        );
        println!(
            "unknown_after_kill: {unknown} (at most the victim's concurrency, {})",
            a.concurrency
        );
        println!(
            "duplicates: {duplicates} (recipients the fake accepted more than once: {twice_at_fake}; with more than one sent row: {twice_sent})"
        );
    }
    println!("token_requests_first_run: {tokens_first}");
    println!("token_requests_cached_run: {tokens_second}");
    if a.kill_one {
        // The victim's requests in flight are `unknown`: at most one for anyone.
        println!(
            "at_most_one_sent_per_recipient: {} (rows {total}, sent {sent}, distinct {distinct}, max per openid {max_per})",
            total == a.n as i64 && sent == distinct && max_per <= 1
        );
    } else {
        println!(
            "exactly_one_sent_per_recipient: {} (rows {total}, sent {sent}, distinct {distinct}, max per openid {max_per})",
            total == a.n as i64 && sent == a.n as i64 && distinct == a.n as i64 && max_per == 1
        );
    }
    if a.seq > 0 {
        println!(
            "sequential_loop_msg_per_s: {seq_rate:.0} ({} requests, one at a time)",
            a.seq
        );
        println!("speedup_over_sequential: {:.1}x", rate / seq_rate);
    }
    if duplicates > 0 {
        eprintln!("bench: {duplicates} recipients got more than one message");
        std::process::exit(1);
    }
}
