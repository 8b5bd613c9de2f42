//! Sends on demand from `wxpush sends add`, sent by the daemon when due: at
//! their time and not before, never after a cancel, expired when the daemon was
//! down past their `expires_at`, sent at start when it was down but they are
//! still in time, one message per idempotency key, and a one-time template's
//! credit needed.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::helpers::*;

pub(crate) const ANN: &str = "oAnn000000000000000000000000";

/// 09:00 in Shanghai (01:00 UTC): the daemon's clock starts here; the `daily`
/// job's slot is its next morning, far from every send.
fn start() -> DateTime<Utc> {
    "2026-12-07T01:00:30Z".parse().unwrap()
}

/// `start` plus `minutes`, as `--at` takes it (with Shanghai's offset).
fn at(minutes: i64) -> String {
    (start() + chrono::Duration::minutes(minutes))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339()
}

/// A database with the account's template list cached (as after `check`).
/// `start` plus `seconds`, in Shanghai's offset.
fn at_secs(seconds: i64) -> String {
    (start() + chrono::Duration::seconds(seconds))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339()
}

async fn env() -> TestEnv {
    let env = TestEnv::with(&format!("{}{}", recipients(&[ANN]), daily_job(""))).await;
    cache_templates(&env).await;
    env
}

async fn cache_templates(env: &TestEnv) {
    env.store().await.close().await;
    let check = env.wxpush(&["check"]).await;
    assert_eq!(check.code, 0, "{check:?}");
}

