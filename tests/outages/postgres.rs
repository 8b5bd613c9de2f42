//! The database going away mid-run, as it does in production: PostgreSQL
//! restarted (`pg_ctl restart -m fast`) or stopped for a while under three
//! daemons. The run completes by itself once the database is back, nobody is
//! messaged twice, and the instances settle their own requests (recorded as
//! what WeChat answered, not `unknown`). Each test runs on a cluster of its
//! own, so that stopping it disturbs no other test.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// Enough people, with a slow WeChat, that requests are in flight whenever the
/// database goes.
const PEOPLE: usize = 300;

/// For an outage longer than the lease: enough that every daemon still has
/// its share to send once the database is back (its readiness comes back with
/// a firing of its own that works).
const PEOPLE_PAST_LEASE: usize = 600;
const LEASE: &str = "2s";

struct Cluster {
    pg: testpg::Private,
    env: TestEnv,
    ids: Vec<String>,
}

async fn cluster(test: &str, people: usize) -> Option<Cluster> {
    let pg = testpg::private_or_skip(test)?;
    let (ids, body) = daily_audience(people);
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
    let Some(c) = cluster(
        "a_postgresql_restart_mid_run_under_three_daemons_completes_the_run_by_itself",
        PEOPLE,
    )
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
        cluster("a_database_stopped_longer_than_the_lease_fails_readiness_and_send_then_the_run_completes_with_no_instance_declared_dead", PEOPLE_PAST_LEASE)
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
    // WeChat takes the message and answers only after 4 s: the first send
    // holds it `sending` all that time, alive and heart-beating.
    env.fake
        .script(&ids[0], [Scripted::Hang(Duration::from_secs(4))]);
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
