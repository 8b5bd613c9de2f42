//! Consent: the intake API, WeChat's event push, and sends gated by consent;
//! several mini programs in one daemon, each with its own consent and token.
//! Shared fixtures here; the tests, by concern, in the modules below.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod apps;
mod callback;
mod gating;
mod intake;
mod people;

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
    let rows = store
        .consents_of(&appid(APPID), &oid(openid))
        .await
        .unwrap();
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
                &appid(APPID),
                &oid(openid),
                None,
                None,
                &[(tmpl(ONCE), wxpush::domain::ConsentResult::Accept)],
            )
            .await
            .unwrap();
    }
    store.close().await;
    env.fake.subscribe(openid, ONCE, n);
}
