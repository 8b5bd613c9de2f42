//! `wxpush send JOB --to OPENID`: one test message, never a slot's run.

use fake_wechat::Scripted;

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000001";
const BOB: &str = "oBob000000000000000000000001";

fn listed() -> String {
    format!(
        "{}\n[[recipients]]\nopenid = \"{ANN}\"\njobs = [\"daily\"]\nname = \"Ann\"\n\n[[recipients]]\nopenid = \"{BOB}\"\njobs = [\"daily\"]\nname = \"Bob\"\n",
        recent_daily("")
    )
}

#[tokio::test]
async fn a_test_send_before_the_first_start_reaches_one_person_and_is_not_the_slots_run() {
    let env = TestEnv::with(&listed()).await;
    let run = env.wxpush(&["send", "daily", "--to", ANN]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("daily: test message sent to ")
            && run.stdout.contains("no run was made"),
        "{}",
        run.stdout
    );
    let accepted = env.fake.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].touser, ANN);
    let runs = env.wxpush(&["runs", "--json"]).await;
    assert_eq!(runs.stdout.trim(), "[]", "no run: {}", runs.stdout);

    // The slot still belongs to the schedule: `send` sends it to everyone once.
    let slot = env.wxpush(&["send", "daily"]).await;
    assert_eq!(slot.code, 0, "{slot:?}");
    assert_eq!(
        env.fake.accepted_for(ANN),
        2,
        "the test, then the slot's message"
    );
    assert_eq!(env.fake.accepted_for(BOB), 1);
    // And the daemon's start sends nothing more: the slot ran once.
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    assert_eq!(env.fake.accepted_count(), 3);
}

#[tokio::test]
async fn a_test_send_to_someone_the_job_does_not_list_needs_every_variable() {
    let env = TestEnv::with(&listed()).await;
    let stranger = "oStranger0000000000000000001";
    let run = env.wxpush(&["send", "daily", "--to", stranger]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("job daily: data.thing1")
            && run.stderr.contains("does not list this person"),
        "{}",
        run.stderr
    );
    assert_eq!(env.fake.send_requests(), 0);
    let bad = env
        .wxpush(&["send", "daily", "--to", "not an openid"])
        .await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("--to not an openid: "),
        "{}",
        bad.stderr
    );
    let both = env.wxpush(&["send", "daily", "--to", ANN, "--again"]).await;
    assert_eq!(both.code, 2, "{both:?}");
}

#[tokio::test]
async fn a_refused_test_send_says_the_errcode_and_exits_1() {
    let env = TestEnv::with(&listed()).await;
    env.fake.script(BOB, [Scripted::Errcode(43101)]);
    let run = env.wxpush(&["send", "daily", "--to", BOB, "--json"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["errcode"], 43101, "{v}");
    assert_eq!(v["openid"], BOB);
}
