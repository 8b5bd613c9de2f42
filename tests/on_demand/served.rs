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
