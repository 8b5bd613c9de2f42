//! Re-runs, outages and first starts, the way operators meet them: a run belongs
//! to a slot, so no sequence of `send`, `run`, restarts and re-runs messages
//! anyone twice for one slot.

use std::time::Duration;

use chrono::{Timelike, Utc};

use crate::helpers::*;

/// `recent_daily` sent to `n` generated recipients.
fn recent_audience(n: usize, extra_job_keys: &str) -> (Vec<String>, String) {
    let ids = openids(n);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    (
        ids.clone(),
        format!("{}{}", recent_daily(extra_job_keys), recipients(&refs)),
    )
}

/// Every openid got exactly one message.
fn each_got_one(env: &TestEnv, ids: &[String]) {
    for id in ids {
        assert_eq!(env.fake.accepted_for(id), 1, "{id}");
    }
}

#[tokio::test]
async fn re_running_send_after_lost_replies_messages_nobody_twice() {
    let (ids, body) = recent_audience(20, "");
    let env = TestEnv::new(FakeOptions::default(), "", &body).await;
    // Two replies are lost (accepted, then no answer before the 1 s timeout).
    for id in &ids[..2] {
        env.fake
            .script(id, [Scripted::Hang(Duration::from_secs(3))]);
    }

    let first = env.wxpush(&["send", "daily"]).await;
    assert_eq!(first.code, 1, "{first:?}");
    assert!(
        first
            .stdout
            .contains("18 sent, 0 failed, 0 refused, 0 invalid, 2 unknown"),
        "{}",
        first.stdout
    );

    // The operator sees exit 1 and runs the same command again, twice.
    for _ in 0..2 {
        let again = env.wxpush(&["send", "daily"]).await;
        assert_eq!(again.code, 0, "{again:?}");
        assert!(
            again.stdout.contains("nothing to send (run 1 for the slot"),
            "{}",
            again.stdout
        );
    }
    each_got_one(&env, &ids);
    assert_eq!(
        env.fake.send_requests(),
        20,
        "no request after the first run"
    );
    let runs = env
        .store()
        .await
        .runs(Some(&job_name("daily")), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "one run for the slot: {runs:?}");
}

#[tokio::test]
async fn a_re_run_retries_only_what_failed_for_a_passing_cause() {
    let (ids, body) = recent_audience(6, "");
    let env = TestEnv::new(FakeOptions::default(), "max_attempts = 2", &body).await;
    // Busy twice for one person: both tries used up, recorded failed.
    env.fake
        .script(&ids[0], [Scripted::Errcode(-1), Scripted::Errcode(-1)]);
    // A permanent problem for another: 47003 is invalid, never retried.
    env.fake.script(&ids[1], [Scripted::Errcode(47003)]);

    let first = env.wxpush(&["send", "daily"]).await;
    assert_eq!(first.code, 1, "{first:?}");
    assert!(
        first
            .stdout
            .contains("4 sent, 1 failed, 0 refused, 1 invalid"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("re-run `wxpush send daily` to retry"),
        "{}",
        first.stdout
    );

    let again = env.wxpush(&["send", "daily"]).await;
    assert!(
        again
            .stdout
            .starts_with("daily: run 1: 5 sent, 0 failed, 0 refused, 1 invalid"),
        "{again:?}"
    );
    assert_eq!(again.code, 1, "one is still invalid: {again:?}");
    assert_eq!(
        env.fake.accepted_for(&ids[0]),
        1,
        "the busy one, on the re-run"
    );
    assert_eq!(
        env.fake.accepted_for(&ids[1]),
        0,
        "the invalid one is not retried"
    );
    each_got_one(&env, &ids[2..]);
    // 6 first tries + 1 retry of the busy one + 1 on the re-run.
    assert_eq!(env.fake.send_requests(), 8);

    let third = env.wxpush(&["send", "daily"]).await;
    assert_eq!(third.code, 0, "{third:?}");
    assert_eq!(env.fake.send_requests(), 8, "nothing left to retry");
}

#[tokio::test]
async fn again_starts_a_new_round_and_says_so() {
    let (ids, body) = recent_audience(3, "");
    let env = TestEnv::new(FakeOptions::default(), "", &body).await;
    assert_eq!(env.wxpush(&["send", "daily"]).await.code, 0);
    let again = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("run 2:") && again.stdout.contains("a new round (--again)"),
        "{}",
        again.stdout
    );
    for id in &ids {
        assert_eq!(env.fake.accepted_for(id), 2, "{id}");
    }
}

