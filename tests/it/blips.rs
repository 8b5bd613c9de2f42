//! The database going away mid-run, as it does in production: PostgreSQL
//! restarted (`pg_ctl restart -m fast`) or stopped for a while under three
//! daemons. The run completes by itself once the database is back, nobody is
//! messaged twice, and the instances settle their own requests (recorded as
//! what WeChat answered, not `unknown`). Each test runs on a cluster of its
//! own, so that stopping it disturbs no other test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Three people per request slot in flight and a slow WeChat: requests are in
/// flight whenever the database goes.
const PEOPLE: usize = 600;
const LEASE: &str = "2s";

struct Cluster {
    pg: testpg::Private,
    env: TestEnv,
    ids: Vec<String>,
}

async fn cluster(test: &str) -> Option<Cluster> {
    let pg = testpg::private_or_skip(test)?;
    let (ids, body) = daily_audience(PEOPLE);
    let opts = FakeOptions {
        latency: Duration::from_millis(60),
        ..FakeOptions::default()
    };
    let mut env = TestEnv::new(opts, "concurrency = 4", &body).await;
    env.db_url = pg.database();
    env.write_config("concurrency = 4", &body);
    Some(Cluster { pg, env, ids })
}

/// A `wxpush run` on its own HTTP port, with the test's lease.
async fn daemon(env: &TestEnv) -> (tokio::process::Child, std::net::SocketAddr) {
    let addr = free_addr();
    let child = env
        .command(&["run"])
        .env("WXPUSH__HTTP__LISTEN", addr.to_string())
        .env("WXPUSH__DATABASE__INSTANCE_LEASE", LEASE)
        .spawn()
        .unwrap();
    wait_http(addr).await;
    (child, addr)
}

fn send(env: &TestEnv, args: &[&str]) -> tokio::process::Command {
    let mut c = env.command(args);
    c.env("WXPUSH__DATABASE__INSTANCE_LEASE", LEASE)
        .stdout(std::process::Stdio::piped());
    c
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Each recipient's status in run 1, once the database answers.
async fn statuses(env: &TestEnv) -> BTreeMap<String, String> {
    env.store()
        .await
        .deliveries(1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.openid, d.status.as_str().to_owned()))
        .collect()
}

