//! An audience from the operator's own database (#14): N rows from a PostgreSQL
//! source, read once for a slot and streamed into the run.
//!
//! Usage (release builds):
//!   bench_query --wxpush target/release/wxpush [--rows 100000,1000000]
//!               [--concurrency 16]
//!
//! For each N: a throwaway PostgreSQL cluster (as the tests start one) gets a
//! `members` table of N rows; `wxpush send points --again` runs the job whose
//! query reads them, against an in-process fake WeChat. Printed per N: the time
//! from the start to the first message accepted, the query-to-commit time of
//! the snapshot (wxpush's `audience query read` log line), the time until all N
//! were accepted, and the process's peak RSS (VmHWM). Exits 1 unless every row
//! got exactly one message.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_wechat::{FakeOptions, FakeTemplate, FakeWechat};

struct Args {
    wxpush: PathBuf,
    rows: Vec<usize>,
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
        rows: get("rows", "100000,1000000")
            .split(',')
            .map(|n| n.trim().parse().expect("--rows"))
            .collect(),
        concurrency: get("concurrency", "16").parse().expect("--concurrency"),
    }
}

fn hwm_kib(pid: u32) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

struct Outcome {
    first_send: Duration,
    snapshot_ms: u64,
    all_sent: Duration,
    peak_rss_kib: i64,
    exact: bool,
}

async fn scenario(a: &Args, rows: usize) -> Outcome {
    let cluster = testpg::cluster().expect("PostgreSQL server binaries");
    let url = cluster.database();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE members AS SELECT 'oQ' || lpad(g::text, 26, '0') AS openid, \
         'P' || g AS nickname, g % 1000 AS points, DATE '2026-12-01' AS expire_on \
         FROM generate_series(1, $1) g",
    )
    .bind(rows as i64)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let fake = FakeWechat::start(FakeOptions {
        appid: "wx0123456789abcdef".into(),
        secret: "secret".into(),
        keep_bodies: false,
        templates: vec![FakeTemplate {
            id: "tmpl-points".into(),
            title: "points".into(),
            content: "{{thing1.DATA}}{{number2.DATA}}{{date3.DATA}}".into(),
            kind: 3,
            everyone_subscribed: true,
        }],
        ..FakeOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[wechat]\nappid = \"wx0123456789abcdef\"\napi_base = \"{}\"\n\n\
             [database]\nurl = \"sqlite://{}/bench.db\"\n\n[delivery]\nconcurrency = {}\n\n\
             [log]\nlevel = \"info\"\n\n[http]\nenabled = false\n\n\
             [sources.shop]\nurl = \"{url}\"\ntimeout = \"10m\"\n\n\
             [[jobs]]\nname = \"points\"\ncron = \"0 0 9 * * *\"\ntimezone = \"Asia/Shanghai\"\n\
             template_id = \"tmpl-points\"\naudience = \"query\"\nsource = \"shop\"\n\
             query = \"SELECT openid, nickname AS name, points, expire_on FROM members\"\n\
             [jobs.data]\nthing1 = \"{{{{name|会员}}}} 积分\"\nnumber2 = \"{{{{points}}}}\"\ndate3 = \"{{{{expire_on}}}}\"\n",
            fake.base_url(),
            dir.path().display(),
            a.concurrency
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut child = Command::new(&a.wxpush)
        .arg("--config")
        .arg(&config)
        .args(["send", "points", "--again"])
        .env("WXPUSH__WECHAT__SECRET", "secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    // Read to the end: a reader that stopped would leave wxpush blocked on
    // (or killed by) a full pipe.
    let snapshot = std::thread::spawn(move || {
        let mut took = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("audience query read") {
                took = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("took_ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            } else if line.contains("ERROR") || line.starts_with("wxpush:") {
                eprintln!("{line}");
            }
        }
        took
    });
    let mut first_send = None;
    let mut peak = 0;
    let deadline = started + Duration::from_secs(1800);
    while fake.accepted_count() < rows as u64 {
        assert!(Instant::now() < deadline, "the run never finished");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "wxpush ended early ({status}) after {} messages",
                fake.accepted_count()
            );
        }
        if first_send.is_none() && fake.accepted_count() > 0 {
            first_send = Some(started.elapsed());
        }
        peak = peak.max(hwm_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_sent = started.elapsed();
    peak = peak.max(hwm_kib(pid).unwrap_or(0));
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each row one delivery (the run's unique key), each recorded sent, and no
    // message more than the sent rows: exactly one each.
    let runs = Command::new(&a.wxpush)
        .arg("--config")
        .arg(&config)
        .args(["runs", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let counts = &runs[0]["counts"];
    let exact = fake.accepted_count() == rows as u64
        && counts["total"] == rows as u64
        && counts["sent"] == rows as u64;
    Outcome {
        first_send: first_send.unwrap_or(all_sent),
        snapshot_ms: snapshot.join().unwrap_or(0),
        all_sent,
        peak_rss_kib: peak,
        exact,
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    println!(
        "source: PostgreSQL; store: SQLite; concurrency: {}",
        a.concurrency
    );
    let mut exact = true;
    for &rows in &a.rows {
        let o = scenario(&a, rows).await;
        println!(
            "rows {rows}: first_send_s {:.3}, snapshot_query_to_commit_s {:.3}, all_sent_s {:.3}, msg_per_s {:.0}, peak_rss_kib {}, exactly_one_each {}",
            o.first_send.as_secs_f64(),
            o.snapshot_ms as f64 / 1000.0,
            o.all_sent.as_secs_f64(),
            rows as f64 / o.all_sent.as_secs_f64(),
            o.peak_rss_kib,
            o.exact
        );
        exact &= o.exact;
    }
    if !exact {
        eprintln!("a row did not get exactly one message");
        std::process::exit(1);
    }
}
