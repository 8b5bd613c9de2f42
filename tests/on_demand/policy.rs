//! The delivery policy as operators meet it: two jobs and API sends to one
//! person under one cap; a bypass; quiet hours in each recipient's own zone in
//! one run; and a deferred delivery that survives kill -9 and goes at its time.

use std::time::Duration;

use chrono::Utc;

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000000";
const BOB: &str = "oBob000000000000000000000000";

/// A job named `name` that never fires on its own during a test (1 January only).
fn job(name: &str, policy: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "{name}"
cron = "0 0 9 1 1 *"
timezone = "Asia/Shanghai"
template_id = "tmpl-checkin"
{policy}
[jobs.data]
thing1 = "{{{{name}}}}, check in"
date2 = "{{{{today}}}}"
"#
    )
}

fn person(openid: &str, jobs: &str, tz: &str) -> String {
    format!(
        "\n[[recipients]]\nopenid = \"{openid}\"\njobs = [{jobs}]\nname = \"n\"\ndata = {{ tz = \"{tz}\" }}\n"
    )
}

async fn ready(env: &TestEnv) -> String {
    env.store().await.close().await;
    let check = env.wxpush(&["check"]).await;
    assert_eq!(check.code, 0, "{check:?}");
    check.stdout
}

/// `cli::add` (to Ann) under idempotency key `key`.
async fn add(env: &TestEnv, key: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["--key", key];
    args.extend_from_slice(extra);
    crate::cli::add(env, &args).await
}

