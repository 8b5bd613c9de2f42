//! The status page's benchmark: how fast its pages answer on SQLite with a run
//! of a million deliveries and 100 jobs, and whether polling it slows a run.
//!
//! Usage (scripts/status-bench.sh builds in release mode first):
//!   status_bench --wxpush target/release/wxpush [--deliveries 1000000]
//!                [--jobs 100] [--requests 200] [--n 100000] [--pairs 3]
//!
//! It starts the fake WeChat, writes a config with `--jobs` jobs (each with a
//! finished run of 100 deliveries) and a `bench` job of `--n` recipients,
//! writes one finished run of `--deliveries` deliveries straight into the
//! database (97 % sent, 2 % refused with 43101, 1 % failed), then starts
//! `wxpush run` and times `--requests` sequential requests per page after one
//! cold request (the first look at a finished run counts it; later looks use
//! the counts kept for it). Then `--pairs` alternated pairs of `wxpush send
//! bench --again`: once alone, once with the run detail, the runs list and the
//! overview each fetched every second meanwhile (in turn first), messages per
//! second of each.
//!
//! Prints one `key: value` line per figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_wechat::{FakeOptions, FakeWechat};

#[path = "support/mod.rs"]
#[allow(dead_code)] // each benchmark uses its part
mod support;
use support::{bench_template, free_port, write_recipients};

