//! Several wxpush processes on one PostgreSQL database: they drain one run
//! together, and when one is killed mid-run the others finish its share with
//! no second message to anyone. Skipped (with a note) without PostgreSQL, a
//! failure under `WXPUSH_REQUIRE_POSTGRES=1`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::*;

/// An env on its own PostgreSQL database, whatever `WXPUSH_TEST_DATABASE` says.
async fn shared_env(
    test: &str,
    recipients: usize,
    latency_ms: u64,
) -> Option<(Vec<String>, TestEnv)> {
    let cluster = testpg::cluster_or_skip(test)?;
    let (ids, body) = daily_audience(recipients);
    let opts = FakeOptions {
        latency: Duration::from_millis(latency_ms),
        ..FakeOptions::default()
    };
    let mut env = TestEnv::new(opts, "concurrency = 4", &body).await;
    env.db_url = cluster.database();
    env.write_config("concurrency = 4", &body);
    Some((ids, env))
}

/// A `wxpush run` on its own HTTP port, checking for runs to join every 1/10 s.
async fn daemon(env: &TestEnv) -> (tokio::process::Child, std::net::SocketAddr) {
    daemon_with_lease(env, "1s").await
}

/// A `wxpush run` on its own HTTP port with `instance_lease = lease`.
async fn daemon_with_lease(
    env: &TestEnv,
    lease: &str,
) -> (tokio::process::Child, std::net::SocketAddr) {
    let addr = free_addr();
    let child = env
        .command(&["run"])
        .env("WXPUSH__HTTP__LISTEN", addr.to_string())
        .env("WXPUSH__DATABASE__INSTANCE_LEASE", lease)
        .spawn()
        .unwrap();
    wait_http(addr).await;
    (child, addr)
}

/// `wxpush send daily --again`, checking for other instances as the daemons do.
fn sender(env: &TestEnv) -> tokio::process::Command {
    let mut c = env.command(&["send", "daily", "--again"]);
    c.env("WXPUSH__DATABASE__INSTANCE_LEASE", "1s");
    c
}