/// Waits (at most 60 s) until run 1 is done, without anyone acting.
async fn run_done(env: &TestEnv) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(store) = wxpush::storage::Store::open(&env.db_url).await {
            let run = store.run(1).await.ok().flatten();
            store.close().await;
            if run.is_some_and(|r| r.status.as_str() == "done") {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run 1 never completed by itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nobody twice; every `sent` row was accepted once; at most `in_flight`
/// rows uncertain. Returns how many are `unknown`.
async fn nobody_twice(c: &Cluster, in_flight: usize) -> usize {
    let rows = statuses(&c.env).await;
    let unknown = rows.values().filter(|s| *s == "unknown").count();
    for id in &c.ids {
        let accepted = c.env.fake.accepted_for(id);
        assert!(accepted <= 1, "{id} got {accepted} messages");
        match rows[id].as_str() {
            "sent" => assert_eq!(accepted, 1, "{id} recorded sent"),
            "unknown" => {}
            other => panic!("{id} ended {other}"),
        }
    }
    assert!(
        unknown <= in_flight,
        "at most the {in_flight} requests in flight are uncertain, got {unknown}"
    );
    unknown
}

/// The sum of a metric's series that start with `name` and contain `label`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until WeChat has accepted `n` messages in all.
async fn accepted(c: &Cluster, n: u64) {
    wait_until(30, "the run to get going", || {
        c.env.fake.accepted_count() >= n
    })
    .await;
}

#[tokio::test]
async fn a_postgresql_restart_mid_run_under_three_daemons_completes_the_run_by_itself() {
    let Some(c) =
        cluster("a_postgresql_restart_mid_run_under_three_daemons_completes_the_run_by_itself")
            .await
    else {
        return;
    };
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(daemon(&c.env).await);
    }
    // The operator's manual send, which the daemons join.
    let sender = send(&c.env, &["send", "daily", "--again"]).spawn().unwrap();
    accepted(&c, 100).await;

    let blip = Instant::now();
    let at = c.env.fake.accepted_count();
    c.pg.restart_fast();
    let down_for = blip.elapsed();
    assert!(at < PEOPLE as u64 / 2, "restarted mid-run, at {at}");
    let sent = tokio::time::timeout(Duration::from_secs(30), sender.wait_with_output())
        .await
        .expect("send ends instead of hanging")
        .unwrap();
    let sent = Run::from(sent);
    let took = run_done(&c.env).await;

    eprintln!(
        "restart took {down_for:?}; run done {took:?} after it; send: {}",
        sent.stdout.trim()
    );
    // The sender met the restart (exit 3, saying the database failed) or
    // finished the run with the daemons after it.
    match sent.code {
        3 => assert!(sent.stdout.contains("the database failed"), "{sent:?}"),
        0 => {}
        _ => panic!("{sent:?}"),
    }
    // The daemons record their own answers: only the sender's, if it gave
    // up on writing them, can be uncertain.
    let unknown = nobody_twice(&c, 4).await;
    eprintln!("{unknown} unknown");
    assert_eq!(c.env.fake.accepted_count(), (PEOPLE - unknown) as u64);
    let mut database_stops = 0.0;
    for (child, addr) in &mut daemons {
        still_running(child);
        let (status, body) = get(*addr, "/readyz").await;
        assert_eq!(status, 200, "ready again once the run worked: {body}");
        let (_, metrics) = get(*addr, "/metrics").await;
        database_stops += metric(
            &metrics,
            "wxpush_runs_stopped_total{",
            "reason=\"database\"",
        );
    }
    assert!(
        database_stops >= 1.0 || sent.code == 3,
        "the restart stopped someone's share of the run"
    );
    for (mut child, _) in daemons {
        assert_eq!(stop(&mut child).await.code(), Some(0));
    }
}

#[tokio::test]
async fn a_database_stopped_longer_than_the_lease_fails_readiness_and_send_then_the_run_completes_with_no_instance_declared_dead()
 {
    let Some(c) =
        cluster("a_database_stopped_longer_than_the_lease_fails_readiness_and_send_then_the_run_completes_with_no_instance_declared_dead")
            .await
    else {
        return;
    };
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(daemon(&c.env).await);
    }
    let sender = send(&c.env, &["send", "daily", "--again"]).spawn().unwrap();
    accepted(&c, 100).await;

    // Down for longer than several tries, and longer than the lease (2 s):
    // every instance's heartbeat looks old when it is back, and none is
    // declared dead for it.
    c.pg.stop_fast();
    let stopped = Instant::now();
    // An operator's `send` while the database is away says so and exits 3.
    let during = tokio::time::timeout(
        Duration::from_secs(20),
        send(&c.env, &["send", "daily"]).output(),
    )
    .await
    .expect("send ends instead of hanging")
    .unwrap();
    let during = Run::from(during);
    let (status, body) = get(daemons[0].1, "/readyz").await;
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(stopped.elapsed())).await;
    c.pg.start();
    let down_for = stopped.elapsed();
    let first = tokio::time::timeout(Duration::from_secs(30), sender.wait_with_output())
        .await
        .expect("send ends instead of hanging")
        .unwrap();
    let first = Run::from(first);
    let took = run_done(&c.env).await;

    eprintln!("down {down_for:?}; run done {took:?} after it");
    eprintln!("first send: {}", first.stdout.trim());
    eprintln!(
        "send during the stop: {} {}",
        during.code,
        during.stderr.trim()
    );
    assert_eq!(first.code, 3, "{first:?}");
    assert!(first.stdout.contains("the database failed"), "{first:?}");
    assert!(
        first
            .stdout
            .contains("nobody was failed for it: the daemon resumes the run"),
        "and says the run is resumed: {first:?}"
    );
    assert_eq!(during.code, 3, "{during:?}");
    assert!(during.stderr.contains("database"), "{during:?}");
    assert!(!during.all().contains("panicked"), "{during:?}");
    assert_eq!(status, 503, "not ready while the database is away: {body}");
    let unknown = nobody_twice(&c, 4).await;
    eprintln!("{unknown} unknown");
    let mut database_stops = 0.0;
    let mut rescued = 0.0;
    for (child, addr) in &mut daemons {
        still_running(child);
        let (status, body) = get(*addr, "/readyz").await;
        assert_eq!(status, 200, "ready again once the run worked: {body}");
        let (_, metrics) = get(*addr, "/metrics").await;
        database_stops += metric(
            &metrics,
            "wxpush_runs_stopped_total{",
            "reason=\"database\"",
        );
        rescued += metric(&metrics, "wxpush_instances_rescued_total", "");
    }
    // The sender, if it could not leave in time; never a live daemon.
    assert!(rescued <= 1.0, "{rescued} instances declared dead");
    assert!(
        database_stops >= 1.0,
        "the daemons counted their runs stopped by the database"
    );
    for (mut child, _) in daemons {
        assert_eq!(stop(&mut child).await.code(), Some(0));
    }
}

