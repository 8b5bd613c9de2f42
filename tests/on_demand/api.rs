//! `POST /v1/sends` and its friends, as a backend calls them: a bearer token,
//! an idempotency key per business event, retries after a timeout, cancels
//! when the order is cancelled; every refusal a problem naming its field.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000000";
const TOKEN: &str = "api-token-0123456789abcdef";

fn start() -> DateTime<Utc> {
    "2026-12-07T01:00:30Z".parse().unwrap()
}

/// `start` plus `minutes`, in Shanghai's offset.
fn at(minutes: i64) -> String {
    (start() + chrono::Duration::minutes(minutes))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339()
}

async fn env() -> TestEnv {
    let body = format!(
        "\n[api]\nenabled = true\ntoken = \"{TOKEN}\"\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    );
    let env = TestEnv::with(&body).await;
    env.store().await.close().await;
    let check = env.wxpush(&["check"]).await;
    assert_eq!(check.code, 0, "{check:?}");
    env
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    // One client for every call: building one loads its TLS roots (some 20 ms).
    static CLIENT: std::sync::LazyLock<reqwest::Client> =
        std::sync::LazyLock::new(reqwest::Client::new);
    let mut r = CLIENT
        .request(method, format!("http://{}{path}", daemon.http))
        .bearer_auth(TOKEN);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn post(daemon: &Daemon, key: &str, body: Value) -> Answer {
    call(
        daemon,
        reqwest::Method::POST,
        "/v1/sends",
        Some(key),
        Some(body),
    )
    .await
}

fn pickup(send_at: &str) -> Value {
    json!({
        "to": ANN,
        "template_id": "tmpl-checkin",
        "data": {"thing1": "取件提醒", "date2": "2026-12-07"},
        "send_at": send_at,
        "cancel_key": "order:1234",
        "metadata": {"order": "1234"},
    })
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_nothing_else() {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let url = format!("http://{}/v1/sends", daemon.http);
    for auth in [None, Some("Bearer wrong"), Some(TOKEN), Some("Basic eA==")] {
        let mut r = reqwest::Client::new().get(&url);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.text().await.unwrap(), "", "nothing else is said");
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_send_is_accepted_replayed_by_meaning_sent_at_its_time_and_shown() {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let first = post(&daemon, "order-shipped:1234", pickup(&at(10))).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let id = first.body["id"].as_i64().unwrap();
    assert_eq!(
        first.headers["location"],
        format!("/v1/sends/{id}").as_str()
    );
    assert_eq!(first.body["status"], "scheduled");
    assert_eq!(first.body["metadata"], json!({"order": "1234"}));
    // The same request, its keys in another order: the same send, replayed.
    let mut reordered = serde_json::Map::new();
    for k in [
        "metadata",
        "send_at",
        "data",
        "to",
        "cancel_key",
        "template_id",
    ] {
        reordered.insert(k.into(), pickup(&at(10))[k].clone());
    }
    let again = post(&daemon, "order-shipped:1234", Value::Object(reordered)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["id"], id);
    // Another request with that key is refused, and stores nothing.
    let other = post(&daemon, "order-shipped:1234", pickup(&at(20))).await;
    assert_eq!(other.status, 422);
    assert_eq!(other.body["code"], "idempotency_key_reused");
    assert_eq!(other.headers["content-type"], "application/problem+json");

    daemon
        .advance_until(Duration::from_secs(60), 30, "the send went", async || {
            env.fake.accepted_count() >= 1
        })
        .await;
    daemon.advance(Duration::from_secs(60)).await;
    let shown = call(
        &daemon,
        reqwest::Method::GET,
        &format!("/v1/sends/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["status"], "sent");
    assert!(shown.body["msgid"].is_string(), "{:?}", shown.body);
    // A retry after a timeout learns the outcome.
    let late = post(&daemon, "order-shipped:1234", pickup(&at(10))).await;
    assert_eq!(
        (late.status, late.body["status"].clone()),
        (200, json!("sent"))
    );
    let listed = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/sends?status=sent",
        None,
        None,
    )
    .await;
    assert_eq!(listed.body["sends"].as_array().unwrap().len(), 1);
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_for(ANN), 1);
}

#[tokio::test]
async fn a_cancel_that_answers_200_means_no_message_and_409_once_it_went() {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let kept = post(&daemon, "a", pickup(&at(5))).await.body["id"]
        .as_i64()
        .unwrap();
    let one = post(&daemon, "b", pickup(&at(5))).await.body["id"]
        .as_i64()
        .unwrap();
    let mut other = pickup(&at(5));
    other["cancel_key"] = json!("order:9");
    let grouped = post(&daemon, "c", other).await.body["id"].as_i64().unwrap();
    let cancel = |id: i64| format!("/v1/sends/{id}/cancel");
    let c = call(&daemon, reqwest::Method::POST, &cancel(one), None, None).await;
    assert_eq!(
        (c.status, c.body["status"].clone()),
        (200, json!("cancelled"))
    );
    let again = call(&daemon, reqwest::Method::POST, &cancel(one), None, None).await;
    assert_eq!(again.status, 200, "a repeated cancel");
    let bulk = call(
        &daemon,
        reqwest::Method::POST,
        "/v1/sends/cancel",
        None,
        Some(json!({"cancel_key": "order:9"})),
    )
    .await;
    assert_eq!(
        (bulk.status, bulk.body["cancelled"].clone()),
        (200, json!(1))
    );
    daemon
        .advance_until(
            Duration::from_secs(60),
            30,
            "the kept send went",
            async || env.fake.accepted_count() >= 1,
        )
        .await;
    daemon.advance(Duration::from_secs(60)).await;
    let late = call(&daemon, reqwest::Method::POST, &cancel(kept), None, None).await;
    assert_eq!(late.status, 409);
    assert_eq!(late.body["send_status"], "sent");
    // Its group: nothing left to cancel, and it says the one that went.
    let group = call(
        &daemon,
        reqwest::Method::POST,
        "/v1/sends/cancel",
        None,
        Some(json!({"cancel_key": "order:1234"})),
    )
    .await;
    assert_eq!(
        (
            group.body["cancelled"].clone(),
            group.body["too_late"].clone()
        ),
        (json!(0), json!(1)),
        "{:?}",
        group.body
    );
    let missing = call(&daemon, reqwest::Method::POST, &cancel(999), None, None).await;
    assert_eq!(missing.status, 404);
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_count(), 1, "only the one not cancelled");
    let store = env.store().await;
    for id in [one, grouped] {
        let s = store.send_by_id(id).await.unwrap().unwrap();
        assert_eq!(s.status.as_str(), "cancelled");
    }
}

#[tokio::test]
async fn each_bad_request_gets_its_status_and_names_its_field_and_is_not_stored() {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let with = |k: &str, v: Value| {
        let mut b = pickup(&at(5));
        b[k] = v;
        b
    };
    let too_long = json!({"thing1": "太长".repeat(20), "date2": "2026-12-07"});
    let cases = [
        (
            with("send_at", json!("2026-12-07T09:00:00")),
            422,
            Some("send_at"),
        ),
        (
            with("send_at", json!("2027-06-07T09:00:00+08:00")),
            422,
            Some("send_at"),
        ),
        (with("data", too_long), 422, Some("data")),
        (with("data", json!({"thing1": "x"})), 422, Some("data")),
        (with("to", json!("not-an-openid")), 422, Some("to")),
        (
            with("template_id", json!("tmpl-nope")),
            404,
            Some("template_id"),
        ),
        (with("app", json!("shop")), 404, Some("app")),
        (with("colour", json!("red")), 422, None),
        (json!({"to": ANN, "job": "nope"}), 404, Some("job")),
    ];
    for (i, (body, status, field)) in cases.into_iter().enumerate() {
        let a = post(&daemon, &format!("k{i}"), body.clone()).await;
        assert_eq!(a.status, status, "{body}: {:?}", a.body);
        assert_eq!(a.headers["content-type"], "application/problem+json");
        if let Some(f) = field {
            assert_eq!(a.body["field"], f, "{body}: {:?}", a.body);
        }
        // Fixed, the same key goes through: nothing was kept under it.
        if i == 0 {
            let fixed = post(&daemon, "k0", pickup(&at(5))).await;
            assert_eq!(fixed.status, 202, "{:?}", fixed.body);
        }
    }
    let no_key = call(
        &daemon,
        reqwest::Method::POST,
        "/v1/sends",
        None,
        Some(pickup(&at(5))),
    )
    .await;
    assert_eq!(
        (no_key.status, no_key.body["code"].clone()),
        (400, json!("missing_idempotency_key"))
    );
    let raw = reqwest::Client::new()
        .post(format!("http://{}/v1/sends", daemon.http))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "raw");
    let malformed = raw
        .try_clone()
        .unwrap()
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let huge = raw.body(vec![b' '; 70 * 1024]).send().await.unwrap();
    assert_eq!(huge.status().as_u16(), 413);
    let query = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/sends?colour=red",
        None,
        None,
    )
    .await;
    assert_eq!(query.status, 400);
    let listed = call(&daemon, reqwest::Method::GET, "/v1/sends", None, None).await;
    assert_eq!(
        listed.body["sends"].as_array().unwrap().len(),
        1,
        "only the fixed one"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn the_same_key_sent_100_times_at_once_makes_one_message() {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let mut calls = Vec::new();
    let url = format!("http://{}/v1/sends", daemon.http);
    for _ in 0..100 {
        let (url, body) = (url.clone(), pickup(&at(0)));
        calls.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", "pickup:77")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut created = 0;
    for c in calls {
        match c.await.unwrap() {
            202 => created += 1,
            200 | 409 => {}
            other => panic!("answered {other}"),
        }
    }
    assert_eq!(created, 1, "one request made the send");
    daemon
        .advance_until(Duration::from_secs(1), 30, "the send went", async || {
            env.fake.accepted_count() >= 1
        })
        .await;
    for _ in 0..5 {
        daemon.advance(Duration::from_secs(1)).await;
    }
    daemon.stop().await.unwrap();
    assert_eq!(env.fake.accepted_for(ANN), 1);
}

#[tokio::test]
async fn api_enabled_without_a_good_token_is_a_config_error_naming_the_key() {
    for (api, says) in [
        (
            "[api]\nenabled = true\n",
            "api.token: is required when api.enabled = true",
        ),
        (
            "[api]\nenabled = true\ntoken = \"short\"\n",
            "api.token: is shorter than 16 characters",
        ),
        (
            "[api]\nenabled = true\ntoken = \"0123456789abcdef0\"\nmax_schedule_ahead = \"40d\"\n",
            "api.idempotency_retention",
        ),
    ] {
        let env = TestEnv::with(&format!("\n{api}{}", daily_job(""))).await;
        let check = env.wxpush(&["check", "--offline"]).await;
        assert_eq!(check.code, 2, "{api}: {check:?}");
        assert!(check.stderr.contains(says), "{api}: {check:?}");
        assert!(
            !check.all().contains("short\""),
            "the token is never printed"
        );
    }
}

#[tokio::test]
async fn a_send_for_now_goes_at_once_every_documented_operation_is_served_and_wechats_final_word_is_shown()
 {
    let env = env().await;
    let daemon = env.daemon_at(start()).await;
    let first = post(&daemon, "order-shipped:77", pickup(&at(0))).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let id = first.body["id"].as_i64().unwrap();
    // The clock stands still: only the accept's wake can start the sender.
    wait_until(10, "the send went", || env.fake.accepted_count() >= 1).await;
    let path = format!("/v1/sends/{id}");
    let mut shown = call(&daemon, reqwest::Method::GET, &path, None, None).await;
    for _ in 0..100 {
        if shown.body["status"] == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        shown = call(&daemon, reqwest::Method::GET, &path, None, None).await;
    }
    assert_eq!(shown.body["status"], "sent", "{:?}", shown.body);
    assert_eq!(shown.body["event"], Value::Null, "no push yet");
    // WeChat's subscribe_msg_sent_event for its msgid, as the callback records it.
    let msgid: u64 = shown.body["msgid"].as_str().unwrap().parse().unwrap();
    let store = env.store().await;
    store
        .record_sent_event(
            &appid(APPID),
            msgid,
            &oid(ANN),
            &tmpl("tmpl-checkin"),
            43101,
            "fail_user_refuse",
        )
        .await
        .unwrap();
    let shown = call(&daemon, reqwest::Method::GET, &path, None, None).await;
    assert_eq!(shown.body["event"]["error_code"], 43101);
    assert_eq!(shown.body["event"]["error_status"], "fail_user_refuse");
    let listed = call(&daemon, reqwest::Method::GET, "/v1/sends", None, None).await;
    assert_eq!(listed.body["sends"][0]["event"], shown.body["event"]);

    // Each operation of docs/openapi.json reaches a handler: the router's own
    // 404 (no route) and 405 (no method) have no problem+json body.
    let doc: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    let mut operations = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let path = template.replace("{id}", &id.to_string());
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == reqwest::Method::POST).then(|| json!({"cancel_key": "x"}));
            let answer = call(&daemon, method.clone(), &path, Some("k"), body).await;
            let problem = answer
                .headers
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap().starts_with("application/"));
            assert!(
                answer.status != 405 && (answer.status != 404 || problem),
                "{method} {path}: {} {:?}",
                answer.status,
                answer.body
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 6);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn cancels_racing_the_sender_1000_times_each_200_means_no_message_and_each_409_one() {
    let body = format!(
        "\n[api]\nenabled = true\ntoken = \"{TOKEN}\"\n{}",
        daily_job("")
    );
    let opts = FakeOptions {
        latency: Duration::from_millis(5),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &body).await;
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["check"]).await.code, 0);
    let daemon = std::sync::Arc::new(env.daemon_at(start()).await);
    let people = openids(1000);
    // 1,000 sends due in a minute, accepted by 32 callers at once.
    let mut ids = Vec::new();
    for chunk in people.chunks(32) {
        let mut calls = tokio::task::JoinSet::new();
        for to in chunk {
            let (daemon, to) = (std::sync::Arc::clone(&daemon), to.clone());
            calls.spawn(async move {
                let mut body = pickup(&at(1));
                body["to"] = json!(to);
                let answer = post(&daemon, &format!("order:{to}"), body).await;
                assert_eq!(answer.status, 202, "{:?}", answer.body);
                (answer.body["id"].as_i64().unwrap(), to)
            });
        }
        ids.extend(calls.join_all().await);
    }
    daemon.advance(Duration::from_secs(61)).await;
    wait_until(30, "the sender began", || env.fake.accepted_count() >= 1).await;
    // Every send's cancel, 32 at a time, while the sender takes them: from
    // the last, so that cancels and the sender (oldest first) meet.
    let mut answers = Vec::new();
    ids.reverse();
    for chunk in ids.chunks(32) {
        let mut calls = tokio::task::JoinSet::new();
        for (id, to) in chunk.iter().cloned() {
            let daemon = std::sync::Arc::clone(&daemon);
            calls.spawn(async move {
                let path = format!("/v1/sends/{id}/cancel");
                let answer = call(&daemon, reqwest::Method::POST, &path, None, None).await;
                (id, to, answer.status, answer.body)
            });
        }
        answers.extend(calls.join_all().await);
    }
    let store = env.store().await;
    let settled = async || {
        let open = |status| wxpush::storage::SendFilter {
            status: Some(status),
            limit: 1,
            ..Default::default()
        };
        use wxpush::domain::SendStatus::{Pending, Sending};
        store.list_sends(&open(Pending)).await.unwrap().is_empty()
            && store.list_sends(&open(Sending)).await.unwrap().is_empty()
    };
    for _ in 0..300 {
        if settled().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled().await, "every send ended");
    let (mut won, mut late) = (0, 0);
    for (id, to, status, body) in &answers {
        let send = store.send_by_id(*id).await.unwrap().unwrap();
        match status {
            200 => {
                won += 1;
                assert_eq!(send.status.as_str(), "cancelled");
                assert_eq!(env.fake.accepted_for(to), 0, "{to} was cancelled");
            }
            409 => {
                late += 1;
                let then = body["send_status"].as_str().unwrap();
                assert!(["sending", "sent"].contains(&then), "{body}");
                assert_eq!(send.status.as_str(), "sent");
                assert_eq!(env.fake.accepted_for(to), 1);
            }
            other => panic!("cancel of {id}: {other} {body}"),
        }
    }
    assert!(
        won > 0 && late > 0,
        "no race: {won} cancelled, {late} too late"
    );
    assert_eq!(env.fake.accepted_count(), late);
    std::sync::Arc::into_inner(daemon)
        .expect("every call ended")
        .stop()
        .await
        .unwrap();
}