async fn shown(env: &TestEnv, id: i64) -> serde_json::Value {
    let run = env
        .wxpush(&["sends", "show", &id.to_string(), "--json"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test]
async fn two_jobs_and_sends_to_one_person_under_a_cap_of_two_get_two_messages() {
    let body = format!(
        "[policy]\nfrequency_caps = [{{ limit = 2, per = \"1d\" }}]\n{}{}{}{}",
        person(ANN, "\"daily\", \"evening\"", "Asia/Shanghai"),
        person(BOB, "\"daily\"", "Asia/Shanghai"),
        job("daily", ""),
        job("evening", "")
    );
    let env = TestEnv::with(&body).await;
    let check = ready(&env).await;
    assert!(
        check.contains("job evening: next fire")
            && check.contains("policy: at most 2 per 1day (app, drop)"),
        "check prints each job's policy: {check}"
    );
    for job in ["daily", "evening"] {
        let run = env.wxpush(&["send", job, "--again"]).await;
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(env.fake.accepted_for(ANN), 2);
    // The cap is full: two more sends are suppressed, and a transactional one
    // that bypasses caps goes.
    let capped = [add(&env, "c1", &[]).await, add(&env, "c2", &[]).await];
    let receipt = add(
        &env,
        "receipt",
        &["--policy", r#"{"bypass":["frequency_caps"]}"#],
    )
    .await;
    let daemon = env.daemon_at(Utc::now()).await;
    daemon
        .advance_until(
            Duration::from_secs(1),
            30,
            "the sends were decided",
            async || env.fake.accepted_for(ANN) >= 3,
        )
        .await;
    daemon.advance(Duration::from_secs(2)).await;
    daemon.stop().await.unwrap();
    // A third run of a job is held for Ann too, and Bob (one message) is not.
    let again = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("1 suppressed"), "{again:?}");
    assert_eq!(
        env.fake.accepted_for(ANN),
        3,
        "two under the cap, and the bypass"
    );
    assert_eq!(env.fake.accepted_for(BOB), 2);
    for id in capped {
        let s = shown(&env, id).await;
        assert_eq!(s["status"], "suppressed", "{s}");
        assert_eq!(s["held_by"], "cap", "{s}");
    }
    assert_eq!(shown(&env, receipt).await["status"], "sent");
}

#[tokio::test]
async fn quiet_hours_are_each_recipients_and_a_deferred_delivery_survives_kill_9() {
    // A window around New York's time now, ending in a few seconds: Ann (New
    // York) is inside it, Bob (Shanghai, 13 h ahead) outside.
    let ny = Utc::now().with_timezone(&chrono_tz::America::New_York);
    // Whole seconds: the window's end is written to the second.
    let end_at =
        chrono::Timelike::with_nanosecond(&(Utc::now() + chrono::Duration::seconds(8)), 0).unwrap();
    let (start, end) = (
        (ny - chrono::Duration::hours(1)).format("%H:%M:%S"),
        end_at
            .with_timezone(&chrono_tz::America::New_York)
            .format("%H:%M:%S"),
    );
    let policy = format!(
        "[jobs.policy]\nquiet_hours = {{ start = \"{start}\", end = \"{end}\", spread = \"0s\" }}\n"
    );
    let body = format!(
        "{}{}{}",
        person(ANN, "\"daily\"", "America/New_York"),
        person(BOB, "\"daily\"", "Asia/Shanghai"),
        job("daily", &policy)
    );
    let env = TestEnv::with(&body).await;
    ready(&env).await;
    let run = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("1 deferred"), "{run:?}");
    assert_eq!(env.fake.accepted_for(BOB), 1, "outside its quiet hours");
    assert_eq!(env.fake.accepted_for(ANN), 0, "inside its quiet hours");
    let statuses = statuses(&env).await;
    assert_eq!(
        statuses.get(ANN).map(String::as_str),
        Some("deferred"),
        "{statuses:?}"
    );

    // A daemon killed with -9 before the window ends, then started again: the
    // deferred delivery goes once, at its time.
    let mut first = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let (_, metrics) = get(env.http, "/metrics").await;
    assert!(metrics.contains("wxpush_policy_deferred 1"), "{metrics}");
    signal(&first, "-KILL").await;
    let _ = first.wait().await;
    assert!(
        Utc::now() < end_at,
        "the test was too slow to kill before the window ended"
    );
    assert_eq!(env.fake.accepted_for(ANN), 0, "not before its time");
    let mut second = env.command(&["run"]).spawn().unwrap();
    wait_until(30, "the deferred delivery went", || {
        env.fake.accepted_for(ANN) >= 1
    })
    .await;
    assert!(Utc::now() >= end_at, "not before the window's end");
    // A send in Ann's quiet hours with `action = "drop"`: suppressed, and counted.
    let (start, end) = (
        (ny - chrono::Duration::hours(1)).format("%H:%M"),
        (ny + chrono::Duration::hours(2)).format("%H:%M"),
    );
    let drop = format!(r#"{{"quiet_hours":{{"start":"{start}","end":"{end}","action":"drop"}}}}"#);
    let add = env
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
            "--tz",
            "America/New_York",
            "--policy",
            &drop,
        ])
        .await;
    assert_eq!(add.code, 0, "{add:?}");
    let counted =
        "wxpush_policy_held_total{app=\"default\",reason=\"quiet_hours\",action=\"drop\"} 1";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get(env.http, "/metrics").await.1;
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
    assert!(metrics.contains("wxpush_policy_deferred 0"), "{metrics}");
    assert_eq!(stop(&mut second).await.code(), Some(0));
    assert_eq!(env.fake.accepted_for(ANN), 1, "exactly once");
    assert_eq!(env.fake.accepted_for(BOB), 1);
    let shown = env.wxpush(&["runs", "show", "1"]).await;
    assert!(
        shown.stdout.contains("held by quiet_hours; send 1: sent"),
        "{shown:?}"
    );
}

#[tokio::test]
async fn a_bad_policy_or_zone_on_a_send_is_refused_naming_it_and_nothing_is_stored() {
    let env = TestEnv::with(&format!(
        "{}{}",
        person(ANN, "\"daily\"", "UTC"),
        job("daily", "")
    ))
    .await;
    ready(&env).await;
    let base = [
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
    ];
    let with = |extra: &'static [&'static str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args
    };
    let bad_window = env
        .wxpush(&with(&[
            "--policy",
            r#"{"quiet_hours":{"start":"08:00","end":"06:00"}}"#,
        ]))
        .await;
    assert_eq!(bad_window.code, 2, "{bad_window:?}");
    assert!(
        bad_window
            .all()
            .contains("--policy: quiet_hours: 08:00–06:00 is 22 h long"),
        "{bad_window:?}"
    );
    let unknown_key = env.wxpush(&with(&["--policy", r#"{"quiet":true}"#])).await;
    assert_eq!(unknown_key.code, 2, "{unknown_key:?}");
    assert!(unknown_key.all().contains("--policy"), "{unknown_key:?}");
    let zone = env.wxpush(&with(&["--tz", "Mars/Olympus"])).await;
    assert_eq!(zone.code, 2, "{zone:?}");
    assert!(
        zone.all()
            .contains("--tz: \"Mars/Olympus\" is not an IANA time zone"),
        "{zone:?}"
    );
    let listed = env.wxpush(&["sends", "--json"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(!listed.stdout.contains(ANN), "nothing stored: {listed:?}");
}
