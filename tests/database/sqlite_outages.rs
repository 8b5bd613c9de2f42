//! The store's database failing under a run on SQLite: locked beyond its busy
//! timeout, a full disk, the file deleted. The run stops with the rest pending,
//! readiness says why, and the run completes by itself once the fault is gone.

use std::time::Duration;

use crate::helpers::*;

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
        "sqlite_outages::sqlite_on_a_full_disk_mid_run_stops_the_run_and_it_completes_once_there_is_room",
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
