//! Consent: the intake API, WeChat's event push, and sends gated by consent.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::helpers::*;

const ONCE: &str = "tmpl-once";
const CALLBACK_TOKEN: &str = "pushToken42";

/// A one-time template of the fake account: each acceptance allows one message.
fn once_template() -> FakeTemplate {
    FakeTemplate {
        id: ONCE.into(),
        title: "预约提醒".into(),
        content: "预约:{{thing1.DATA}}\n日期:{{date2.DATA}}\n".into(),
        kind: 2,
        everyone_subscribed: false,
    }
}

fn intake(extra: &str) -> String {
    format!("\n[intake]\nenabled = true\ncallback_token = \"{CALLBACK_TOKEN}\"\n{extra}\n")
}

/// A job on the one-time template; `keys` are extra job keys such as `audience`.
fn once_job(name: &str, keys: &str) -> String {
    format!(
        "\n[[jobs]]\nname = \"{name}\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"{ONCE}\"\n{keys}\n[jobs.data]\nthing1 = \"hello {{{{name}}}}\"\ndate2 = \"{{{{today}}}}\"\n"
    )
}

fn listed(job: &str, openids: &[&str]) -> String {
    openids
        .iter()
        .map(|o| format!("\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"{job}\"]\nname = \"n\"\n"))
        .collect()
}

async fn consent_env(body: &str) -> TestEnv {
    let opts = FakeOptions {
        templates: vec![checkin_template(), once_template()],
        ..FakeOptions::default()
    };
    TestEnv::new(opts, "", body).await
}

async fn post_json(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    post_raw(addr, path, body.to_string().into_bytes()).await
}

async fn post_raw(addr: std::net::SocketAddr, path: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The query WeChat signs a push with, made `ago` seconds ago.
fn signed_at(ago: i64, nonce: &str) -> String {
    let timestamp = (chrono::Utc::now().timestamp() - ago).to_string();
    let sig = wxpush::intake::sign(CALLBACK_TOKEN, &timestamp, nonce);
    format!("signature={sig}&timestamp={timestamp}&nonce={nonce}")
}

/// The query WeChat signs a push with, made now.
fn signed(nonce: &str) -> String {
    signed_at(0, nonce)
}

async fn push(addr: std::net::SocketAddr, query: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/wechat/callback?{query}"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `(status, credits)` of one consent row, if any.
async fn consent(env: &TestEnv, openid: &str, template: &str) -> Option<(String, i64)> {
    let store = env.store().await;
    let rows = store.consents_of(openid).await.unwrap();
    store.close().await;
    rows.into_iter()
        .find(|c| c.template_id == template)
        .map(|c| (c.status, c.credits))
}

/// Records `n` acceptances in wxpush and in the fake (the user tapped accept `n` times).
async fn grant(env: &TestEnv, openid: &str, n: u64) {
    let store = env.store().await;
    for _ in 0..n {
        store
            .record_subscription(
                openid,
                None,
                None,
                &[(ONCE.into(), wxpush::domain::ConsentResult::Accept)],
            )
            .await
            .unwrap();
    }
    store.close().await;
    env.fake.subscribe(openid, ONCE, n);
}

#[tokio::test]
async fn the_intake_api_turns_a_login_code_into_consent_and_never_leaks_the_session() {
    let env = consent_env(&format!("{}{}", intake(""), once_job("remind", ""))).await;
    let mut child = env
        .command(&["run"])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    let alice = "oAlice0000000000000000000001";
    let code = env.fake.login(alice);

    let report = json!({"code": code, "results": {ONCE: "accept", "tmpl-checkin": "reject"},
                        "name": "Alice", "data": {"room": "3-101", "floor": 3}});
    let (status, body) = post_json(env.http, "/v1/subscriptions", &report).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["openid_hint"], "oAl***001");
    assert_eq!(body["accepted"], json!([ONCE]));
    assert!(!body.to_string().contains("SESSIONKEY"), "{body}");

    // A code is single-use; a made-up one is refused. Both are WeChat's errcodes.
    let (status, body) = post_json(env.http, "/v1/subscriptions", &report).await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (502, Some(40163)),
        "{body}"
    );
    let bad = json!({"code": "not-a-real-code", "results": {ONCE: "accept"}});
    let (status, body) = post_json(env.http, "/v1/subscriptions", &bad).await;
    assert_eq!(
        (status, body["errcode"].as_i64()),
        (502, Some(40029)),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("wx.login"),
        "{body}"
    );

    // One acceptance, one credit: the refused reports changed nothing.
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));
    // WeChat pushes the same tap as a popup event: still one credit.
    let popup = format!(
        r#"{{"FromUserName":"{alice}","CreateTime":1700000000,"MsgType":"event","Event":"subscribe_msg_popup_event",
            "List":[{{"TemplateId":"{ONCE}","SubscribeStatusString":"accept","PopupScene":"0"}}]}}"#
    );
    assert_eq!(push(env.http, &signed("1"), &popup).await.0, 200);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));
    assert_eq!(
        consent(&env, alice, "tmpl-checkin").await,
        Some(("reject".into(), 0))
    );
    let store = env.store().await;
    let who = store.subscriber(alice).await.unwrap().unwrap();
    assert_eq!(who.name.as_deref(), Some("Alice"));
    assert_eq!(who.vars["floor"], "3");

    let metrics = reqwest::get(format!("http://{}/metrics", env.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "wxpush_intake_reports_total{outcome=\"recorded\"} 1",
        "wxpush_intake_reports_total{outcome=\"wechat_error\"} 2",
        "wxpush_push_events_total{event=\"subscribe_msg_popup_event\",duplicate=\"false\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
    }

    assert_eq!(stop(&mut child).await.code(), Some(0));
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    assert!(log.contains("subscription recorded"), "{log}");
    for secret in ["SESSIONKEY", "session_key", SECRET, alice] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test]