/// Messages the instance at `addr` has had accepted, from its metrics.
async fn sent_by(addr: std::net::SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("wxpush_sends_total{") && l.contains("outcome=\"sent\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Each recipient's recorded status in run 1.
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

#[tokio::test]
async fn three_instances_drain_one_run_together_and_each_person_gets_one_message() {
    let Some((ids, env)) = shared_env(
        "three_instances_drain_one_run_together_and_each_person_gets_one_message",
        400,
        25,
    )
    .await
    else {
        return;
    };
    let (mut a, a_addr) = daemon(&env).await;
    let (mut b, b_addr) = daemon(&env).await;

    // An operator's manual send while the daemons run: they join its run.
    let send = sender(&env).output().await.unwrap();
    let send = Run::from(send);

    assert_eq!(send.code, 0, "{send:?}");
    assert!(
        send.stdout.starts_with("daily: run 1: 400 sent"),
        "the sender reports the whole run: {}",
        send.stdout
    );
    for id in &ids {
        assert_eq!(env.fake.accepted_for(id), 1, "{id}");
    }
    assert_eq!(
        env.fake.concurrent_same_user(),
        0,
        "never two requests to one person at once"
    );
    let (by_a, by_b) = (sent_by(a_addr).await, sent_by(b_addr).await);
    assert!(
        by_a > 0 && by_b > 0,
        "both daemons took part: {by_a}, {by_b}"
    );
    assert!(by_a + by_b < 400, "and so did the sender");
    assert!(statuses(&env).await.values().all(|s| s == "sent"));
    let store = env.store().await;
    assert_eq!(store.runs(None, 10).await.unwrap().len(), 1, "one run");
    // One token for the AppID, fetched once between the three of them.
    assert_eq!(env.fake.token_requests(), 1);

    let listed = env.wxpush(&["instances", "--json"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let doc: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let daemons = doc.as_array().unwrap();
    assert_eq!(daemons.len(), 2, "the sender left on exit: {doc}");
    assert!(
        daemons
            .iter()
            .all(|d| d["live"] == true && d["role"] == "daemon")
    );
    assert_eq!(stop(&mut a).await.code(), Some(0));
    assert_eq!(stop(&mut b).await.code(), Some(0));
    let listed = env.wxpush(&["instances"]).await;
    assert!(listed.stdout.contains("no wxpush instance"), "{listed:?}");
}

#[tokio::test]
async fn a_daemon_joins_a_manual_send_when_it_begins_not_at_its_next_join_check() {
    let Some((ids, env)) = shared_env(
        "a_daemon_joins_a_manual_send_when_it_begins_not_at_its_next_join_check",
        300,
        25,
    )
    .await
    else {
        return;
    };
    // A lease of a minute: on its own timer the daemon looks for runs to join
    // every 6 s, long after this send (about 2 s alone) is done.
    let lease = "60s";
    let (mut d, addr) = daemon_with_lease(&env, lease).await;
    let send = env
        .command(&["send", "daily", "--again"])
        .env("WXPUSH__DATABASE__INSTANCE_LEASE", lease)
        .output()
        .await
        .unwrap();
    let send = Run::from(send);
    assert_eq!(send.code, 0, "{send:?}");
    assert!(
        send.stdout.starts_with("daily: run 1: 300 sent"),
        "{send:?}"
    );
    for id in &ids {
        assert_eq!(env.fake.accepted_for(id), 1, "{id}");
    }
    let by_daemon = sent_by(addr).await;
    assert!(
        by_daemon > 0 && by_daemon < 300,
        "told by the send, the daemon joined its run: {by_daemon}"
    );
    assert_eq!(stop(&mut d).await.code(), Some(0));
}

#[tokio::test]
async fn kill_9_of_one_instance_mid_run_leaves_no_duplicate_and_the_others_finish() {
    let Some((ids, env)) = shared_env(
        "kill_9_of_one_instance_mid_run_leaves_no_duplicate_and_the_others_finish",
        400,
        40,
    )
    .await
    else {
        return;
    };
    let (mut victim, victim_addr) = daemon(&env).await;
    let (mut survivor, survivor_addr) = daemon(&env).await;
    let send = sender(&env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the victim once it has sent its share of a good part of the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent_by(victim_addr).await < 20 {
        still_running(&mut victim);
        assert!(
            std::time::Instant::now() < deadline,
            "the victim never joined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.start_kill().unwrap();
    victim.wait().await.unwrap();
    let killed_at = env.fake.accepted_count();
    assert!(killed_at < 400, "killed mid-run ({killed_at} accepted)");

    let out = tokio::time::timeout(Duration::from_secs(60), send.wait_with_output())
        .await
        .expect("the run finished without the victim")
        .unwrap();
    let send = Run::from(out);
    // Requests the victim had written may still reach the fake.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rows = statuses(&env).await;
    let unknown = rows.values().filter(|s| *s == "unknown").count();
    eprintln!(
        "killed at {killed_at} accepted; {unknown} unknown; {} accepted in all",
        env.fake.accepted_count()
    );
    for id in &ids {
        let accepted = env.fake.accepted_for(id);
        assert!(accepted <= 1, "{id} got {accepted} messages");
        match rows[id].as_str() {
            "sent" => assert_eq!(accepted, 1, "{id} recorded sent"),
            "unknown" => {}
            other => panic!("{id} ended {other}"),
        }
    }
    assert!(
        unknown <= 4,
        "at most the victim's 4 requests in flight are uncertain, got {unknown}"
    );
    assert_eq!(send.code, if unknown > 0 { 1 } else { 0 }, "{send:?}");
    assert!(sent_by(survivor_addr).await > 0);
    let store = env.store().await;
    assert!(
        store
            .unfinished_runs(&job_name("daily"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(stop(&mut survivor).await.code(), Some(0));
}

#[tokio::test]
async fn instances_lists_the_running_daemon_and_forgets_it_on_a_clean_stop() {
    // On whichever backend this pass uses: SQLite lists its daemon too.
    let (_, body) = daily_audience(1);
    let env = TestEnv::with(&body).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;

    let listed = env.wxpush(&["instances", "--json"]).await;

    assert_eq!(listed.code, 0, "{listed:?}");
    let doc: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let rows = doc.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{doc}");
    assert_eq!(rows[0]["pid"], child.id().unwrap());
    assert_eq!(rows[0]["role"], "daemon");
    assert_eq!(rows[0]["live"], true);
    let table = env.wxpush(&["instances"]).await;
    assert!(
        table.stdout.contains(&format!(" {} ", child.id().unwrap())),
        "{table:?}"
    );
    assert!(table.stdout.contains("idle"), "{table:?}");
    assert_eq!(stop(&mut child).await.code(), Some(0));
    let after = env.wxpush(&["instances"]).await;
    assert!(after.stdout.contains("no wxpush instance"), "{after:?}");
}

#[tokio::test]
async fn the_rate_limit_holds_for_all_instances_together() {
    let Some((ids, env)) =
        shared_env("the_rate_limit_holds_for_all_instances_together", 60, 0).await
    else {
        return;
    };
    env.write_config(
        "concurrency = 4\nrate_limit_per_sec = 20",
        &format!(
            "{}{}",
            daily_job(""),
            recipients(&ids.iter().map(String::as_str).collect::<Vec<_>>())
        ),
    );
    let (mut a, _) = daemon(&env).await;
    let (mut b, _) = daemon(&env).await;
    // Both daemons have counted three live instances once the sender joined.
    let started = std::time::Instant::now();
    let send = sender(&env).output().await.unwrap();
    let took = started.elapsed();
    let send = Run::from(send);
    eprintln!("60 messages at 20/s over three instances: {took:?}");

    assert_eq!(send.code, 0, "{send:?}");
    assert!(ids.iter().all(|id| env.fake.accepted_for(id) == 1));
    // 60 messages at 20/s in all: a burst of about 20, then 20 a second. Each
    // instance alone at 20/s would have sent them in a burst.
    assert!(
        took >= Duration::from_millis(1500),
        "60 messages at 20/s across three instances took {took:?}"
    );
    assert_eq!(stop(&mut a).await.code(), Some(0));
    assert_eq!(stop(&mut b).await.code(), Some(0));
}

#[tokio::test]
async fn three_instances_send_2000_sends_due_the_same_second_once_each_and_a_killed_ones_are_never_resent()
 {
    let Some((_, env)) = shared_env(
        "three_instances_send_2000_sends_due_the_same_second_once_each_and_a_killed_ones_are_never_resent",
        1,
        5,
    )
    .await
    else {
        return;
    };
    // 2,000 people, each one send, all due at the same instant.
    let ids = openids(2000);
    add_due_sends(&env, &ids).await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(daemon(&env).await);
    }
    wait_until(30, "sends to go out", || env.fake.accepted_count() >= 400).await;
    // kill -9 of one mid-flight: what it had in flight is its rescuer's to settle.
    let (mut killed, _) = daemons.remove(0);
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let store = env.store().await;
    let started = std::time::Instant::now();
    let open = |status| wxpush::storage::SendFilter {
        status: Some(status),
        limit: 1,
        ..Default::default()
    };
    use wxpush::domain::SendStatus::{Pending, Sending};
    while !(store.list_sends(&open(Pending)).await.unwrap().is_empty()
        && store.list_sends(&open(Sending)).await.unwrap().is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "every send ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_sends(&wxpush::storage::SendFilter {
                limit: 1000,
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        after = page.last().map(|s| s.id);
        let full = page.len() == 1000;
        rows.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(rows.len(), 2000);
    let mut unknown = 0;
    for send in &rows {
        let accepted = env.fake.accepted_for(&send.openid);
        assert!(accepted <= 1, "{} got {accepted}", send.openid);
        match send.status.as_str() {
            "sent" => assert_eq!(accepted, 1, "{send:?}"),
            "unknown" => unknown += 1,
            other => panic!("{send:?} ended {other}"),
        }
    }
    // At most the killed one's requests in flight (its concurrency, 4), which
    // may or may not have reached WeChat before the kill.
    assert!(unknown <= 4, "{unknown} unknown");
    let sent = rows.len() - unknown;
    let accepted = env.fake.accepted_count() as usize;
    assert!(
        (sent..=sent + unknown).contains(&accepted),
        "{accepted} accepted for {sent} sent and {unknown} unknown"
    );
    // Any instance claims due sends: both survivors sent some.
    for (_, addr) in &daemons {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mine: f64 = text
            .lines()
            .filter(|l| l.starts_with("wxpush_on_demand_sends_total{") && l.contains("\"sent\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert!(mine > 0.0, "an instance sent none: {text}");
    }
    for (mut child, _) in daemons {
        assert_eq!(stop(&mut child).await.code(), Some(0));
    }
}