/// `sends add` with a template's data, printing JSON; returns the send's id.
pub(crate) async fn add(env: &TestEnv, extra: &[&str]) -> i64 {
    let mut args = vec![
        "sends",
        "add",
        "--to",
        ANN,
        "--template",
        "tmpl-checkin",
        "--data",
        "thing1=取件提醒",
        "--data",
        "date2=2026-12-07",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = env.wxpush(&args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    v["id"].as_i64().expect("an id")
}

async fn status(env: &TestEnv, id: i64) -> String {
    let run = env
        .wxpush(&["sends", "show", &id.to_string(), "--json"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_send_goes_at_its_time_once_and_a_cancelled_one_never() {
    let env = env().await;
    let later = add(&env, &["--at", &at(10), "--cancel-key", "order:2"]).await;
    let dropped = add(&env, &["--at", &at(10), "--cancel-key", "order:1"]).await;
    let daemon = env.daemon_at(start()).await;
    daemon.advance(Duration::from_secs(60)).await;
    assert_eq!(env.fake.accepted_count(), 0, "not before its time");
    let cancel = env
        .wxpush(&["sends", "cancel", "--cancel-key", "order:1"])
        .await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(cancel.stdout.contains("cancelled 1 send"), "{cancel:?}");
    daemon
        .advance_until(Duration::from_secs(60), 30, "the send went", async || {
            env.fake.accepted_count() >= 1
        })
        .await;
    for _ in 0..5 {
        daemon.advance(Duration::from_secs(60)).await;
    }
    daemon.stop().await.unwrap();
    assert_eq!(
        env.fake.accepted_for(ANN),
        1,
        "one message: the cancelled one never went"
    );
    let sent = &env.fake.accepted()[0];
    let body = sent.body.as_ref().unwrap();
    assert_eq!(body["template_id"], "tmpl-checkin");
    assert_eq!(body["data"]["thing1"]["value"], "取件提醒");
    assert_eq!(status(&env, later).await, "sent");
    assert_eq!(status(&env, dropped).await, "cancelled");
    // Cancelling what went is refused (exit 1), saying why.
    let late = env.wxpush(&["sends", "cancel", &later.to_string()]).await;
    assert_eq!(late.code, 1, "{late:?}");
    assert!(
        late.stdout.contains("too late to cancel: it is sent"),
        "{late:?}"
    );
    // So is cancelling its group: exit 1, saying how many were too late.
    let group = env
        .wxpush(&["sends", "cancel", "--cancel-key", "order:2"])
        .await;
    assert_eq!(group.code, 1, "{group:?}");
    assert!(
        group.stdout.contains("cancelled 0 send")
            && group.stdout.contains("1 send(s) of it were too late"),
        "{group:?}"
    );
}

#[tokio::test]
async fn the_same_key_makes_one_send_and_other_arguments_with_it_are_refused() {
    let env = env().await;
    let first = add(&env, &["--at", &at(5), "--key", "order-shipped:42"]).await;
    let again = add(&env, &["--at", &at(5), "--key", "order-shipped:42"]).await;
    assert_eq!(first, again, "a retry finds the first send");
    let other = env
        .wxpush(&[
            "sends",
            "add",
            "--to",
            ANN,
            "--template",
            "tmpl-checkin",
            "--data",
            "thing1=x",
            "--data",
            "date2=2026-12-07",
            "--key",
            "order-shipped:42",
        ])
        .await;
    assert_eq!(other.code, 2, "{other:?}");
    assert!(
        other
            .stderr
            .contains("--key: order-shipped:42 was used for send"),
        "{other:?}"
    );
    let daemon = env.daemon_at(start()).await;
    daemon
        .advance_until(Duration::from_secs(60), 30, "the send went", async || {
            env.fake.accepted_count() >= 1
        })
        .await;
    daemon.advance(Duration::from_secs(60)).await;
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_for(ANN), 1);
}

#[tokio::test]
async fn while_the_daemon_was_down_a_send_still_in_time_goes_at_start_and_a_late_one_expires() {
    let env = env().await;
    // Both were due before the daemon started: one may still go, one may not.
    let in_time = add(&env, &["--at", &at(-30), "--expires", &at(60)]).await;
    let late = add(&env, &["--at", &at(-30), "--expires", &at(-1)]).await;
    let daemon = env.daemon_at(start()).await;
    daemon
        .advance_until(
            Duration::from_secs(1),
            30,
            "the send in time went",
            async || env.fake.accepted_count() >= 1,
        )
        .await;
    daemon.advance(Duration::from_secs(1)).await;
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_count(), 1);
    assert_eq!(status(&env, in_time).await, "sent");
    assert_eq!(status(&env, late).await, "expired");
}

#[tokio::test]
async fn bad_arguments_are_one_line_naming_the_flag_and_nothing_is_stored() {
    let env = env().await;
    for (args, says) in [
        (
            vec![
                "--template",
                "tmpl-checkin",
                "--data",
                "thing1=x",
                "--at",
                "2026-12-07T09:00:00",
            ],
            "--at:",
        ),
        (
            vec!["--template", "tmpl-checkin", "--data", "thing1=x"],
            "has the keywords date2, thing1; given thing1",
        ),
        (
            vec!["--template", "tmpl-nope", "--data", "thing1=x"],
            "tmpl-nope is not in the account's template list",
        ),
        (
            vec!["--template", "tmpl-checkin", "--data", "thing1"],
            "--data: \"thing1\" is not NAME=VALUE",
        ),
        (
            vec!["--template", "tmpl-checkin", "--data", &"太长".repeat(20)],
            "--data",
        ),
        (
            vec![
                "--template",
                "tmpl-checkin",
                "--data",
                "thing1=x",
                "--at",
                "2027-12-07T09:00:00+08:00",
            ],
            "more than 30 days ahead",
        ),
        (vec!["--job", "nope"], "no job named \"nope\""),
    ] {
        let mut all = vec!["sends", "add", "--to", ANN];
        all.extend(args.iter().copied());
        let run = env.wxpush(&all).await;
        assert_eq!(run.code, 2, "{all:?}: {run:?}");
        assert!(run.stderr.contains(says), "{all:?}: {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {run:?}");
    }
    let listed = env.wxpush(&["sends", "--json"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.stdout.trim(), "[]", "nothing stored");
}

#[tokio::test]
async fn a_one_time_template_without_a_credit_is_skipped_without_a_call() {
    let mut opts = FakeOptions::default();
    opts.templates.push(checkin_template());
    opts.templates.push(FakeTemplate {
        id: "tmpl-once".into(),
        content: "{{thing1.DATA}}".into(),
        kind: 2,
        everyone_subscribed: false,
        ..checkin_template()
    });
    let env = TestEnv::new(
        opts,
        "",
        &format!("{}{}", recipients(&[ANN]), daily_job("")),
    )
    .await;
    // `check` caches the template list, so the store knows tmpl-once is one-time.
    cache_templates(&env).await;
    let run = env
        .wxpush(&[
            "sends",
            "add",
            "--to",
            ANN,
            "--template",
            "tmpl-once",
            "--data",
            "thing1=x",
            "--at",
            &at(0),
            "--json",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let id = serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["id"]
        .as_i64()
        .unwrap();
    let daemon = env.daemon_at(start()).await;
    daemon
        .advance_until(Duration::from_secs(1), 30, "the send ended", async || {
            daemon
                .app
                .store
                .send_by_id(id)
                .await
                .unwrap()
                .unwrap()
                .status
                .is_final()
        })
        .await;
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.send_requests(), 0, "no call without consent");
    assert_eq!(status(&env, id).await, "skipped");
}

#[tokio::test]
async fn wechat_away_fails_no_send_and_a_busy_answer_is_retried() {
    let env = env().await;
    let first = add(&env, &["--at", &at(0)]).await;
    env.fake.set_down(true);
    let daemon = env.daemon_at(start()).await;
    for _ in 0..20 {
        daemon.advance(Duration::from_secs(5)).await;
    }
    assert!(env.fake.send_requests() > 1, "tried, and tried again");
    assert_eq!(env.fake.accepted_count(), 0);
    // Given back between tries, or being tried again: never ended for it.
    let waiting = daemon.app.store.send_by_id(first).await.unwrap().unwrap();
    assert!(!waiting.status.is_final(), "not failed: {waiting:?}");
    env.fake.set_down(false);
    // "System busy" once, then accepted: one message.
    let second = add(&env, &["--at", &at(0), "--key", "busy"]).await;
    env.fake.script(ANN, [Scripted::Errcode(-1)]);
    daemon
        // Each step lets the sender act for a moment of real time: enough of
        // them for a loaded machine (the check ends the wait at once).
        .advance_until(Duration::from_secs(5), 400, "both went", async || {
            env.fake.accepted_count() >= 2
        })
        .await;
    daemon.advance(Duration::from_secs(5)).await;
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_for(ANN), 2, "one message each");
    assert_eq!(status(&env, first).await, "sent");
    assert_eq!(status(&env, second).await, "sent");
}

#[tokio::test]
async fn a_send_whose_expiry_passes_while_it_waits_to_retry_ends_expired_never_late() {
    let env = env().await;
    // Due now, never after 30 s from now; the per-minute quota answers first,
    // and WeChat asks for a minute's wait.
    let id = add(&env, &["--at", &at(0), "--expires", &at_secs(30)]).await;
    env.fake.script(ANN, [Scripted::Errcode(45011)]);
    let daemon = env.daemon_at(start()).await;
    wait_until(10, "the first try", || env.fake.send_requests() >= 1).await;
    for _ in 0..30 {
        daemon.advance(Duration::from_secs(5)).await;
        if status(&env, id).await == "expired" {
            break;
        }
    }
    daemon.stop().await.unwrap();
    assert_eq!(status(&env, id).await, "expired");
    assert_eq!(env.fake.send_requests(), 1, "not tried after its expiry");
    assert_eq!(env.fake.accepted_count(), 0);
}

#[tokio::test]
async fn a_shutdown_while_a_send_waits_to_retry_gives_it_back_pending_at_once() {
    let env = env().await;
    let id = add(&env, &["--at", &at(0)]).await;
    env.fake.script(ANN, [Scripted::Errcode(45011)]);
    let daemon = env.daemon_at(start()).await;
    wait_until(10, "the first try", || env.fake.send_requests() >= 1).await;
    // The clock stands still: the minute's wait never ends by itself.
    tokio::time::timeout(Duration::from_secs(10), daemon.stop())
        .await
        .expect("the shutdown does not wait out the retry")
        .unwrap();
    // No request was in flight: pending, for the next start, not unknown.
    let store = env.store().await;
    let left = store.send_by_id(id).await.unwrap().unwrap();
    store.close().await;
    assert_eq!(left.status.as_str(), "pending", "{left:?}");
    let daemon = env.daemon_at(start() + chrono::Duration::minutes(2)).await;
    wait_until(10, "sent at the next start", || {
        env.fake.accepted_count() >= 1
    })
    .await;
    daemon.stop().await.unwrap();
    assert_eq!(status(&env, id).await, "sent");
}

#[tokio::test]
async fn a_lost_reply_is_unknown_and_never_sent_again_and_a_crash_left_in_flight_is_too() {
    // WeChat's timeout here is 1 s: a reply after 2 s is lost.
    let env = env().await;
    let lost = add(&env, &["--at", &at(0)]).await;
    env.fake
        .script(ANN, [Scripted::Hang(Duration::from_secs(2))]);
    let daemon = env.daemon_at(start()).await;
    daemon
        .advance_until(Duration::from_secs(1), 60, "the send ended", async || {
            daemon
                .app
                .store
                .send_by_id(lost)
                .await
                .unwrap()
                .unwrap()
                .status
                .is_final()
        })
        .await;
    for _ in 0..5 {
        daemon.advance(Duration::from_secs(1)).await;
    }
    daemon.stop().await.unwrap();
    assert_eq!(status(&env, lost).await, "unknown");
    assert_eq!(env.fake.send_requests(), 1, "not requested again");

    // A send a crashed daemon left `sending` (claimed by an instance that is
    // gone): the next daemon records it unknown at start and never sends it.
    let crashed = add(&env, &["--at", &at(0), "--key", "crashed"]).await;
    let store = env.store().await;
    assert!(matches!(
        store
            .claim_send(
                &wxpush::storage::DueSend {
                    id: crashed,
                    appid: APPID.into(),
                    one_time: false,
                    job: None,
                    policy: None,
                },
                "dead-instance",
                start(),
                None
            )
            .await
            .unwrap(),
        wxpush::storage::Claim::Claimed(_)
    ));
    store.close().await;
    let daemon = env.daemon_at(start()).await;
    daemon
        .advance_until(
            Duration::from_secs(1),
            30,
            "the crash settled",
            async || {
                daemon
                    .app
                    .store
                    .send_by_id(crashed)
                    .await
                    .unwrap()
                    .unwrap()
                    .status
                    .is_final()
            },
        )
        .await;
    daemon.stop().await.unwrap();
    assert_eq!(status(&env, crashed).await, "unknown");
    assert_eq!(
        env.fake.send_requests(),
        1,
        "the crashed one is not sent again"
    );
}