async fn malformed_oversized_and_too_frequent_reports_are_refused_with_nothing_stored() {
    let env = consent_env(&format!(
        "{}{}",
        intake("max_body_bytes = 1024\nper_ip_per_minute = 8"),
        once_job("remind", "")
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;

    let cases: [(&[u8], &str); 5] = [
        (b"{not json", "body"),
        (br#"{"results":{"tmpl-once":"accept"}}"#, "code"),
        (
            br#"{"code":"c1","results":{"tmpl-once":"maybe"}}"#,
            "results.tmpl-once",
        ),
        (
            br#"{"code":"c1","results":{"tmpl-once":"accept"},"data":{"a b":"x"}}"#,
            "data.a b",
        ),
        (
            br#"{"code":"c1","results":{"tmpl-once":"accept"},"openid":"oX00000000000000000000000000"}"#,
            "openid",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post_raw(env.http, "/v1/subscriptions", body.to_vec()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let huge = json!({"code": "c1", "results": {ONCE: "accept"}, "name": "x".repeat(2000)});
    let (status, answer) = post_json(env.http, "/v1/subscriptions", &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["field"], "body");

    // Nothing reached WeChat and nothing was stored.
    assert_eq!(env.fake.code_requests(), 0);
    let store = env.store().await;
    assert!(
        store
            .consents_of("oX00000000000000000000000000")
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;

    // Six requests so far from this address; the limit is 8 a minute.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post_raw(env.http, "/v1/subscriptions", b"{}".to_vec())
                .await
                .0,
        );
    }
    assert_eq!(statuses, [400, 400, 429, 429]);
    stop(&mut child).await;
}

#[tokio::test]
async fn the_callback_checks_signatures_and_applies_each_push_once() {
    let alice = "oAlice0000000000000000000001";
    let env = consent_env(&format!(
        "{}{}{}",
        intake(""),
        once_job("remind", ""),
        listed("remind", &[alice])
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let url = format!("http://{}/wechat/callback", env.http);

    // The console's URL check: echostr only with a good signature.
    let good = format!("{}&echostr=e-12345", signed("1514711492"));
    let r = reqwest::get(format!("{url}?{good}")).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "e-12345".into())
    );
    let forged = good.replace("signature=", "signature=0");
    let r = reqwest::get(format!("{url}?{forged}")).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(!r.text().await.unwrap().contains("e-12345"));

    // JSON popup event, one entry as an object; WeChat retries it twice more.
    let popup = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{alice}","CreateTime":1700000000,"MsgType":"event",
            "Event":"subscribe_msg_popup_event","List":{{"TemplateId":"{ONCE}","SubscribeStatusString":"accept","PopupScene":"0"}}}}"#
    );
    for _ in 0..3 {
        assert_eq!(
            push(env.http, &signed("77"), &popup).await,
            (200, "success".into())
        );
    }
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // A forged push changes nothing.
    let (status, _) = push(
        env.http,
        &signed("77").replace("nonce=77", "nonce=78"),
        &popup,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // A genuine signature from an hour ago is not honoured: in plaintext mode it
    // does not cover the body, so it could carry a forged one.
    let stale = popup.replace("1700000000", "1700000050");
    assert_eq!(push(env.http, &signed_at(3600, "8"), &stale).await.0, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // XML popup with two acceptances in a List array: two more credits.
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{alice}]]></FromUserName>\
         <CreateTime>1700000100</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>\
         <List><TemplateId><![CDATA[{ONCE}]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>\
         <List><TemplateId><![CDATA[tmpl-checkin]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>\
         </SubscribeMsgPopupEvent></xml>"
    );
    assert_eq!(push(env.http, &signed("5"), &xml).await.0, 200);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 2)));
    assert_eq!(
        consent(&env, alice, "tmpl-checkin").await,
        Some(("accept".into(), 1))
    );

    // Send once (uses one credit), then WeChat reports that message's final result.
    env.fake.subscribe(alice, ONCE, 2);
    let run = env.wxpush(&["send", "remind", "--again"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));
    let store = env.store().await;
    let msgid = store.deliveries(1).await.unwrap()[0].msgid.clone().unwrap();
    store.close().await;
    let sent = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{alice}","CreateTime":"1700000200","MsgType":"event",
            "Event":"subscribe_msg_sent_event","List":{{"TemplateId":"{ONCE}","MsgID":"{msgid}","ErrorCode":"10002","ErrorStatus":"push fail"}}}}"#
    );
    assert_eq!(push(env.http, &signed("9"), &sent).await.0, 200);
    let shown = env.wxpush(&["runs", "show", "1"]).await;
    assert!(shown.stdout.contains("10002 push fail"), "{}", shown.stdout);

    // A forged XML push changes nothing either.
    let forged_xml = format!(
        "<xml><FromUserName>{alice}</FromUserName><CreateTime>1700000250</CreateTime><MsgType>event</MsgType>\
         <Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>{ONCE}</TemplateId>\
         <SubscribeStatusString>accept</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>"
    );
    let (status, _) = push(env.http, "signature=abc&timestamp=1&nonce=2", &forged_xml).await;
    assert_eq!(status, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // The user cancels in settings (XML change event): no credits left.
    let change = format!(
        "<xml><FromUserName>{alice}</FromUserName><CreateTime>1700000300</CreateTime><MsgType>event</MsgType>\
         <Event>subscribe_msg_change_event</Event><SubscribeMsgChangeEvent><List><TemplateId>{ONCE}</TemplateId>\
         <SubscribeStatusString>reject</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>"
    );
    assert_eq!(push(env.http, &signed("3"), &change).await.0, 200);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("reject".into(), 0)));

    // An unreadable push is refused so that WeChat retries it.
    assert_eq!(push(env.http, &signed("2"), "<xml><Fro").await.0, 400);
    stop(&mut child).await;
}