struct Args {
    wxpush: PathBuf,
    deliveries: u64,
    jobs: usize,
    requests: usize,
    n: usize,
    pairs: usize,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: &str| -> String {
        argv.iter()
            .position(|a| a == &format!("--{name}"))
            .and_then(|i| argv.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let num = |name: &str, default: &str| -> u64 {
        get(name, default).parse().unwrap_or_else(|_| {
            eprintln!("status_bench: --{name} wants a number");
            std::process::exit(2)
        })
    };
    Args {
        wxpush: PathBuf::from(get("wxpush", "target/release/wxpush")),
        deliveries: num("deliveries", "1000000"),
        jobs: num("jobs", "100") as usize,
        requests: num("requests", "200") as usize,
        n: num("n", "100000") as usize,
        pairs: num("pairs", "3") as usize,
    }
}

fn write_config(dir: &Path, db_url: &str, api_base: &str, port: u16, jobs: usize) -> PathBuf {
    let mut text = format!(
        "[wechat]\nappid = \"wx0123456789abcdef\"\napi_base = \"{api_base}\"\ntimeout = \"10s\"\n\
         [database]\nurl = \"{db_url}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
         [delivery]\nconcurrency = 64\n[log]\nlevel = \"warn\"\n"
    );
    for j in std::iter::once("bench".to_owned()).chain((0..jobs).map(|i| format!("job-{i:03}"))) {
        text.push_str(&format!(
            "[[jobs]]\nname = \"{j}\"\ncron = \"0 0 0 1 1 *\"\ntemplate_id = \"tmpl-bench\"\n\
             [jobs.data]\nthing1 = \"{{{{name}}}} check in\"\ndate2 = \"{{{{today}}}}\"\n"
        ));
    }
    let path = dir.join("status-bench.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wxpush(a: &Args, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(&a.wxpush);
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("WXPUSH__WECHAT__SECRET", "test-secret");
    c
}

/// Writes finished runs straight into the database: one of `big` deliveries
/// (job `big`, not configured: an old job's run) and one of 100 for each job.
async fn populate(db_url: &str, big: u64, jobs: usize) -> i64 {
    use sqlx::ConnectOptions;
    let options: sqlx::sqlite::SqliteConnectOptions = db_url.parse().unwrap();
    let mut db = options.connect().await.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let slot = "2026-01-01T00:00:00Z";
    let runs = std::iter::once(("big".to_owned(), big))
        .chain((0..jobs).map(|j| (format!("job-{j:03}"), 100)));
    let mut big_id = 0;
    for (job, n) in runs {
        sqlx::query(
            "INSERT INTO runs (job, slot, trigger, status, created_at, finished_at, template_id, appid) \
             VALUES (?, ?, 'manual', 'done', ?, ?, 'tmpl-bench', 'wx0123456789abcdef')",
        )
        .bind(&job)
        .bind(slot)
        .bind(&now)
        .bind(&now)
        .execute(&mut db)
        .await
        .unwrap();
        let id: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
            .fetch_one(&mut db)
            .await
            .unwrap();
        if job == "big" {
            big_id = id;
        }
        sqlx::query(
            "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) \
             INSERT INTO deliveries (run_id, openid, status, errcode, errmsg, msgid, attempts, created_at, updated_at) \
             SELECT ?, printf('oBig%024d', i), \
             CASE WHEN i % 100 < 2 THEN 'refused' WHEN i % 100 = 2 THEN 'failed' ELSE 'sent' END, \
             CASE WHEN i % 100 < 2 THEN 43101 WHEN i % 100 = 2 THEN 40003 ELSE NULL END, \
             CASE WHEN i % 100 < 3 THEN 'scripted' ELSE NULL END, \
             CASE WHEN i % 100 >= 3 THEN printf('%d', 1000000000 + i) ELSE NULL END, 1, ?, ? FROM k",
        )
        .bind(n as i64)
        .bind(id)
        .bind(&now)
        .bind(&now)
        .execute(&mut db)
        .await
        .unwrap();
    }
    big_id
}

/// `requests` sequential GETs of `path` after one cold one: (cold, p50, p99, max) in ms.
async fn time_page(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    requests: usize,
) -> (f64, f64, f64, f64) {
    let get = || async {
        let t = Instant::now();
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.unwrap();
        t.elapsed().as_secs_f64() * 1000.0
    };
    let cold = get().await;
    let mut ms = Vec::with_capacity(requests);
    for _ in 0..requests {
        ms.push(get().await);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (cold, at(0.5), at(0.99), *ms.last().unwrap())
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("status.db").display());
    let fake = FakeWechat::start(FakeOptions {
        keep_bodies: false,
        templates: vec![bench_template()],
        ..FakeOptions::default()
    })
    .await;
    let port = free_port();
    let config = write_config(dir.path(), &db_url, &fake.base_url(), port, a.jobs);
    let csv = dir.path().join("recipients.csv");
    write_recipients(&csv, a.n);
    let import = wxpush(
        &a,
        &config,
        &[
            "recipients",
            "import",
            csv.to_str().unwrap(),
            "--job",
            "bench",
        ],
    )
    .output()
    .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let started = Instant::now();
    let big = populate(&db_url, a.deliveries, a.jobs).await;
    println!(
        "populate_s: {:.1} ({} deliveries in run {big}, {} jobs' runs of 100)",
        started.elapsed().as_secs_f64(),
        a.deliveries,
        a.jobs
    );

    let mut daemon = wxpush(&a, &config, &["run"]).spawn().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, path) in [
        ("run_detail", format!("/status/runs/{big}")),
        (
            "run_detail_status_refused",
            format!("/status/runs/{big}?status=refused"),
        ),
        (
            "run_detail_status_failed",
            format!("/status/runs/{big}?status=failed"),
        ),
        (
            "run_detail_errcode_43101",
            format!("/status/runs/{big}?errcode=43101"),
        ),
        (
            "run_detail_errcode_none",
            format!("/status/runs/{big}?errcode=99999"),
        ),
        (
            "run_detail_status_pending",
            format!("/status/runs/{big}?status=pending"),
        ),
        (
            "run_detail_page_5000",
            format!("/status/runs/{big}?after=500000"),
        ),
        ("run_detail_json", format!("/v1/status/runs/{big}")),
        ("overview", "/status".to_owned()),
        ("runs_list", "/status/runs".to_owned()),
        ("consent", "/status/consent".to_owned()),
    ] {
        let (cold, p50, p99, max) = time_page(&http, &base, &path, a.requests).await;
        println!(
            "{name}_ms: cold {cold:.1}, p50 {p50:.2}, p99 {p99:.2}, max {max:.2} ({} requests)",
            a.requests
        );
    }

    // The sender with and without the page polled every second.
    let mut rates = (Vec::new(), Vec::new());
    for pair in 0..a.pairs {
        // ABBA: each pair's first run in turn, since every run adds to the
        // database and a later run is a little slower.
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for polled in order {
            let stop = Arc::new(AtomicBool::new(false));
            let polls = Arc::new(AtomicU64::new(0));
            let poller = polled.then(|| {
                let (http, base, stop, polls) = (
                    http.clone(),
                    base.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&polls),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        for path in [
                            "/status".to_owned(),
                            "/status/runs".to_owned(),
                            format!("/status/runs/{big}"),
                        ] {
                            let _ = http
                                .get(format!("{base}{path}"))
                                .send()
                                .await
                                .map(|r| r.bytes());
                            polls.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            });
            let t = Instant::now();
            let out = wxpush(&a, &config, &["send", "bench", "--again"])
                .output()
                .unwrap();
            let wall = t.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            if let Some(p) = poller {
                p.await.unwrap();
            }
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rate = a.n as f64 / wall;
            println!(
                "pair {pair} {}: {rate:.0} messages/s ({wall:.2} s, {} page fetches)",
                if polled { "polled" } else { "alone" },
                polls.load(Ordering::Relaxed)
            );
            if polled {
                rates.1.push(rate)
            } else {
                rates.0.push(rate)
            }
        }
    }
    if rates.0.is_empty() {
        let _ = daemon.kill();
        let _ = daemon.wait();
        return;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (alone, polled) = (median(&mut rates.0), median(&mut rates.1));
    println!("throughput_alone_median: {alone:.0} messages/s");
    println!(
        "throughput_polled_median: {polled:.0} messages/s ({:+.1} %)",
        (polled / alone - 1.0) * 100.0
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
