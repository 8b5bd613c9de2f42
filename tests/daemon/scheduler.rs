//! The daemon: firing on schedule in a time zone, catch-up, clean shutdown.

use std::time::Duration;

use crate::helpers::*;

/// A Monday 00:00 UTC: the `*/2` slots in-process daemons are measured from.
fn monday() -> chrono::DateTime<chrono::Utc> {
    "2026-01-05T00:00:00Z".parse().unwrap()
}

/// A second after `monday()`, between two `*/2` slots: where daemons start.
fn odd_second() -> chrono::DateTime<chrono::Utc> {
    monday() + chrono::Duration::seconds(1)
}

fn every_second_job(tz: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "tick"
cron = "*/2 * * * * *"
timezone = "{tz}"
template_id = "tmpl-tick"
[jobs.data]
thing1 = "tick for {{{{name}}}}"
time2 = "{{{{time}}}}"
"#
    )
}

fn tick_recipients(ids: &[&str]) -> String {
    ids.iter()
        .map(|o| format!("\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"tick\"]\nname = \"n\"\n"))
        .collect()
}

async fn sigterm(child: &tokio::process::Child) {
    signal(child, "-TERM").await;
}

#[tokio::test]
async fn the_daemon_fires_on_schedule_and_stops_cleanly_on_sigterm() {
    let body = format!(
        "{}{}",
        // Every second rather than every other, so that two runs come soon.
        every_second_job("America/New_York").replace("*/2 * * * * *", "* * * * * *"),
        tick_recipients(&[
            "oTick00000000000000000000001",
            "oTick00000000000000000000002"
        ])
    );
    let env = TestEnv::with(&body).await;
    let mut child = env.command(&["run"]).spawn().unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.fake.accepted_count() < 4 {
        still_running(&mut child);
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not fire twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = stop(&mut child).await;

    assert_eq!(status.code(), Some(0));
    let runs = env
        .store()
        .await
        .runs(Some(&job_name("tick")), 100)
        .await
        .unwrap();
    assert!(runs.len() >= 2, "{runs:?}");
    for r in runs.iter().filter(|r| r.counts.total > 0) {
        assert_eq!(
            r.slot.timestamp_subsec_nanos(),
            0,
            "slots are whole seconds"
        );
        assert!(r.status != wxpush::domain::RunStatus::Stopped);
    }
    // The time keyword is rendered in New York time for the slot.
    let accepted = env.fake.accepted();
    let first = accepted[0].body.as_ref().unwrap()["data"]["time2"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let slot = runs.iter().rev().find(|r| r.counts.sent > 0).unwrap().slot;
    let ny = slot
        .with_timezone(&chrono_tz::America::New_York)
        .format("%H:%M")
        .to_string();
    assert_eq!(first, ny);
}

const MINUTELY: &str = r#"
[[jobs]]
name = "minutely"
cron = "* * * * *"
timezone = "Asia/Shanghai"
template_id = "tmpl"
catch_up = "10m"
[jobs.data]
thing1 = "hello {{name}}"

[[recipients]]
openid = "oLate00000000000000000000001"
jobs = ["minutely"]
name = "late"
"#;

#[tokio::test]
async fn sigterm_during_a_run_finishes_in_flight_sends_and_the_run_resumes_later() {
    let (ids, body) = daily_audience(30);
    let opts = FakeOptions {
        latency: Duration::from_millis(60),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 2", &body).await;
    let mut child = env
        .command(&["send", "daily", "--again"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20, "four sends", || env.fake.accepted_count() >= 4).await;
    sigterm(&child).await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(3), "interrupted");

    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| matches!(r.status.as_str(), "sent" | "pending")),
        "nothing left sending or unknown"
    );
    let sent = rows.iter().filter(|r| r.status.as_str() == "sent").count();
    assert_eq!(
        sent as u64,
        env.fake.accepted_count(),
        "every accepted send was recorded"
    );

    // On record as what it is: interrupted, resumable; no process runs it.
    let listed = env.wxpush(&["runs", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["status"], "interrupted", "{listed}");
    let table = env.wxpush(&["runs"]).await;
    assert!(table.stdout.contains("interrupted"), "{table:?}");
    let shown = env.wxpush(&["runs", "show", "1"]).await;
    assert!(shown.stdout.contains("interrupted"), "{shown:?}");
    if !on_postgres() {
        // A daemon that cannot resume it yet (another process holds the job)
        // says so in its metrics.
        let held = std::fs::File::options()
            .write(true)
            .open(env.dir.path().join("wxpush.db.locks/daily.lock"))
            .unwrap();
        held.lock().unwrap();
        let mut daemon = env.command(&["run"]).spawn().unwrap();
        wait_http(env.http).await;
        let metrics = reqwest::get(format!("http://{}/metrics", env.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("wxpush_runs_unfinished{")
                    && l.contains("wxpush_job=\"daily\"")
                    && l.contains("status=\"interrupted\"")
                    && l.ends_with(" 1")),
            "{metrics}"
        );
        assert_eq!(stop(&mut daemon).await.code(), Some(0));
        drop(held);
    }

    let again = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(ids.iter().all(|id| env.fake.accepted_for(id) == 1));
    let listed = env.wxpush(&["runs", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["status"], "done", "{listed}");
}

/// `send` with a token endpoint slower than any test, stopped by SIGTERM while it
/// waits: it must stop at once, send nothing and say so.
async fn sigterm_while_waiting_for_a_token(extra_job_keys: &str, run_started: bool) {
    let body = format!(
        "{}{}",
        daily_job(extra_job_keys),
        recipients(&[
            "oWait00000000000000000000001",
            "oWait00000000000000000000002"
        ])
    );
    let opts = FakeOptions {
        token_latency: Duration::from_secs(30),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &body).await;
    let child = env
        .command(&["send", "daily", "--again"])
        .env("WXPUSH__WECHAT__TIMEOUT", "60s")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(20, "a token request", || env.fake.token_requests() >= 1).await;
    sigterm(&child).await;
    // Well inside the token's 30 s: the process did not wait for it.
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stopped without waiting for the token")
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "interrupted");
    assert_eq!(env.fake.accepted_count(), 0);
    let rows = env.store().await.deliveries(1).await.unwrap();
    let pending = rows.iter().filter(|r| r.status.as_str() == "pending");
    let expected = if run_started { 2 } else { 0 };
    assert_eq!(
        pending.count(),
        expected,
        "nothing sent, nothing lost: {rows:?}"
    );
    assert_eq!(rows.len(), expected);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .for_each(|l| assert!(!l.contains("nothing to send"), "{l}"));
}

#[tokio::test]
async fn sigterm_while_the_template_lookup_waits_for_a_token_stops_at_once() {
    // Consent is checked by default, so the template's kind is looked up first.
    sigterm_while_waiting_for_a_token("", false).await;
}

#[tokio::test]
async fn sigterm_while_a_send_waits_for_a_token_stops_at_once() {
    sigterm_while_waiting_for_a_token("consent = \"unchecked\"", true).await;
}

/// 00:00:30 UTC on a Monday: half a minute after a `MINUTELY` slot.
fn half_past() -> chrono::DateTime<chrono::Utc> {
    "2026-01-05T00:00:30Z".parse().unwrap()
}

/// The runs of `job`, by slot.
async fn runs_of(daemon: &Daemon, job: &str) -> Vec<wxpush::storage::RunRow> {
    let mut runs = daemon
        .app
        .store
        .runs(Some(&job_name(job)), 100)
        .await
        .unwrap();
    runs.sort_by_key(|r| r.slot);
    runs
}

#[tokio::test]
async fn a_slot_missed_while_down_is_caught_up_once_on_start() {
    let env = TestEnv::with(MINUTELY).await;
    // A daemon had this schedule loaded ten minutes ago, then went down.
    let schedule = wxpush::domain::Schedule::parse("* * * * *", chrono_tz::Asia::Shanghai).unwrap();
    let ten_minutes_before = half_past() - chrono::Duration::minutes(10);
    env.store()
        .await
        .schedule_since(&job_name("minutely"), &schedule.key(), ten_minutes_before)
        .await
        .unwrap();
    let daemon = env.daemon_at(half_past()).await;
    // Accepted by WeChat is not yet recorded: wait for the run's own record.
    let mut runs = Vec::new();
    for _ in 0..1500 {
        runs = runs_of(&daemon, "minutely").await;
        if runs.iter().any(|r| r.counts.sent == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.stop().await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, wxpush::domain::Trigger::CatchUp);
    assert_eq!(runs[0].counts.sent, 1);
    assert_eq!(
        runs[0].slot,
        "2026-01-05T00:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );

    // Started again within the same minute: that slot has a run, nothing repeats.
    let daemon = env
        .daemon_at(half_past() + chrono::Duration::seconds(5))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = runs_of(&daemon, "minutely").await;
    daemon.stop().await.unwrap();
    assert_eq!(after.len(), 1, "no second catch-up of one slot: {after:?}");
    assert_eq!(env.fake.accepted_count(), 1);
}

#[tokio::test]
async fn a_new_install_does_not_catch_up_a_slot_from_before_it_started() {
    let env = TestEnv::with(MINUTELY).await;
    // Half a minute after a slot, well inside `catch_up = "10m"`: only history
    // would make it due.
    let daemon = env.daemon_at(half_past()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(runs_of(&daemon, "minutely").await.is_empty());
    // The next slot, which came while it ran, is sent.
    daemon.advance(Duration::from_secs(30)).await;
    wait_until(10, "the next slot", || env.fake.accepted_count() >= 1).await;
    let runs = runs_of(&daemon, "minutely").await;
    daemon.stop().await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, wxpush::domain::Trigger::Schedule);
}

#[tokio::test]
async fn the_first_slot_after_start_fires_even_while_startup_is_slow() {
    let body = format!(
        "{}{}",
        every_second_job("Asia/Shanghai"),
        tick_recipients(&["oEarly0000000000000000000001"])
    );
    // The token takes longer than the gap between slots, so a startup that held the
    // job would make the first slot look like it came during a previous run.
    let opts = FakeOptions {
        token_latency: Duration::from_millis(800),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &body).await;
    let daemon = env.daemon_at(odd_second()).await;
    daemon.advance(Duration::from_secs(1)).await;
    daemon.advance(Duration::from_secs(2)).await;
    wait_until(15, "a send", || env.fake.accepted_count() >= 1).await;
    let runs = runs_of(&daemon, "tick").await;
    daemon.stop().await.unwrap();
    assert_eq!(
        runs[0].slot,
        monday() + chrono::Duration::seconds(2),
        "{runs:?}"
    );
    assert_eq!(runs[0].counts.total, 1, "the first slot ran: {runs:?}");
}

#[tokio::test]
async fn a_slot_that_fires_while_the_previous_run_is_going_is_recorded_skipped() {
    let body = format!(
        "{}{}",
        every_second_job("Asia/Shanghai"),
        tick_recipients(&["oSlow00000000000000000000001"])
    );
    let env = TestEnv::with(&body).await;
    // 45011 makes the first run wait a minute before its retry: it is still going
    // when the next slot fires.
    env.fake
        .script("oSlow00000000000000000000001", [Scripted::Errcode(45011)]);
    let daemon = env.daemon_at(odd_second()).await;
    daemon.advance(Duration::from_secs(1)).await;
    wait_until(10, "the first try", || env.fake.send_requests() >= 1).await;
    daemon.advance(Duration::from_secs(2)).await;
    let skipped = loop {
        let runs = runs_of(&daemon, "tick").await;
        if let Some(r) = runs
            .iter()
            .find(|r| r.status == wxpush::domain::RunStatus::Skipped)
        {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A shutdown during a retry wait is clean.
    daemon.stop().await.unwrap();

    assert_eq!(skipped.counts.total, 0);
    assert_eq!(skipped.slot, monday() + chrono::Duration::seconds(4));
    assert!(skipped.note.as_deref().unwrap().contains("still going"));
    let runs = env
        .store()
        .await
        .runs(Some(&job_name("tick")), 20)
        .await
        .unwrap();
    let first = runs.iter().find(|r| r.counts.total == 1).unwrap();
    assert_eq!(
        first.status,
        wxpush::domain::RunStatus::Interrupted,
        "interrupted by the shutdown, resumable"
    );
    assert_eq!(
        first.counts.pending, 1,
        "the interrupted retry is pending, not lost"
    );
    assert_eq!(env.fake.accepted_count(), 0);
}
