//! Sending a job: outcomes, retries, validation, records.

use std::time::Duration;

use crate::helpers::*;

fn ids(n: usize) -> (Vec<String>, String) {
    daily_audience(n)
}

#[tokio::test]
async fn send_delivers_one_message_per_recipient_and_records_each() {
    let (ids, body) = ids(5);
    let env = TestEnv::with(&body).await;

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("daily: run 1: 5 sent, 0 failed"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), 1, "one summary line");
    for id in &ids {
        assert_eq!(env.fake.accepted_for(id), 1, "{id}");
    }
    let accepted = env.fake.accepted();
    let body = accepted[0].body.as_ref().unwrap();
    assert_eq!(body["template_id"], "tmpl-checkin");
    assert_eq!(body["page"], "pages/index/index");
    assert_eq!(body["miniprogram_state"], "formal");
    assert_eq!(body["lang"], "zh_CN");
    assert!(
        body["data"]["thing1"]["value"]
            .as_str()
            .unwrap()
            .ends_with(", check in")
    );
    assert!(
        body["data"]["date2"]["value"]
            .as_str()
            .unwrap()
            .ends_with('日')
    );

    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert_eq!(row.status.as_str(), "sent");
        assert_eq!(row.attempts, 1);
        // The msgid is above 2^53 and must survive exactly.
        let msgid: u64 = row.msgid.as_deref().unwrap().parse().unwrap();
        assert!(
            accepted
                .iter()
                .any(|a| a.msgid == msgid && a.touser == row.openid)
        );
        assert!(msgid > 1 << 53);
    }
    assert_eq!(env.fake.concurrent_same_user(), 0);
}

#[tokio::test]
async fn busy_answers_are_retried_with_backoff_until_sent() {
    let (ids, body) = ids(2);
    let env = TestEnv::with(&body).await;
    env.fake
        .script(&ids[0], [Scripted::Errcode(-1), Scripted::Errcode(-1)]);
    env.fake.script(&ids[1], [Scripted::Http(502)]);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    let rows = env.store().await.deliveries(1).await.unwrap();
    let busy = rows.iter().find(|r| r.openid == ids[0]).unwrap();
    assert_eq!((busy.status.as_str(), busy.attempts), ("sent", 3));
    let gateway = rows.iter().find(|r| r.openid == ids[1]).unwrap();
    assert_eq!((gateway.status.as_str(), gateway.attempts), ("sent", 2));
    assert_eq!(env.fake.accepted_count(), 2);
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_the_delivery_fails() {
    let (ids, body) = ids(1);
    let env = TestEnv::with(&body).await;
    env.fake
        .script(&ids[0], std::iter::repeat_n(Scripted::Errcode(-1), 10));

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 1, "{run:?}");
    let row = &env.store().await.deliveries(1).await.unwrap()[0];
    assert_eq!(
        (row.status.as_str(), row.attempts, row.errcode),
        ("failed", 4, Some(-1))
    );
    assert_eq!(env.fake.send_requests(), 4);
}

#[tokio::test]
async fn refused_43101_is_recorded_at_once_and_never_retried() {
    let (ids, body) = ids(3);
    let env = TestEnv::with(&body).await;
    env.fake.script(&ids[1], [Scripted::Errcode(43101)]);
    env.fake.script(&ids[2], [Scripted::Errcode(40003)]);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 1, "some deliveries failed: {run:?}");
    assert!(
        run.stdout
            .contains("1 sent, 0 failed, 1 refused, 1 invalid"),
        "{}",
        run.stdout
    );
    assert_eq!(env.fake.send_requests(), 3, "no retry of permanent errors");
    let rows = env.store().await.deliveries(1).await.unwrap();
    // 40003: an openid WeChat does not know for this app is invalid, not failed.
    let foreign = rows.iter().find(|r| r.openid == ids[2]).unwrap();
    assert_eq!(
        (foreign.status.as_str(), foreign.errcode),
        ("invalid", Some(40003))
    );
    let refused = rows.iter().find(|r| r.openid == ids[1]).unwrap();
    assert_eq!(
        (refused.status.as_str(), refused.errcode, refused.attempts),
        ("refused", Some(43101), 1)
    );
    assert!(
        refused.errmsg.as_deref().unwrap().contains("rid:"),
        "errmsg kept for support"
    );
}

#[tokio::test]
async fn a_value_breaking_its_keyword_rule_is_caught_before_any_call() {
    let (ids, mut body) = ids(2);
    body.push_str(&format!(
        "\n[[recipients]]\nopenid = \"oTooLong00000000000000000000\"\njobs = [\"daily\"]\nname = \"{}\"\n",
        "x".repeat(30)
    ));
    let env = TestEnv::with(&body).await;

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("2 sent, 0 failed, 0 refused, 1 invalid"),
        "{}",
        run.stdout
    );
    assert_eq!(
        env.fake.send_requests(),
        2,
        "WeChat never saw the invalid message (no 47003)"
    );
    let rows = env.store().await.deliveries(1).await.unwrap();
    let bad = rows
        .iter()
        .find(|r| r.openid == "oTooLong00000000000000000000")
        .unwrap();
    assert_eq!(bad.status.as_str(), "invalid");
    assert_eq!(bad.attempts, 0);
    assert!(
        bad.errmsg.as_deref().unwrap().starts_with("thing1: "),
        "{:?}",
        bad.errmsg
    );
    assert!(ids.iter().all(|id| env.fake.accepted_for(id) == 1));
}