#[tokio::test]
async fn without_consent_there_is_no_api_call_and_43101_clears_the_credit() {
    let (with, without, stale) = (
        "oWith00000000000000000000001",
        "oWithout00000000000000000002",
        "oStale0000000000000000000003",
    );
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", ""),
        listed("remind", &[with, without, stale])
    ))
    .await;
    grant(&env, with, 1).await;
    grant(&env, stale, 1).await;
    // The stale person's acceptance was used up elsewhere: WeChat will answer 43101.
    env.fake.script(stale, [Scripted::Errcode(43101)]);

    let run = env.wxpush(&["send", "remind", "--again"]).await;

    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("1 sent, 0 failed, 1 refused, 0 invalid, 0 unknown, 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(
        env.fake.send_requests(),
        2,
        "no call for the one without consent"
    );
    assert_eq!(env.fake.accepted_for(with), 1);
    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    let status_of = |o: &str| {
        let d = rows.iter().find(|d| d.openid == o).unwrap();
        (d.status.as_str(), d.errmsg.clone())
    };
    assert_eq!(status_of(without), ("skipped", Some("no consent".into())));
    assert_eq!(status_of(stale).0, "refused");
    store.close().await;
    assert_eq!(consent(&env, with, ONCE).await, Some(("accept".into(), 0)));
    assert_eq!(consent(&env, stale, ONCE).await, Some(("accept".into(), 0)));
    assert_eq!(consent(&env, without, ONCE).await, None);

    // Next time nobody has a credit: no calls at all.
    let again = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(again.stdout.contains("0 sent"), "{}", again.stdout);
    assert!(again.stdout.contains("3 skipped"), "{}", again.stdout);
    assert_eq!(env.fake.send_requests(), 2);
}