#[tokio::test]
async fn send_waits_at_most_a_lease_for_rows_a_live_instance_holds_then_names_it() {
    let Some(pg) = testpg::private_or_skip(
        "send_waits_at_most_a_lease_for_rows_a_live_instance_holds_then_names_it",
    ) else {
        return;
    };
    let (ids, body) = daily_audience(1);
    let mut env = TestEnv::with(&body).await;
    env.db_url = pg.database();
    env.write_config("", &body);
    // WeChat takes the message and answers only after 6 s: the first send
    // holds it `sending` all that time, alive and heart-beating.
    env.fake
        .script(&ids[0], [Scripted::Hang(Duration::from_secs(6))]);
    let slow = || {
        let mut c = send(&env, &["send", "daily", "--again"]);
        c.env("WXPUSH__WECHAT__TIMEOUT", "20s")
            .env("WXPUSH__DATABASE__INSTANCE_LEASE", "1s");
        c
    };
    let holder = slow().spawn().unwrap();
    let holder_pid = holder.id().unwrap();
    wait_until(10, "the request to be in flight", || {
        env.fake.send_requests() >= 1
    })
    .await;

    let started = Instant::now();
    let waiter = tokio::time::timeout(
        Duration::from_secs(5),
        send(&env, &["send", "daily"])
            .env("WXPUSH__DATABASE__INSTANCE_LEASE", "1s")
            .output(),
    )
    .await
    .expect("a bounded wait, not a hang")
    .unwrap();
    let waited = started.elapsed();
    let waiter = Run::from(waiter);
    let holder = Run::from(holder.wait_with_output().await.unwrap());

    eprintln!("waited {waited:?}: {}", waiter.stdout.trim());
    assert_eq!(waiter.code, 3, "{waiter:?}");
    assert!(
        waiter.stdout.contains("still held by other instances")
            && waiter.stdout.contains("1 sending"),
        "{waiter:?}"
    );
    assert!(
        waiter.stdout.contains(&format!("-{holder_pid}-")),
        "names the holder's instance: {waiter:?}"
    );
    let listed = env.store().await.instances().await.unwrap();
    assert!(listed.is_empty(), "both left: {listed:?}");
    assert_eq!(holder.code, 0, "{holder:?}");
    assert_eq!(env.fake.accepted_for(&ids[0]), 1);
    assert_eq!(statuses(&env).await[&ids[0]], "sent");
}

/// 09:00 in Shanghai, `daily`'s slot, on a Monday.
fn nine_am() -> chrono::DateTime<chrono::Utc> {
    "2026-01-05T01:00:00Z".parse().unwrap()
}

/// A daemon in process half a second before `daily`'s slot, with a SQLite
/// busy timeout of 200 ms, then the slot: its run starts with `people`
/// recipients and a slow WeChat.
async fn sqlite_run(env: &TestEnv) -> Daemon {
    let daemon = env
        .daemon_with(nine_am() - chrono::Duration::milliseconds(500), |s| {
            s.database.busy_timeout = Duration::from_millis(200);
        })
        .await;
    daemon.advance(Duration::from_millis(500)).await;
    daemon
}

