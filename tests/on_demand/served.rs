//! The real daemon serving the API on `[api] listen`, apart from `[http]`:
//! its OpenAPI document, and what `/metrics` counts of requests and sends.

use serde_json::{Value, json};

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000000";
const TOKEN: &str = "api-token-0123456789abcdef";

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(api: std::net::SocketAddr, key: &str, body: &Value, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{api}/v1/sends"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_on_its_own_listener_serves_its_document_and_is_counted_in_metrics() {
    let api = free_addr();
    let body = format!(
        "\n[api]\nenabled = true\nlisten = \"{api}\"\ntoken = \"{TOKEN}\"\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    );
    let env = TestEnv::with(&body).await;
    // `check` caches the account's templates in a database that exists.
    env.store().await.close().await;
    let check = env.wxpush(&["check"]).await;
    assert_eq!(check.code, 0, "{check:?}");
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    wait_http_path(api, "/v1/sends").await;

    let now = json!({
        "to": ANN,
        "template_id": "tmpl-checkin",
        "data": {"thing1": "取件提醒", "date2": "2026-12-07"},
    });
    let (status, sent) = post(api, "order-shipped:1", &now, TOKEN).await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(post(api, "order-shipped:1", &now, TOKEN).await.0, 200);
    let mut bad = now.clone();
    bad["to"] = json!("not an openid");
    assert_eq!(post(api, "order-shipped:2", &bad, TOKEN).await.0, 422);
    assert_eq!(
        post(api, "order-shipped:3", &now, "wrong-token").await.0,
        401
    );
    // The private listener does not serve the API once it has its own.
    let elsewhere = reqwest::Client::new()
        .post(format!("http://{}/v1/sends", env.http))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "order-shipped:4")
        .json(&now)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status().as_u16(), 404);

    // The document, as the repository has it, behind the token.
    let doc = reqwest::Client::new()
        .get(format!("http://{api}/v1/openapi.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status().as_u16(), 200);
    let served: Value = doc.json().await.unwrap();
    let file: Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).expect("the document");
    assert_eq!(served, file);
    assert_eq!(get(api, "/v1/openapi.json").await.0, 401);

    wait_until(15, "the send went", || env.fake.accepted_count() >= 1).await;
    let id = sent["id"].as_i64().unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = get(env.http, "/metrics").await.1;
        if metric(&text, "wxpush_on_demand_lag_seconds_count", &[]) >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (outcome, n) in [
        ("accepted", 1.0),
        ("replayed", 1.0),
        ("invalid", 1.0),
        // The wait for the listener, the wrong token, and the document
        // asked for without one.
        ("unauthorized", 3.0),
    ] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            metric(&text, "wxpush_api_requests_total", &[&label]),
            n,
            "{outcome}: {text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "wxpush_on_demand_sends_total",
            &["outcome=\"sent\"", "app=\"default\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "wxpush_on_demand_lag_seconds_count", &[]),
        1.0
    );
    assert!(
        text.contains("wxpush_on_demand_queue{state=\"scheduled\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("wxpush_on_demand_queue{state=\"queued\"} 0"),
        "{text}"
    );
    let shown = reqwest::Client::new()
        .get(format!("http://{api}/v1/sends/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(shown["status"], "sent", "{shown}");
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    assert_eq!(env.fake.accepted_for(ANN), 1);
}

#[tokio::test]
async fn an_api_listen_that_is_another_listeners_address_or_no_address_is_a_config_error() {
    let env = TestEnv::with(&daily_job("")).await;
    for (listen, said) in [
        (
            env.http.to_string(),
            format!("api.listen: {} is http.listen too", env.http),
        ),
        (
            "nowhere".to_owned(),
            "api.listen: \"nowhere\" is not an address".to_owned(),
        ),
    ] {
        env.write_config(
            "",
            &format!(
                "[api]\nenabled = true\nlisten = \"{listen}\"\ntoken = \"{TOKEN}\"\n{}",
                daily_job("")
            ),
        );
        let check = env.wxpush(&["check"]).await;
        assert_eq!(check.code, 2, "{check:?}");
        assert!(check.stderr.contains(&said), "{}", check.stderr);
        assert_eq!(check.stderr.trim().lines().count(), 1, "{}", check.stderr);
    }
}

/// Sends on demand, each to whom it went: every one final, nobody twice; the
/// number recorded `unknown`.
async fn settled(env: &TestEnv, count: usize) -> usize {
    let store = env.store().await;
    let rows = store
        .list_sends(&wxpush::storage::SendFilter {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut all = rows;
    while all.len() < count {
        let more = store
            .list_sends(&wxpush::storage::SendFilter {
                limit: 500,
                after: all.last().map(|s| s.id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!more.is_empty());
        all.extend(more);
    }
    store.close().await;
    let mut unknown = 0;
    for send in &all {
        let accepted = env.fake.accepted_for(&send.openid);
        assert!(accepted <= 1, "{} got {accepted}", send.openid);
        match send.status.as_str() {
            "sent" => assert_eq!(accepted, 1, "{send:?}"),
            "unknown" => unknown += 1,
            other => panic!("{send:?} ended {other}"),
        }
    }
    let sent = all.len() - unknown;
    let accepted = env.fake.accepted_count() as usize;
    assert!(
        (sent..=sent + unknown).contains(&accepted),
        "{accepted} accepted for {sent} sent and {unknown} unknown"
    );
    unknown
}

async fn open_sends(env: &TestEnv) -> usize {
    let store = env.store().await;
    let mut n = 0;
    for status in [
        wxpush::domain::SendStatus::Pending,
        wxpush::domain::SendStatus::Sending,
    ] {
        n += store
            .list_sends(&wxpush::storage::SendFilter {
                status: Some(status),
                limit: 2000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
    }
    store.close().await;
    n
}

#[tokio::test]
async fn kill_9_with_1000_sends_due_sends_nobody_twice_and_the_next_start_sends_the_rest() {
    let opts = FakeOptions {
        latency: std::time::Duration::from_millis(5),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &daily_job("")).await;
    let ids = openids(1000);
    add_due_sends(&env, &ids).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_until(30, "sends to go out", || env.fake.accepted_count() >= 200).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let in_flight = {
        let store = env.store().await;
        let n = store
            .list_sends(&wxpush::storage::SendFilter {
                status: Some(wxpush::domain::SendStatus::Sending),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        store.close().await;
        n
    };
    // The test env's [delivery] concurrency is 8.
    assert!(in_flight <= 8, "{in_flight} in flight at the kill");
    let mut child = env.command(&["run"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while open_sends(&env).await > 0 {
        still_running(&mut child);
        assert!(std::time::Instant::now() < deadline, "every send ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stop(&mut child).await.code(), Some(0));
    let unknown = settled(&env, 1000).await;
    assert_eq!(unknown, in_flight, "exactly those in flight at the kill");
}

#[tokio::test]
async fn a_retry_after_the_daemon_was_killed_between_accepting_and_sending_makes_one_message() {
    let body = format!(
        "\n[api]\nenabled = true\ntoken = \"{TOKEN}\"\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    );
    let env = TestEnv::with(&body).await;
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["check"]).await.code, 0);
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    // Due a moment after the 202, so that the kill comes before it.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1200))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339();
    let request = json!({
        "to": ANN,
        "template_id": "tmpl-checkin",
        "data": {"thing1": "取件提醒", "date2": "2026-12-07"},
        "send_at": soon,
    });
    let (status, first) = post(env.http, "order-shipped:9", &request, TOKEN).await;
    assert_eq!(status, 202, "{first}");
    // Killed after the 202, before the send was due.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(env.fake.send_requests(), 0);
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    // The caller never saw the answer, say, and retries: the same send.
    let (status, again) = post(env.http, "order-shipped:9", &request, TOKEN).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    wait_until(15, "the send went", || env.fake.accepted_count() >= 1).await;
    let (status, late) = post(env.http, "order-shipped:9", &request, TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(stop(&mut child).await.code(), Some(0));
    assert_eq!(env.fake.accepted_for(ANN), 1, "{late}");
}

#[tokio::test]
async fn sigterm_mid_pass_finishes_what_is_in_flight_and_leaves_the_rest_for_the_next_start() {
    let opts = FakeOptions {
        latency: std::time::Duration::from_millis(20),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &daily_job("")).await;
    add_due_sends(&env, &openids(400)).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_until(30, "sends to go out", || env.fake.accepted_count() >= 50).await;
    let asked = std::time::Instant::now();
    assert_eq!(stop(&mut child).await.code(), Some(0));
    // It stopped taking sends (the rest would take 0.9 s more).
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "stopped after {:?}",
        asked.elapsed()
    );
    let went = env.fake.accepted_count();
    assert!(went < 400, "{went}");
    let store = env.store().await;
    let list = |status| wxpush::storage::SendFilter {
        status: Some(status),
        limit: 2000,
        ..Default::default()
    };
    use wxpush::domain::SendStatus::{Sending, Sent, Unknown};
    assert!(store.list_sends(&list(Sending)).await.unwrap().is_empty());
    assert!(store.list_sends(&list(Unknown)).await.unwrap().is_empty());
    let sent = store.list_sends(&list(Sent)).await.unwrap().len();
    assert_eq!(sent as u64, went, "every request in flight was recorded");
    store.close().await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while open_sends(&env).await > 0 {
        still_running(&mut child);
        assert!(std::time::Instant::now() < deadline, "every send ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stop(&mut child).await.code(), Some(0));
    assert_eq!(settled(&env, 400).await, 0, "none unknown");
}