#[tokio::test]
async fn a_subscribed_audience_is_everyone_with_consent_and_only_them() {
    let (twice, once, refused) = (
        "oTwice0000000000000000000001",
        "oOnce00000000000000000000002",
        "oRefused00000000000000000003",
    );
    let env = consent_env(&once_job("remind", "audience = \"subscribed\"")).await;
    grant(&env, twice, 2).await;
    grant(&env, once, 1).await;
    let store = env.store().await;
    for (who, name) in [(once, "Ona"), (twice, "Tw")] {
        store
            .record_subscription(who, Some(name), None, &[])
            .await
            .unwrap();
    }
    store
        .record_subscription(
            refused,
            Some("R"),
            None,
            &[(ONCE.into(), wxpush::domain::ConsentResult::Reject)],
        )
        .await
        .unwrap();
    store.close().await;

    // The dry run renders the same audience, without a call.
    let dry = env.wxpush(&["send", "remind", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("2 valid, 0 invalid of 2 messages"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("hello Ona") && !dry.stdout.contains(refused));
    assert_eq!(env.fake.send_requests(), 0);

    let first = env.wxpush(&["send", "remind", "--again"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stdout.contains("2 sent") && first.stdout.contains("of 2 "),
        "{}",
        first.stdout
    );
    let second = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(
        second.stdout.contains("1 sent") && second.stdout.contains("of 1 "),
        "{}",
        second.stdout
    );
    let third = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(third.stdout.contains("of 0 "), "{}", third.stdout);

    assert_eq!(env.fake.accepted_for(twice), 2);
    assert_eq!(env.fake.accepted_for(once), 1);
    assert_eq!(env.fake.accepted_for(refused), 0);
    assert_eq!(env.fake.send_requests(), 3, "not one wasted call");
    // The name given through the intake API fills {{name}} for subscribed people.
    let to_once = env
        .fake
        .accepted()
        .into_iter()
        .find(|a| a.touser == once)
        .unwrap();
    assert_eq!(
        to_once.body.unwrap()["data"]["thing1"]["value"],
        "hello Ona"
    );
}

#[tokio::test]
async fn a_one_time_credit_is_used_exactly_once_by_concurrent_runs() {
    let people: Vec<String> = (1..=40).map(|i| format!("oShared{i:021}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    // Two jobs on the same one-time template, both listing everyone.
    let body = format!(
        "{}{}{}",
        once_job("morning", ""),
        once_job("evening", ""),
        refs.iter()
            .map(|o| format!("\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"morning\", \"evening\"]\nname = \"n\"\n"))
            .collect::<String>()
    );
    let opts = FakeOptions {
        templates: vec![once_template()],
        latency: std::time::Duration::from_millis(5),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 4", &body).await;
    // Create the database (and sync the file's recipients) before the race.
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    for p in &refs {
        grant(&env, p, 1).await;
    }

    let (a, b) = tokio::join!(
        env.wxpush(&["send", "morning", "--again"]),
        env.wxpush(&["send", "evening", "--again"])
    );

    assert!(a.code <= 1 && b.code <= 1, "{a:?} {b:?}");
    for p in &refs {
        assert_eq!(env.fake.accepted_for(p), 1, "{p}");
        assert_eq!(
            consent(&env, p, ONCE).await,
            Some(("accept".into(), 0)),
            "{p}"
        );
    }
    // Whichever run held the credit sent; the other skipped without a call.
    assert_eq!(env.fake.send_requests(), 40);
    let store = env.store().await;
    let (r1, r2) = (
        store.run(1).await.unwrap().unwrap().counts,
        store.run(2).await.unwrap().unwrap().counts,
    );
    assert_eq!(r1.sent + r2.sent, 40, "{r1:?} {r2:?}");
    assert_eq!(r1.skipped + r2.skipped, 40, "{r1:?} {r2:?}");
}

#[tokio::test]
async fn check_verifies_templates_and_warns_about_one_time_templates_on_daily_jobs() {
    let env = consent_env(&once_job("remind", "")).await;
    let run = env
        .command(&["check"])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("warning: ")
            && run
                .stderr
                .contains("jobs[0] (remind): template \"预约提醒\" is one-time"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("fires every 1day"), "{}", run.stderr);
    assert!(
        run.stderr.contains("is one-time and [intake] is disabled"),
        "{}",
        run.stderr
    );

    // A template the account does not have, and keys that are not its keywords.
    env.write_config(
        "",
        &(once_job("remind", "").replace("date2 = ", "time3 = ")
            + &daily_job("")
                .replace("tmpl-checkin", "tmpl-gone")
                .replace("\"daily\"", "\"gone\"")),
    );
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("jobs[0] (remind).data.time3: template \"预约提醒\" has no keyword time3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("jobs[0] (remind).data: keyword date2 of template \"预约提醒\" has no value"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "jobs[1] (gone).template_id: \"tmpl-gone\" is not one of the account's templates"
        ),
        "{}",
        run.stderr
    );

    // Offline, only the file is checked.
    assert_eq!(env.wxpush(&["check", "--offline"]).await.code, 0);
}

#[tokio::test]
async fn recipients_show_lists_consent_per_template() {
    let alice = "oAlice0000000000000000000001";
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", ""),
        listed("remind", &[alice])
    ))
    .await;
    grant(&env, alice, 3).await;
    // Learn the template kinds (check fetches the list).
    assert_eq!(env.wxpush(&["check"]).await.code, 0);

    let run = env.wxpush(&["recipients", "show", alice]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("job remind: active (added by config)"),
        "{}",
        run.stdout
    );
    let line = run.stdout.lines().find(|l| l.starts_with(ONCE)).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        [ONCE, "one_time", "accept", "3", "intake"],
        "{line}"
    );

    let json = env.wxpush(&["recipients", "show", alice, "--json"]).await;
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["consents"][0]["credits"], 3);

    let nobody = env
        .wxpush(&["recipients", "show", "oNobody000000000000000000001"])
        .await;
    assert_eq!(nobody.code, 1);
    assert!(
        nobody.stderr.contains("nothing is known about oNobody"),
        "{}",
        nobody.stderr
    );
}

#[tokio::test]
async fn credits_held_by_a_killed_send_are_settled_on_resume() {
    let people: Vec<String> = (1..=12).map(|i| format!("oCrash{i:022}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let opts = FakeOptions {
        templates: vec![once_template()],
        latency: std::time::Duration::from_millis(100),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(
        opts,
        "concurrency = 2",
        &format!("{}{}", once_job("remind", ""), listed("remind", &refs)),
    )
    .await;
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    for p in &refs {
        // Two credits each: one for this run, one that must survive it.
        grant(&env, p, 2).await;
    }

    let mut child = env.command(&["send", "remind", "--again"]).spawn().unwrap();
    wait_until(20, "some sends", || env.fake.accepted_count() >= 3).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let resumed = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(resumed.stdout.starts_with("remind: run 1:"), "{resumed:?}");

    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    for p in &refs {
        let row = rows.iter().find(|r| r.openid == *p).unwrap();
        let got = env.fake.accepted_for(p) as i64;
        assert!(got <= 1, "{p} got {got}");
        let c = store.consents_of(p).await.unwrap().remove(0);
        assert_eq!(c.reserved, 0, "{p}: nothing is held after the resume");
        match row.status.as_str() {
            // Sent: one credit used, one left.
            "sent" => assert_eq!((got, c.credits), (1, 1), "{p}"),
            // Maybe sent: its credit counts as used, so the second stays.
            "unknown" => assert_eq!(c.credits, 1, "{p}"),
            other => panic!("{p} ended {other}"),
        }
    }
}

#[tokio::test]
async fn a_long_term_subscription_refused_by_wechat_is_not_tried_again() {
    let (kept, lost) = (
        "oKept00000000000000000000001",
        "oLost00000000000000000000002",
    );
    let long_term = FakeTemplate {
        id: "tmpl-long".into(),
        title: "长期提醒".into(),
        content: "{{thing1.DATA}}".into(),
        kind: 3,
        everyone_subscribed: false,
    };
    let opts = FakeOptions {
        templates: vec![long_term],
        ..FakeOptions::default()
    };
    let job = "\n[[jobs]]\nname = \"notice\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl-long\"\naudience = \"subscribed\"\n[jobs.data]\nthing1 = \"notice\"\n";
    let env = TestEnv::new(opts, "", job).await;
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    let store = env.store().await;
    for who in [kept, lost] {
        store
            .record_subscription(
                who,
                None,
                None,
                &[("tmpl-long".into(), wxpush::domain::ConsentResult::Accept)],
            )
            .await
            .unwrap();
    }
    store.close().await;
    // Only `kept` really holds the subscription at WeChat.
    env.fake.subscribe(kept, "tmpl-long", 1);

    let first = env.wxpush(&["send", "notice", "--again"]).await;
    assert!(
        first.stdout.contains("1 sent, 0 failed, 1 refused"),
        "{first:?}"
    );
    assert_eq!(
        consent(&env, lost, "tmpl-long").await,
        Some(("reject".into(), 0))
    );

    let second = env.wxpush(&["send", "notice", "--again"]).await;
    assert!(
        second.stdout.contains("1 sent") && second.stdout.contains("of 1 "),
        "{second:?}"
    );
    assert_eq!(
        env.fake.accepted_for(kept),
        2,
        "a long-term subscription is not used up"
    );
    assert_eq!(
        env.fake.send_requests(),
        3,
        "no second call for the refused one"
    );
}

#[tokio::test]
async fn behind_a_proxy_the_rate_limit_counts_each_forwarded_client() {
    let env = consent_env(&format!(
        "{}{}",
        intake("per_ip_per_minute = 1\nclient_ip_header = \"X-Forwarded-For\""),
        once_job("remind", "")
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let from = |client: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{}/v1/subscriptions", env.http))
            .header("x-forwarded-for", format!("10.9.9.9, {client}"))
            .body("{}")
            .send()
    };
    let statuses = [
        from("203.0.113.1").await.unwrap().status().as_u16(),
        from("203.0.113.1").await.unwrap().status().as_u16(),
        from("203.0.113.2").await.unwrap().status().as_u16(),
    ];
    // Each client gets its one request a minute; all came from the same peer.
    assert_eq!(statuses, [400, 429, 400]);
    stop(&mut child).await;
}

#[tokio::test]
async fn applied_push_keys_are_remembered_until_pruned() {
    let store = wxpush::storage::Store::open("sqlite::memory:")
        .await
        .unwrap();
    let accept = wxpush::domain::ConsentResult::Accept;
    assert!(
        store
            .apply_consent_event("k1", "oU00000000000000000000000001", ONCE, accept)
            .await
            .unwrap()
    );
    assert!(
        !store
            .apply_consent_event("k1", "oU00000000000000000000000001", ONCE, accept)
            .await
            .unwrap()
    );
    let week_ago = chrono::Utc::now() - chrono::TimeDelta::days(7);
    assert_eq!(store.prune_consent_events(week_ago).await.unwrap(), 0);
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    assert_eq!(store.prune_consent_events(later).await.unwrap(), 1);
    assert!(
        store
            .apply_consent_event("k1", "oU00000000000000000000000001", ONCE, accept)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn check_only_warns_when_wechat_cannot_be_reached() {
    let env = consent_env(&once_job("remind", "")).await;
    let closed = free_addr();
    let out = env
        .command(&["check"])
        .env("WXPUSH__WECHAT__API_BASE", format!("http://{closed}"))
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("warning: cannot verify the jobs' templates against WeChat"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(SECRET));
}

#[tokio::test]
async fn forget_erases_a_person_but_keeps_the_counts() {
    let (alice, listed_one) = (
        "oAlice0000000000000000000001",
        "oListed000000000000000000001",
    );
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", "audience = \"subscribed\""),
        listed("remind", &[listed_one])
    ))
    .await;
    grant(&env, alice, 1).await;
    let store = env.store().await;
    store
        .record_subscription(alice, Some("Alice"), None, &[])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(env.wxpush(&["send", "remind", "--again"]).await.code, 0);

    let run = env.wxpush(&["recipients", "forget", alice]).await;
    assert_eq!(run.code, 0, "{run:?}");

    let shown = env.wxpush(&["recipients", "show", alice]).await;
    assert_eq!(shown.code, 1, "{shown:?}");
    let history = env.wxpush(&["runs", "show", "1"]).await;
    assert!(!history.stdout.contains(alice), "{}", history.stdout);
    assert!(history.stdout.contains("forgotten-1"), "{}", history.stdout);
    let runs = env.wxpush(&["runs", "--json"]).await;
    let v: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(
        v[0]["counts"]["sent"], 1,
        "the run still counts its message"
    );

    // Someone the config file lists must leave the file first.
    let refused = env.wxpush(&["recipients", "forget", listed_one]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("remove it from the file first"));
    assert_eq!(
        env.wxpush(&["recipients", "forget", alice]).await.code,
        1,
        "nothing left to forget"
    );
}

#[tokio::test]
async fn secure_mode_pushes_are_checked_and_opened_and_compatible_mode_too() {
    const AES_KEY: &str = "kLmN0pQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQ";
    let bob = "oBob000000000000000000000001";
    let env = consent_env(&format!(
        "{}{}{}",
        intake(&format!("encoding_aes_key = \"{AES_KEY}\"")),
        once_job("remind", ""),
        listed("remind", &[bob])
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;

    let popup = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{bob}","CreateTime":1700000200,"MsgType":"event",
            "Event":"subscribe_msg_popup_event","List":{{"TemplateId":"{ONCE}","SubscribeStatusString":"accept","PopupScene":"0"}}}}"#
    );
    let encrypt = fake_wechat::encrypt_push(AES_KEY, APPID, &popup, [7; 16]);
    let query = |nonce: &str, encrypt: &str| {
        let q = signed(nonce);
        let timestamp = q
            .split("timestamp=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let msg_sig = wxpush::intake::sign_encrypted(CALLBACK_TOKEN, timestamp, nonce, encrypt);
        format!("{q}&encrypt_type=aes&msg_signature={msg_sig}")
    };
    let envelope = json!({ "ToUserName": "gh_1", "Encrypt": encrypt }).to_string();

    // A ciphertext that msg_signature does not cover is refused, nothing stored.
    let forged = fake_wechat::encrypt_push(AES_KEY, APPID, &popup, [8; 16]);
    let forged_body = json!({ "ToUserName": "gh_1", "Encrypt": forged }).to_string();
    assert_eq!(
        push(env.http, &query("31", &encrypt), &forged_body).await.0,
        403
    );
    assert_eq!(consent(&env, bob, ONCE).await, None);

    // Another mini program's push, even well signed, is not applied.
    let elsewhere = fake_wechat::encrypt_push(AES_KEY, "wx99999999999999ff", &popup, [7; 16]);
    let elsewhere_body = json!({ "ToUserName": "gh_1", "Encrypt": elsewhere }).to_string();
    let (status, text) = push(env.http, &query("32", &elsewhere), &elsewhere_body).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("wx99999999999999ff"), "{text}");
    assert_eq!(consent(&env, bob, ONCE).await, None);

    // The genuine push, retried: applied once.
    for nonce in ["33", "34"] {
        assert_eq!(
            push(env.http, &query(nonce, &encrypt), &envelope).await,
            (200, "success".into())
        );
    }
    assert_eq!(consent(&env, bob, ONCE).await, Some(("accept".into(), 1)));

    // Compatible mode, XML: the plaintext fields sit beside Encrypt, and only the
    // signed ciphertext counts. The plaintext here claims "accept"; the cipher says reject.
    let change = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{bob}]]></FromUserName>\
         <CreateTime>1700000300</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent>\
         <List><TemplateId><![CDATA[{ONCE}]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>\
         </SubscribeMsgChangeEvent></xml>"
    );
    let encrypt = fake_wechat::encrypt_push(AES_KEY, APPID, &change, [9; 16]);
    let compatible = format!(
        "{}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        change
            .replace("reject", "accept")
            .trim_end_matches("</xml>")
    );
    assert_eq!(
        push(env.http, &query("35", &encrypt), &compatible).await,
        (200, "success".into())
    );
    assert_eq!(consent(&env, bob, ONCE).await, Some(("reject".into(), 0)));

    // The plain `signature` is still required.
    let unsigned = query("36", &encrypt).replace("signature=", "signature=0");
    assert_eq!(push(env.http, &unsigned, &compatible).await.0, 403);

    stop(&mut child).await;
}

#[tokio::test]
async fn an_encrypted_push_without_the_key_configured_is_answered_501() {
    let env = consent_env(&format!("{}{}", intake(""), once_job("remind", ""))).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let body = json!({ "ToUserName": "gh_1", "Encrypt": "AAAA" }).to_string();
    let query = format!("{}&encrypt_type=aes&msg_signature=00", signed("41"));
    let (status, text) = push(env.http, &query, &body).await;
    assert_eq!(status, 501);
    assert!(text.contains("intake.encoding_aes_key"), "{text}");
    stop(&mut child).await;
}