async fn sqlite_env(people: usize) -> (Vec<String>, TestEnv) {
    let (ids, body) = daily_audience(people);
    let opts = FakeOptions {
        latency: Duration::from_millis(20),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 4", &body).await;
    (ids, env)
}

/// Waits until the daemon reports (on /readyz, through its faults) that the
/// database stopped the run.
async fn stopped_by_the_database(daemon: &Daemon) -> String {
    for _ in 0..3000 {
        if let Some(fault) = daemon.app.faults.summary()
            && fault.contains("the database failed")
        {
            return fault;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run never stopped for the database");
}

/// Moves the daemon's clock a second at a time until run 1 is done; the steps.
async fn completes(daemon: &Daemon) -> usize {
    // Each step gives the daemon some real time too: enough of them for a
    // loaded machine (the loop ends as soon as the run is done).
    for step in 0..600 {
        let run = daemon.app.store.run(1).await.unwrap();
        if run.is_some_and(|r| r.status.as_str() == "done") {
            return step;
        }
        daemon.advance(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("run 1 never completed by itself");
}

/// Everyone accepted once and recorded `sent`; nobody `unknown`.
async fn everyone_once(env: &TestEnv, ids: &[String]) {
    let rows = statuses(env).await;
    for id in ids {
        assert_eq!(env.fake.accepted_for(id), 1, "{id}");
        assert_eq!(rows[id], "sent", "{id}");
    }
}

#[tokio::test]
async fn sqlite_locked_beyond_its_busy_timeout_mid_run_stops_the_run_and_it_completes_by_itself() {
    if on_postgres() {
        return; // SQLite's write lock; PostgreSQL's outages are above
    }
    let (ids, env) = sqlite_env(300).await;
    let daemon = sqlite_run(&env).await;
    wait_until(20, "the run to get going", || {
        env.fake.accepted_count() >= 40
    })
    .await;

    // Another process writing for longer than the busy timeout (a long
    // `recipients import`, a backup tool holding the lock).
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&env.db_url)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let fault = stopped_by_the_database(&daemon).await;
    let (code, body) = get(daemon.http, "/readyz").await;
    let stalled = env.fake.accepted_count();
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    let steps = completes(&daemon).await;

    eprintln!("stopped at {stalled} accepted ({fault}); done after {steps} steps");
    assert!(fault.contains("database is locked"), "{fault}");
    assert_eq!(code, 503, "{body}");
    assert!(stalled < 300, "stopped mid-run");
    everyone_once(&env, &ids).await;
    assert_eq!(get(daemon.http, "/readyz").await.0, 200);
    daemon.stop().await.unwrap();
}

/// Runs the calling test again in a process of its own, in a mount namespace
/// of its own (where it may mount a small tmpfs), and checks that it passed.
/// True in that process, where the test's body runs; false in the caller,
/// which has nothing more to do.
fn in_own_mount_namespace(test: &str) -> bool {
    if std::env::var_os("WXPUSH_TEST_MOUNT_NS").is_some() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = std::process::Command::new("unshare");
    // Root may unshare the mount namespace alone; anyone else needs a user
    // namespace of their own to be root in.
    if !root {
        c.args(["--user", "--map-root-user"]);
    }
    let probe = c
        .args(["--mount", "--propagation", "private"])
        .arg("true")
        .output()
        .expect("run unshare (util-linux)");
    if !probe.status.success() {
        // A sandbox that forbids namespaces (Docker's default seccomp
        // profile, Ubuntu's AppArmor limits on user namespaces).
        eprintln!(
            "SKIPPED {test}: cannot make a mount namespace here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return false;
    }
    let mut c = std::process::Command::new("unshare");
    if !root {
        c.args(["--user", "--map-root-user"]);
    }
    let out = c
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("WXPUSH_TEST_MOUNT_NS", "1")
        .output()
        .expect("run unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "in a mount namespace of its own: {text}"
    );
    eprintln!("{text}");
    false
}

#[tokio::test]
async fn sqlite_on_a_full_disk_mid_run_stops_the_run_and_it_completes_once_there_is_room() {
    if on_postgres() {
        return; // the SQLite file's disk
    }
    if !in_own_mount_namespace(
        "blips::sqlite_on_a_full_disk_mid_run_stops_the_run_and_it_completes_once_there_is_room",
    ) {
        return;
    }
    let (ids, mut env) = sqlite_env(300).await;
    let disk = env.dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs of 8 MiB");
    env.db_url = format!("sqlite://{}", disk.join("wxpush.db").display());
    env.write_config(
        "concurrency = 4",
        &format!("{}{}", daily_job(""), {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            recipients(&refs)
        }),
    );
    let daemon = sqlite_run(&env).await;
    wait_until(20, "the run to get going", || {
        env.fake.accepted_count() >= 40
    })
    .await;

    // The disk fills up (another program's logs): what is left is taken.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..512]).is_ok() {}
    }
    let fault = stopped_by_the_database(&daemon).await;
    let stalled = env.fake.accepted_count();
    std::fs::remove_file(&filler).unwrap();
    let steps = completes(&daemon).await;

    eprintln!("stopped at {stalled} accepted ({fault}); done after {steps} steps");
    assert!(fault.contains("full"), "{fault}");
    assert!(stalled < 300, "stopped mid-run");
    everyone_once(&env, &ids).await;
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_database_file_deleted_mid_run_is_reported_as_that_and_fails_readiness() {
    if on_postgres() {
        return; // the SQLite file
    }
    let (_, env) = sqlite_env(300).await;
    let daemon = sqlite_run(&env).await;
    wait_until(20, "the run to get going", || {
        env.fake.accepted_count() >= 40
    })
    .await;

    // An operator cleaning up the wrong folder.
    for file in ["wxpush.db", "wxpush.db-wal", "wxpush.db-shm"] {
        let _ = std::fs::remove_file(env.dir.path().join(file));
    }
    let fault = stopped_by_the_database(&daemon).await;
    let (code, body) = get(daemon.http, "/readyz").await;
    let stalled = env.fake.accepted_count();
    for _ in 0..5 {
        daemon.advance(Duration::from_secs(1)).await;
    }

    let path = env.db_path().display().to_string();
    assert!(
        fault.contains(&format!("{path} was removed")) && !fault.contains("I/O error"),
        "{fault}"
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("{path} was removed")), "{body}");
    assert!(stalled < 300, "stopped mid-run");
    assert_eq!(
        env.fake.accepted_count(),
        stalled,
        "nothing is sent that could not be recorded"
    );
    assert!(
        !env.db_path().exists(),
        "no empty database made in its place"
    );
    daemon.stop().await.unwrap();
}
