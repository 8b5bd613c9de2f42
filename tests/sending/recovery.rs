//! Crashes: kill -9 mid-run, then resume without a second success for anyone.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn a_run_killed_mid_send_is_resumed_with_no_duplicate() {
    let (ids, body) = daily_audience(40);
    let opts = FakeOptions {
        latency: Duration::from_millis(100),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 4", &body).await;

    let mut child = env
        .command(&["send", "daily", "--again"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let some sends complete, then kill -9 while others are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.fake.accepted_count() < 8 {
        still_running(&mut child);
        assert!(
            std::time::Instant::now() < deadline,
            "the send made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // Requests the killed process had written may still be accepted by the fake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted_before = env.fake.accepted_count();
    assert!(accepted_before < 40, "killed before the end");

    let resumed = env.wxpush(&["send", "daily", "--again"]).await;

    assert!(
        resumed.stdout.starts_with("daily: run 1:"),
        "run 1 resumed: {resumed:?}"
    );
    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    assert_eq!(rows.len(), 40);
    for id in &ids {
        let row = rows.iter().find(|r| &r.openid == id).unwrap();
        let accepted = env.fake.accepted_for(id);
        assert!(accepted <= 1, "{id} got {accepted} messages");
        match row.status.as_str() {
            "sent" => assert_eq!(accepted, 1, "{id} recorded sent"),
            // Interrupted between commit and answer: at most once, marked uncertain.
            "unknown" => {}
            other => panic!("{id} ended {other}"),
        }
    }
    let unknown = rows
        .iter()
        .filter(|r| r.status.as_str() == "unknown")
        .count();
    // Only requests actually started are `sending`: at most `concurrency` of them.
    assert!(
        unknown <= 4,
        "at most the 4 requests in flight are uncertain, got {unknown}"
    );
    assert!(
        store
            .unfinished_runs(&job_name("daily"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(resumed.code, if unknown > 0 { 1 } else { 0 }, "{resumed:?}");
}

#[tokio::test]
async fn a_second_sender_of_the_same_job_is_refused_while_one_runs() {
    let (ids, body) = daily_audience(10);
    let opts = FakeOptions {
        latency: Duration::from_millis(100),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 1", &body).await;
    let mut first = env
        .command(&["send", "daily", "--again"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20, "the first sender starts", || {
        env.fake.send_requests() > 0
    })
    .await;

    let second = env.wxpush(&["send", "daily", "--again"]).await;

    if on_postgres() {
        // Instances share runs there: the second sender joins the first's run
        // (and starts no round of its own), taking deliveries the first has not.
        assert_eq!(second.code, 0, "{second:?}");
        assert!(second.stdout.starts_with("daily: run 1:"), "{second:?}");
    } else {
        assert_eq!(second.code, 3, "{second:?}");
        assert!(
            second.stderr.contains("job daily is already being sent"),
            "{}",
            second.stderr
        );
    }
    assert!(first.wait().await.unwrap().success());
    assert!(ids.iter().all(|id| env.fake.accepted_for(id) == 1));
    let store = env.store().await;
    assert_eq!(store.runs(None, 10).await.unwrap().len(), 1, "one round");
}
