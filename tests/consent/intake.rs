//! POST /v1/subscriptions: login codes become people and consent; bad reports are refused with nothing stored.

use super::*;

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
    let who = store
        .subscriber(&appid(APPID), &oid(alice))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.name.as_deref(), Some("Alice"));
    assert_eq!(who.vars["floor"], "3");

    let metrics = reqwest::get(format!("http://{}/metrics", env.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No series carries a `job` or `instance` of its own (Prometheus sets
    // them to the scrape target's); the process's id is on one info series.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wxpush_instance_info{wxpush_instance=\"")),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with("wxpush_")
            && (l.contains("{instance=")
                || l.contains(",instance=")
                || l.contains("{job=")
                || l.contains(",job="))),
        "{metrics}"
    );
    for (name, rest) in [
        ("wxpush_intake_reports_total", "outcome=\"recorded\"} 1"),
        ("wxpush_intake_reports_total", "outcome=\"wechat_error\"} 2"),
        (
            "wxpush_push_events_total",
            "event=\"subscribe_msg_popup_event\",duplicate=\"false\"} 1",
        ),
    ] {
        let found = metrics.lines().any(|l| {
            l.strip_prefix(name)
                .and_then(|l| l.strip_prefix('{'))
                .is_some_and(|labels| labels == rest)
        });
        assert!(found, "{name}{{{rest} missing in:\n{metrics}");
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
            .consents_of(&appid(APPID), &oid("oX00000000000000000000000000"))
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