#[tokio::test]
async fn on_overflow_truncate_shortens_a_long_thing_instead() {
    let body = format!(
        "{}\n[[recipients]]\nopenid = \"oLongName0000000000000000000\"\njobs = [\"daily\"]\nname = \"{}\"\n",
        daily_job("on_overflow = \"truncate\""),
        "y".repeat(30)
    );
    let env = TestEnv::with(&body).await;

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    let accepted = env.fake.accepted();
    let value = accepted[0].body.as_ref().unwrap()["data"]["thing1"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(value.chars().count(), 20);
    assert!(value.ends_with('…'));
}

#[tokio::test]
async fn a_lost_reply_is_recorded_unknown_and_not_resent() {
    let (ids, body) = ids(2);
    let env = TestEnv::with(&body).await;
    // The fake accepts the message, then answers after the 1 s client timeout.
    env.fake
        .script(&ids[0], [Scripted::Hang(Duration::from_secs(3))]);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("1 unknown"), "{}", run.stdout);
    let rows = env.store().await.deliveries(1).await.unwrap();
    let lost = rows.iter().find(|r| r.openid == ids[0]).unwrap();
    assert_eq!(lost.status.as_str(), "unknown");
    assert_eq!(env.fake.accepted_for(&ids[0]), 1);
    // The next send is a new run; run 1 is complete and is not resumed or resent.
    assert_eq!(
        env.store()
            .await
            .unfinished_runs(&job_name("daily"))
            .await
            .unwrap(),
        Vec::<i64>::new()
    );
}

#[tokio::test]
async fn on_unknown_retry_resends_a_lost_reply() {
    let (ids, body) = ids(1);
    let env = TestEnv::new(FakeOptions::default(), "on_unknown = \"retry\"", &body).await;
    env.fake
        .script(&ids[0], [Scripted::Hang(Duration::from_secs(3))]);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    let row = &env.store().await.deliveries(1).await.unwrap()[0];
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 2));
    assert_eq!(
        env.fake.accepted_for(&ids[0]),
        2,
        "at-least-once was asked for"
    );
}

#[tokio::test]
async fn daily_quota_45009_stops_the_run_and_a_later_send_resumes_it() {
    let (ids, body) = ids(6);
    let opts = FakeOptions {
        daily_quota: 2,
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 1", &body).await;

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.contains("2 sent") && run.stdout.contains("4 pending"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("stopped: WeChat answered errcode 45009"),
        "{}",
        run.stdout
    );
    assert_eq!(
        env.fake.send_requests(),
        3,
        "no send after the quota answer"
    );

    // The next day: the same database and config, against a WeChat with quota left.
    let env2 = TestEnv {
        dir: env.dir,
        fake: FakeWechat::start(FakeOptions::default()).await,
        config: env.config,
        http: env.http,
        db_url: env.db_url,
    };
    let again = env2.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.starts_with("daily: run 1: 6 sent"),
        "resumed run 1: {}",
        again.stdout
    );
    let sent = env2.store().await.sent_per_openid(1).await.unwrap();
    assert_eq!(sent.len(), 6);
    assert!(sent.values().all(|n| *n == 1));
    assert_eq!(
        env2.fake.accepted_count(),
        4,
        "only the pending four were sent"
    );
    let _ = ids;
}

#[tokio::test]
async fn sends_honour_the_rate_limit() {
    let (_, body) = ids(9);
    // The fake answers 45011 past 8 sends in a second; wxpush is held to 4/s (burst 4),
    // which can never put more than 8 into one second. Unlimited, 9 would.
    let opts = FakeOptions {
        rate_limit_per_sec: 8,
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "rate_limit_per_sec = 4", &body).await;

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.fake.accepted_count(), 9);
    assert_eq!(env.fake.send_requests(), 9, "no send was answered 45011");
}

#[tokio::test]
async fn dry_run_prints_every_message_and_calls_nothing() {
    let (_, mut body) = ids(2);
    body.push_str(
        "\n[[recipients]]\nopenid = \"oNoName000000000000000000000\"\njobs = [\"daily\"]\n",
    );
    let env = TestEnv::with(&body).await;

    let run = env.wxpush(&["send", "daily", "--dry-run"]).await;

    assert_eq!(run.code, 1, "one message is invalid: {run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("{\"touser\""))
            .count()
            == 2
    );
    assert!(
        run.stdout
            .contains("INVALID oNoName000000000000000000000: thing1: {{name}} has no value"),
        "{}",
        run.stdout
    );
    assert!(lines[3].contains("2 valid, 1 invalid of 3 messages; nothing was sent or recorded"));
    assert_eq!(env.fake.send_requests() + env.fake.token_requests(), 0);
    assert!(!env.db_path().exists(), "no database was created");
}
