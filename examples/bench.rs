//! The wxpush benchmark: a real `wxpush send` against the fake WeChat on 127.0.0.1.
//!
//! Usage (see scripts/bench.sh, which builds everything in release mode first):
//!   bench --wxpush target/release/wxpush [--n 10000] [--concurrency 64]
//!         [--latency-ms 0] [--busy-rate 0] [--rate-limit 0] [--seq 20000] [--idle-secs 0]
//!         [--database sqlite|postgres] [--instances 1] [--kill-one 0|1]
//!
//! `--database postgres` runs on a throwaway cluster (testpg). `--instances K`
//! (PostgreSQL) starts K-1 `wxpush run` daemons first; they join the measured
//! `send`'s run. `--kill-one 1` kills one daemon with SIGKILL when 30 % of the
//! messages are accepted and measures how long the others take to finish.
//!
//! Prints one `key: value` line per figure. Every figure comes from this run.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_wechat::{FakeOptions, FakeTemplate, FakeWechat};

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
}

fn args() -> Args {
    let mut map: HashMap<String, String> = HashMap::new();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let key = pair[0].trim_start_matches("--").to_owned();
        map.insert(key, pair.get(1).cloned().unwrap_or_default());
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
            other => panic!("--database {other}: sqlite or postgres"),
        },
        instances: get("instances", "1").parse().expect("--instances"),
        kill_one: get("kill-one", "0") == "1",
    }
}

fn fake_options(a: &Args) -> FakeOptions {
    FakeOptions {
        latency: Duration::from_millis(a.latency_ms),
        busy_rate: a.busy_rate,
        rate_limit_per_sec: a.rate_limit,
        keep_bodies: false,
        // Long-term and subscribed by everyone: sends are gated by consent (no
        // rejection on record) as in production, and every one is accepted.
        templates: vec![FakeTemplate {
            id: "tmpl-bench".into(),
            title: "bench".into(),
            content: "{{thing1.DATA}}{{date2.DATA}}".into(),
            kind: 3,
            everyone_subscribed: true,
        }],
        ..FakeOptions::default()
    }
}

fn write_config(
    dir: &Path,
    db_url: &str,
    api_base: &str,
    concurrency: usize,
    cron: &str,
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
"#,
        // Daemons joining the send's run check every third of it. Only where it
        // matters: builds from before it (A/B runs on SQLite) refuse the key.
        lease = if db_url.starts_with("postgres") {
            "instance_lease = \"1s\"\n"
        } else {
            ""
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
    let db_url = if a.postgres {
        testpg::cluster()
            .unwrap_or_else(|why| {
                eprintln!("bench: --database postgres: {why}");
                std::process::exit(2)
            })
            .database()
    } else {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    };

    if a.idle_secs > 0 {
        let fake = FakeWechat::start(fake_options(&a)).await;
        // A job that fires once a year: the daemon only waits.
        let config = write_config(
            dir.path(),
            &db_url,
            &fake.base_url(),
            a.concurrency,
            "0 0 0 1 1 *",
        );
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
    let fake = FakeWechat::start(fake_options(&a)).await;
    // Once a year: daemons started for `--instances` only join the send's runs.
    let config = write_config(
        dir.path(),
        &db_url,
        &fake.base_url(),
        a.concurrency,
        "0 0 0 1 1 *",
    );

    let csv = dir.path().join("recipients.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(f, "openid,name").unwrap();
        for i in 0..a.n {
            writeln!(f, "oBench{i:022},user{}", i % 1000).unwrap();
        }
    }
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

    // The other instances: daemons that join the measured send's run.
    let mut daemons: Vec<std::process::Child> = (1..a.instances)
        .map(|_| {
            let mut c = wxpush(&a, &config, &["run"]);
            c.env("WXPUSH__HTTP__ENABLED", "false")
                .stdout(std::process::Stdio::null());
            c.spawn().expect("start a daemon")
        })
        .collect();
    if !daemons.is_empty() {
        wait_for_instances(&a, &config, daemons.len());
    }
    let killer = a.kill_one.then(|| {
        let victim = daemons.remove(0);
        let fake = fake.clone();
        let threshold = (a.n as u64 * 3) / 10;
        std::thread::spawn(move || {
            let mut victim = victim;
            while fake.accepted_count() < threshold {
                std::thread::sleep(Duration::from_millis(2));
            }
            victim.kill().expect("kill -9 a daemon");
            let killed = Instant::now();
            let at = fake.accepted_count();
            victim.wait().unwrap();
            (killed, at)
        })
    });

    let tokens_before = fake.token_requests();
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
    let killed = killer.map(|k| k.join().expect("the killer thread"));
    let daemon_rss: Vec<i64> = daemons.iter().map(|d| peak_rss(d.id())).collect();
    let fake_cpu = self_cpu() - fake_cpu_before;
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("send --json output");
    let tokens_first = fake.token_requests() - tokens_before;
    let fake_added = fake.mean_added_latency();

    // A second run with the token now cached: it must fetch none.
    let (out2, _, _, _) = measured(wxpush(&a, &config, &["send", "bench", "--again", "--json"]));
    let second: serde_json::Value = serde_json::from_str(out2.trim()).unwrap();
    let tokens_second = second["token_requests"].as_u64().unwrap();

    for d in &mut daemons {
        // SIGTERM: a clean stop.
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(d.id() as libc::pid_t, libc::SIGTERM) };
        d.wait().unwrap();
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
    if let Some((killed, at)) = killed {
        let unknown = store
            .deliveries(run_id)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.status == wxpush::storage::Status::Unknown)
            .count();
        let twice = (0..a.n)
            .filter(|i| fake.accepted_for(&format!("oBench{i:022}")) > 1)
            .count();
        println!("killed_at_accepted: {at} of {}", a.n);
        println!(
            "recovery_s: {:.2} (from the kill until the run was done)",
            (finished - killed).as_secs_f64()
        );
        println!(
            "unknown_after_kill: {unknown} (at most the victim's concurrency, {})",
            a.concurrency
        );
        println!("duplicates: {twice} (recipients the fake accepted twice)");
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
}
