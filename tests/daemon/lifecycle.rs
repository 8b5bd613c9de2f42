//! Data lifecycle: `[retention]` pruning in the daemon, `wxpush backup` while it
//! runs, and a restore from that backup.

use crate::helpers::*;

/// Runs `sql` on the env's database (the tests' way to age history).
async fn execute(env: &TestEnv, sql: &'static str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.db_url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

fn two_people() -> String {
    format!(
        "{}{}",
        daily_job(""),
        recipients(&[
            "oUser00000000000000000000001",
            "oUser00000000000000000000002"
        ])
    )
}

#[tokio::test]
async fn the_daemon_prunes_old_finished_runs_and_keeps_the_newest() {
    let env = TestEnv::with(&format!(
        "{}\n[retention]\nkeep = \"30d\"\nevery = \"1m\"\n",
        two_people()
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    }
    let store = env.store().await;
    let runs = store.runs(Some(&job_name("daily")), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    let (old, newest) = (runs[1].id, runs[0].id);
    // Both of slots long past and finished long ago; only the older may go.
    execute(
        &env,
        "UPDATE runs SET finished_at = '2025-01-01T00:00:00.000Z', created_at = '2025-01-01T00:00:00.000Z', \
         slot = '2025-01-01T0' || CAST(id AS TEXT) || ':00:00.000Z'",
    )
    .await;

    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while store
        .runs(Some(&job_name("daily")), 10)
        .await
        .unwrap()
        .len()
        != 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old run was never pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = store.runs(Some(&job_name("daily")), 10).await.unwrap();
    assert_eq!(left[0].id, newest);
    assert!(store.deliveries(old).await.unwrap().is_empty());
    assert_eq!(store.deliveries(newest).await.unwrap().len(), 2);
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn a_retention_of_seconds_is_refused_as_a_likely_typo() {
    let env = TestEnv::with(&format!(
        "{}\n[retention]\nkeep = \"180s\"\n",
        daily_job("")
    ))
    .await;
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("retention.keep: 3m is less than a day"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_backup_taken_while_the_daemon_runs_restores_and_nobody_is_messaged_twice() {
    if on_postgres() {
        return; // A SQLite file's backup; PostgreSQL's is pg_dump.
    }
    // The latest 09:00 slot is still open to `send`, whenever the test runs.
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job("send_window = \"25h\""),
        recipients(&[
            "oUser00000000000000000000001",
            "oUser00000000000000000000002"
        ])
    ))
    .await;
    let first = env.wxpush(&["send", "daily"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(env.fake.accepted_count(), 2);
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;

    // Run from another folder, as an operator's cron line would.
    let backup = env.dir.path().join("backups/wxpush-1.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let run = finish(
        env.command(&["backup", backup.to_str().unwrap()])
            .current_dir(std::env::temp_dir()),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("backed up "), "{}", run.stdout);
    let again = env.wxpush(&["backup", backup.to_str().unwrap()]).await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let leftovers: Vec<_> = std::fs::read_dir(backup.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("wxpush-1.db")]);
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    // The restore README shows: stopped, the file and its WAL replaced.
    let db = env.db_path();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    let sent = env.fake.accepted_count();
    let run = env.wxpush(&["send", "daily"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to send"), "{}", run.stdout);
    assert_eq!(
        env.fake.accepted_count(),
        sent,
        "the restored history says they have it"
    );
    let runs = env.wxpush(&["runs", "--json"]).await;
    assert_eq!(runs.code, 0, "{runs:?}");
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["counts"]["sent"], 2, "{runs}");
}

#[tokio::test]
async fn backup_on_a_postgresql_url_points_to_pg_dump_without_connecting() {
    // A server nobody listens on: the answer comes from the URL alone.
    let down = TestEnv::with(&two_people()).await;
    std::fs::write(
        &down.config,
        std::fs::read_to_string(&down.config).unwrap().replace(
            &down.db_url,
            &format!("postgres://wxpush@{}/wxpush", free_addr()),
        ),
    )
    .unwrap();
    let run = down.wxpush(&["backup", "/tmp/never.db"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("is PostgreSQL; back it up with pg_dump")
            && !run.stderr.contains("connect"),
        "{}",
        run.stderr
    );
    if !on_postgres() {
        return;
    }
    let env = TestEnv::with(&two_people()).await;
    assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    let run = env.wxpush(&["backup", "/tmp/never.db"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("pg_dump"), "{}", run.stderr);
}

/// The env's database, for a test to read or age it.
async fn pool(env: &TestEnv) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&env.db_url).await.unwrap()
}

/// Polls `cond` every 10 ms; panics with `what` after `secs` seconds.
async fn wait_until_async(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// What `wxpush send weekly` (`--again` with `new_round`) does for `slot`.
async fn fire(
    app: &wxpush::app::App,
    slot: chrono::DateTime<chrono::Utc>,
    new_round: bool,
) -> wxpush::runner::Fired {
    wxpush::runner::fire(
        &app.store,
        &app.runtime(None).deliverer,
        app.settings.job("weekly").unwrap(),
        if new_round {
            wxpush::runner::Firing::NewRound(slot)
        } else {
            wxpush::runner::Firing::Slot(slot, wxpush::domain::Trigger::Manual)
        },
        &app.clock,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// A weekly job whose slots may be sent for 7 days, and a retention of a day.
fn weekly(ids: &[String]) -> String {
    let mut body = String::from(
        r#"
[retention]
keep = "1d"
every = "1h"

[[jobs]]
name = "weekly"
cron = "0 0 9 * * MON"
timezone = "Asia/Shanghai"
template_id = "tmpl-checkin"
send_window = "7d"
[jobs.data]
thing1 = "{{name}}, check in"
date2 = "{{today}}"
"#,
    );
    for id in ids {
        body.push_str(&format!(
            "\n[[recipients]]\nopenid = \"{id}\"\njobs = [\"weekly\"]\nname = \"n\"\n"
        ));
    }
    body
}

#[tokio::test]
async fn retention_keeps_a_slot_that_may_still_send_so_send_never_messages_it_twice() {
    let ids = openids(20);
    let env = TestEnv::with(&weekly(&ids)).await;
    // Mondays, 09:00 in Shanghai.
    let last_week: chrono::DateTime<chrono::Utc> = "2029-12-31T01:00:00Z".parse().unwrap();
    let this_week: chrono::DateTime<chrono::Utc> = "2030-01-07T01:00:00Z".parse().unwrap();
    let daemon = env
        .daemon_at(last_week - chrono::Duration::milliseconds(500))
        .await;
    let store = daemon.app.store.clone();
    let runs = || async { store.runs(Some(&job_name("weekly")), 10).await.unwrap() };
    let done = |n: usize| {
        let store = store.clone();
        async move {
            store
                .runs(Some(&job_name("weekly")), 10)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.status.as_str() == "done")
                .count()
                >= n
        }
    };
    // Last week's slot, then this Monday's: each waited for in real time,
    // with the clock standing at the slot.
    daemon.advance(std::time::Duration::from_millis(500)).await;
    wait_until(20, "last week's run", || env.fake.accepted_count() == 20).await;
    while !done(1).await {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    daemon
        .advance(std::time::Duration::from_secs(7 * 86_400))
        .await;
    wait_until(20, "this Monday's run", || env.fake.accepted_count() == 40).await;
    while !done(2).await {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Tuesday: an operator's `send weekly --again` round.
    let app = &daemon.app;
    daemon.advance(std::time::Duration::from_secs(86_400)).await;
    fire(app, app.clock.now(), true).await;
    assert_eq!(env.fake.accepted_count(), 60);

    // Friday. A pushed event received on Thursday goes only with a pass on
    // Friday's clock: once it is gone, that pass is over.
    let db = pool(&env).await;
    sqlx::query("INSERT INTO consent_events (event_key, received_at) VALUES ('thursday', '2030-01-10T00:00:00.000Z')")
        .execute(&db)
        .await
        .unwrap();
    daemon
        .advance(std::time::Duration::from_secs(3 * 86_400))
        .await;
    wait_until_async(20, "a pass of retention on Friday", async || {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_events")
            .fetch_one(&db)
            .await
            .unwrap();
        left == 0
    })
    .await;
    let left = runs().await;
    assert!(
        left.iter().any(|r| r.slot == this_week),
        "this Monday's run is kept while its slot may still send: {left:?}"
    );
    assert!(!left.iter().any(|r| r.slot == last_week), "{left:?}");
    // ... and `wxpush send weekly` on Friday finds this Monday's run done.
    let fired = fire(app, this_week, false).await;

    assert!(
        fired.reports.is_empty(),
        "nothing sent: {:?}",
        fired.reports
    );
    for id in &ids {
        assert_eq!(
            env.fake.accepted_for(id),
            3,
            "two Mondays and one --again: {id}"
        );
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn check_warns_when_retention_is_shorter_than_a_jobs_send_window() {
    let env = TestEnv::with(&weekly(&openids(1))).await;

    let run = env.wxpush(&["check", "--offline"]).await;

    assert_eq!(run.code, 0, "a warning, not an error: {run:?}");
    assert!(
        run.stderr
            .contains("retention.keep (1day) is shorter than job weekly's send_window (7days)"),
        "{run:?}"
    );
    // A keep as long as the window says nothing.
    env.write_config(
        "",
        &weekly(&openids(1)).replace("keep = \"1d\"", "keep = \"7d\""),
    );
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("retention.keep"), "{run:?}");
}
