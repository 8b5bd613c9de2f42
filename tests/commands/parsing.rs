//! What cannot be an openid or a template id is refused where it comes in, and
//! names from the mini program cannot reorder or hide text in a message.

use serde_json::{Value, json};

use crate::helpers::*;

async fn post(addr: std::net::SocketAddr, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/subscriptions"))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_impossible_openid_is_refused_by_the_config_check_and_the_cli() {
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&["abc"]))).await;
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "recipients[0].openid: openid \"abc\" is 3 characters; WeChat openids are 28"
        ),
        "{}",
        run.stderr
    );

    let env = TestEnv::with(&daily_job("")).await;
    for args in [
        &["recipients", "add", "abc", "--job", "daily", "--name", "x"][..],
        // A unionid is 29 characters.
        &[
            "recipients",
            "add",
            "oUser00000000000000000000000001",
            "--job",
            "daily",
            "--name",
            "x",
        ],
    ] {
        let run = env.wxpush(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("WeChat openids are 28"),
            "{}",
            run.stderr
        );
    }
    assert!(!env.db_path().exists(), "nothing was written");
}

/// A daemon with the intake API on, a job sending to everyone subscribed.
async fn intake_daemon() -> (TestEnv, tokio::process::Child) {
    let body = format!(
        "\n[intake]\nenabled = true\n{}",
        daily_job("audience = \"subscribed\"")
    );
    let env = TestEnv::with(&body).await;
    let child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    (env, child)
}

#[tokio::test]
async fn intake_refuses_a_results_key_that_is_not_a_template_id_and_stores_nothing() {
    let (env, mut child) = intake_daemon().await;
    let who = "oPath00000000000000000000001".to_owned();
    let code = env.fake.login(&who);
    let (status, body) = post(
        env.http,
        &json!({"code": code, "results": {"../../etc/passwd": "accept"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "results.../../etc/passwd", "{body}");
    assert_eq!(
        env.fake.code_requests(),
        0,
        "refused before the code exchange"
    );
    let store = env.store().await;
    assert!(
        store
            .consents_of(&appid(APPID), &oid(&who))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .subscriber(&appid(APPID), &oid(&who))
            .await
            .unwrap()
            .is_none()
    );
    stop(&mut child).await;
}

#[tokio::test]
async fn intake_names_lose_bidi_overrides_and_zero_width_characters() {
    let (env, mut child) = intake_daemon().await;
    let who = openids(1).remove(0);
    let code = env.fake.login(&who);
    let (status, body) = post(
        env.http,
        &json!({"code": code, "results": {"tmpl-checkin": "accept"},
                "name": "\u{202E}Li\u{200B}Lei\u{2066}", "data": {"room": "3\u{200D}-101\u{FEFF}"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let store = env.store().await;
    let person = store
        .subscriber(&appid(APPID), &oid(&who))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(person.name.as_deref(), Some("LiLei"));
    assert_eq!(person.vars["room"], "3-101");
    stop(&mut child).await;

    // And what is sent carries the clean name.
    let sent = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(sent.code, 0, "{sent:?}");
    let accepted = env.fake.accepted();
    let body = accepted[0].body.as_ref().unwrap();
    assert_eq!(body["data"]["thing1"]["value"], "LiLei, check in", "{body}");
}
