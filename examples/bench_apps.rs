//! Many mini programs in one daemon (#13): K apps with a job of N recipients
//! each, all firing at the same second, against one app with one job of K×N.
//!
//! Usage (release builds):
//!   bench_apps --wxpush target/release/wxpush [--apps 100] [--per-app 1000]
//!              [--concurrency 16]
//!
//! Each app has its own fake WeChat (its own AppID, secret and token). The daemon
//! is started with every job's cron at a second a little ahead; the time is
//! measured from that second until every fake has accepted its share. Printed:
//! the wall time and throughput of both scenarios, the daemon's RSS idle (before
//! the slot) and after, the token requests (one per app), and whether every
//! recipient got exactly one message (the benchmark exits 1 otherwise).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use fake_wechat::{FakeOptions, FakeTemplate, FakeWechat};

struct Args {
    wxpush: PathBuf,
    apps: usize,
    per_app: usize,
    concurrency: usize,
}

fn args() -> Args {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let get = |key: &str, default: &str| -> String {
        raw.iter()
            .position(|a| a == &format!("--{key}"))
            .and_then(|i| raw.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    Args {
        wxpush: PathBuf::from(get("wxpush", "target/release/wxpush")),
        apps: get("apps", "100").parse().expect("--apps"),
        per_app: get("per-app", "1000").parse().expect("--per-app"),
        concurrency: get("concurrency", "16").parse().expect("--concurrency"),
    }
}

fn appid(i: usize) -> String {
    format!("wx{:016x}", 0x1000 + i)
}

async fn fake(i: usize) -> FakeWechat {
    FakeWechat::start(FakeOptions {
        appid: appid(i),
        secret: format!("secret-{i}"),
        keep_bodies: false,
        templates: vec![FakeTemplate {
            id: "tmpl-bench".into(),
            title: "bench".into(),
            content: "{{thing1.DATA}}".into(),
            kind: 3,
            everyone_subscribed: true,
        }],
        ..FakeOptions::default()
    })
    .await
}

/// The config: app 0 is `[wechat]`, the others `[apps.aI]`; job `jI` per app.
fn write_config(dir: &Path, fakes: &[FakeWechat], concurrency: usize, cron: &str) -> PathBuf {
    let mut text = format!(
        "[wechat]\nappid = \"{}\"\napi_base = \"{}\"\n\n[database]\nurl = \"sqlite://{}/bench.db\"\n\n\
         [delivery]\nconcurrency = {concurrency}\n\n[log]\nlevel = \"warn\"\n\n[http]\nenabled = false\n\n\
         [scheduler]\nreload_on_change = false\n",
        appid(0),
        fakes[0].base_url(),
        dir.display()
    );
    for (i, f) in fakes.iter().enumerate().skip(1) {
        text.push_str(&format!(
            "\n[apps.a{i}]\nappid = \"{}\"\napi_base = \"{}\"\n",
            appid(i),
            f.base_url()
        ));
    }
    for i in 0..fakes.len() {
        let app = if i == 0 {
            String::new()
        } else {
            format!("app = \"a{i}\"\n")
        };
        text.push_str(&format!(
            "\n[[jobs]]\nname = \"j{i}\"\n{app}cron = \"{cron}\"\ntimezone = \"UTC\"\ntemplate_id = \"tmpl-bench\"\n\
             [jobs.data]\nthing1 = \"{{{{name}}}} check in\"\n"
        ));
    }
    let path = dir.join("apps.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn command(a: &Args, config: &Path, fakes: usize) -> Command {
    let mut c = Command::new(&a.wxpush);
    c.arg("--config")
        .arg(config)
        .env("WXPUSH__WECHAT__SECRET", "secret-0");
    for i in 1..fakes {
        c.env(format!("WXPUSH__APPS__A{i}__SECRET"), format!("secret-{i}"));
    }
    c
}

/// Imports `n` recipients into job `jI` (openids unique across the run).
fn import(a: &Args, config: &Path, apps: usize, i: usize, n: usize, dir: &Path) {
    let csv = dir.join(format!("j{i}.csv"));
    let mut text = String::from("openid,name\n");
    for k in 0..n {
        text.push_str(&format!("oBench{i:04}{k:018},P{k}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let mut c = command(a, config, apps);
    c.args(["recipients", "import"])
        .arg(&csv)
        .args(["--job", &format!("j{i}")]);
    if i > 0 {
        c.args(["--app", &format!("a{i}")]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    wall: Duration,
    idle_rss: i64,
    busy_rss: i64,
    tokens: u64,
    exact: bool,
}

/// One scenario: `apps` apps of `per_app` recipients each.
async fn scenario(a: &Args, apps: usize, per_app: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut fakes = Vec::new();
    for i in 0..apps {
        fakes.push(fake(i).await);
    }
    // A yearly cron while importing; the slot is set once all is in place.
    let config = write_config(dir.path(), &fakes, a.concurrency, "0 0 0 1 1 *");
    for i in 0..apps {
        import(a, &config, apps, i, per_app, dir.path());
    }
    let at = Utc::now() + chrono::Duration::seconds(4);
    let cron = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    let config = write_config(dir.path(), &fakes, a.concurrency, &cron);
    let mut daemon: Child = command(a, &config, apps).arg("run").spawn().unwrap();
    let slot = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(at.timestamp() as u64);
    while std::time::SystemTime::now() < slot - Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_rss = rss_kib(daemon.id());
    while std::time::SystemTime::now() < slot {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let total = (apps * per_app) as u64;
    let deadline = started + Duration::from_secs(600);
    let mut busy_rss = 0;
    while fakes.iter().map(FakeWechat::accepted_count).sum::<u64>() < total {
        assert!(Instant::now() < deadline, "the run never finished");
        busy_rss = busy_rss.max(rss_kib(daemon.id()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed();
    // A moment for anything sent twice to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exact = fakes.iter().all(|f| f.accepted_count() == per_app as u64);
    let tokens = fakes.iter().map(FakeWechat::token_requests).sum();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    Outcome {
        wall,
        idle_rss,
        busy_rss,
        tokens,
        exact,
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let total = a.apps * a.per_app;
    println!(
        "apps: {}, recipients per app: {}, concurrency: {}",
        a.apps, a.per_app, a.concurrency
    );
    let one = scenario(&a, 1, total).await;
    let many = scenario(&a, a.apps, a.per_app).await;
    for (name, o) in [("one_app", &one), ("many_apps", &many)] {
        println!(
            "{name}: wall_s {:.3}, msg_per_s {:.0}, idle_rss_kib {}, peak_rss_kib {}, token_requests {}, exactly_one_each {}",
            o.wall.as_secs_f64(),
            total as f64 / o.wall.as_secs_f64(),
            o.idle_rss,
            o.busy_rss,
            o.tokens,
            o.exact
        );
    }
    println!(
        "many_apps_throughput_vs_one: {:.2}x",
        one.wall.as_secs_f64() / many.wall.as_secs_f64()
    );
    if !(one.exact && many.exact) {
        eprintln!("a recipient did not get exactly one message");
        std::process::exit(1);
    }
}