#[tokio::test]
async fn wechat_going_away_mid_run_stops_it_and_fails_nobody() {
    let (ids, body) = recent_audience(300, "");
    let opts = FakeOptions {
        latency: Duration::from_millis(10),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 8", &body).await;
    let child = env
        .command(&["send", "daily"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(20, "some sends", || env.fake.accepted_count() >= 40).await;
    env.fake.set_down(true);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the send stops by itself")
        .unwrap();
    let first = Run::from(out);
    assert_eq!(first.code, 3, "{first:?}");
    assert!(
        first.stdout.contains("stopped: WeChat cannot be reached"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("nobody was failed for it"),
        "{}",
        first.stdout
    );

    let store = env.store().await;
    let run = store.run(1).await.unwrap().unwrap();
    assert_eq!(run.status.as_str(), "stopped");
    assert_eq!(run.counts.failed, 0, "{:?}", run.counts);
    assert_eq!(
        run.counts.unknown, 0,
        "a 503 is an answer: nothing uncertain"
    );
    assert!(run.counts.pending > 0, "{:?}", run.counts);
    assert_eq!(
        run.counts.sent + run.counts.pending,
        300,
        "{:?}",
        run.counts
    );
    let sent_before = run.counts.sent;
    let requests_while_down = env.fake.send_requests() - sent_before;
    assert!(
        requests_while_down < 40,
        "stopped soon: {requests_while_down} requests to a dead API"
    );

    env.fake.set_down(false);
    let resumed = env.wxpush(&["send", "daily"]).await;
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stdout.starts_with("daily: run 1: 300 sent"),
        "{}",
        resumed.stdout
    );
    each_got_one(&env, &ids);
}

#[tokio::test]
async fn the_daemon_resumes_a_run_stopped_by_an_outage_once_wechat_is_back() {
    let (ids, body) = recent_audience(30, "");
    let body = format!("\n[scheduler]\noutage_retry = \"200ms\"\n{body}");
    let env = TestEnv::new(FakeOptions::default(), "", &body).await;
    // A token and the template list cached before WeChat goes away (as in any
    // daemon that has been running), so that only the sends meet the outage.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["check"]).await.code, 0);
    env.fake.set_down(true);
    let first = env.wxpush(&["send", "daily"]).await;
    assert_eq!(first.code, 3, "{first:?}");
    assert_eq!(env.fake.accepted_count(), 0);

    let daemon = env.daemon_at(Utc::now()).await;
    // Down for a while after the start: the daemon keeps trying (every 200 ms,
    // doubling), failing nobody.
    for _ in 0..8 {
        daemon.advance(Duration::from_millis(200)).await;
    }
    let tries = env.fake.send_requests();
    assert!(tries > 8, "tried more than once: {tries}");
    let run = daemon.app.store.run(1).await.unwrap().unwrap();
    assert_eq!(
        (run.counts.failed, run.counts.pending),
        (0, 30),
        "{:?}",
        run.counts
    );
    env.fake.set_down(false);
    // Accepted by WeChat is not yet recorded: wait for the run's own record.
    daemon
        .advance_until(
            Duration::from_millis(500),
            40,
            "the daemon finished the run",
            async || {
                daemon
                    .app
                    .store
                    .run(1)
                    .await
                    .unwrap()
                    .unwrap()
                    .status
                    .as_str()
                    == "done"
            },
        )
        .await;
    daemon.stop().await.unwrap();
    each_got_one(&env, &ids);
}

#[tokio::test]
async fn what_is_unsent_when_the_send_window_closes_expires_and_is_never_sent() {
    let (ids, body) = recent_audience(5, "");
    let body = format!("\n[scheduler]\ncatch_up = \"500ms\"\nsend_window = \"500ms\"\n{body}");
    // One message, then the daily quota (45009) stops the run.
    let opts = FakeOptions {
        daily_quota: 1,
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 1", &body).await;
    // The latest cron slot is minutes old, past a 0.5 s window: refused, with the way out.
    let late = env.wxpush(&["send", "daily"]).await;
    assert_eq!(late.code, 3, "{late:?}");
    assert!(late.stdout.contains("--again"), "{}", late.stdout);
    assert_eq!(env.fake.send_requests(), 0);
    let stopped = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(stopped.code, 3, "{stopped:?}");
    assert!(
        stopped.stdout.contains("1 sent") && stopped.stdout.contains("4 pending"),
        "{}",
        stopped.stdout
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = env.wxpush(&["send", "daily"]).await;
    assert_eq!(after.code, 1, "{after:?}");
    assert!(
        after.stdout.contains("1 sent") && after.stdout.contains("4 expired"),
        "{}",
        after.stdout
    );
    assert_eq!(env.fake.accepted_count(), 1);
    let shown = env.wxpush(&["runs", "show", "1"]).await;
    assert_eq!(
        shown.stdout.matches(" expired ").count(),
        4,
        "{}",
        shown.stdout
    );
    // And never later.
    assert_eq!(env.wxpush(&["send", "daily"]).await.code, 3);
    assert_eq!(env.fake.accepted_count(), 1);
    assert_eq!(
        ids.iter()
            .map(|id| env.fake.accepted_for(id))
            .sum::<usize>(),
        1
    );

    // A new round asked for when the previous one has just expired still starts:
    // the expired run is closed, not finished. (The quota stops it at once.)
    let stopped = env.wxpush(&["send", "daily", "--again"]).await;
    assert!(stopped.stdout.contains("run 2:"), "{stopped:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = env.wxpush(&["send", "daily", "--again"]).await;
    assert!(again.stdout.contains("run 2,3:"), "{again:?}");
    assert!(again.stdout.contains("5 expired"), "{again:?}");
}

#[tokio::test]
async fn a_test_send_before_the_first_start_is_not_caught_up_by_it() {
    // Job `daily` firing every day at `at` (UTC), sent to three people.
    let job_at = |at: chrono::DateTime<Utc>| {
        daily_job("")
            .replace(
                "cron = \"0 0 9 * * *\"",
                &format!(
                    "cron = \"{} {} {} * * *\"",
                    at.second(),
                    at.minute(),
                    at.hour()
                ),
            )
            .replace("timezone = \"Asia/Shanghai\"", "timezone = \"UTC\"")
    };
    let ids = openids(3);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let people = recipients(&refs);
    // Its latest slot was four hours ago, past its window: a plain send is
    // refused, pointing at --again; the operator tries that.
    let four_hours_ago = Utc::now() - chrono::Duration::hours(4);
    let env = TestEnv::with(&format!("{}{people}", job_at(four_hours_ago))).await;
    let plain = env.wxpush(&["send", "daily"]).await;
    assert_eq!(plain.code, 3, "{plain:?}");
    let tried = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(tried.code, 0, "{tried:?}");
    each_got_one(&env, &ids);

    // The operator settles the time of day (nothing has loaded a schedule yet);
    // that slot passes with no daemon (half a minute ago, well inside the job's
    // catch-up); then the first start.
    let at = Utc::now() - chrono::Duration::seconds(30);
    env.write_config("", &format!("{}{people}", job_at(at)));
    let daemon = env.daemon_at(Utc::now()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.stop().await.unwrap();

    each_got_one(&env, &ids);
    let runs = env
        .store()
        .await
        .runs(Some(&job_name("daily")), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "no catch-up run: {runs:?}");
}

#[tokio::test]
async fn after_kill_9_only_requests_in_flight_are_uncertain_and_the_rest_are_sent() {
    let (ids, body) = recent_audience(200, "");
    let opts = FakeOptions {
        latency: Duration::from_millis(80),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 16", &body).await;
    let mut child = env
        .command(&["send", "daily"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20, "sends under way", || env.fake.accepted_count() >= 40).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    let sending = rows
        .iter()
        .filter(|r| r.status.as_str() == "sending")
        .count();
    assert!(
        sending <= 16,
        "only requests started are marked sending: {sending}"
    );
    store.close().await;

    let resumed = env.wxpush(&["send", "daily"]).await;
    let store = env.store().await;
    let run = store.run(1).await.unwrap().unwrap();
    assert!(run.counts.unknown <= 16, "{:?}", run.counts);
    assert_eq!(
        run.counts.sent + run.counts.unknown,
        200,
        "{:?} {resumed:?}",
        run.counts
    );
    let rows = store.deliveries(1).await.unwrap();
    for id in &ids {
        let row = rows.iter().find(|r| &r.openid == id).unwrap();
        let got = env.fake.accepted_for(id);
        assert!(got <= 1, "{id} got {got}");
        if row.status.as_str() == "sent" {
            assert_eq!(got, 1, "{id}");
        }
    }
}
