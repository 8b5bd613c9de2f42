//! `fake-wechat [ADDR]`: the fake WeChat API as a standalone server, for benchmarks
//! and manual tries. Options come from the environment: FAKE_LATENCY_MS,
//! FAKE_BUSY_RATE, FAKE_RATE_LIMIT, FAKE_APPID, FAKE_SECRET.

use std::time::Duration;

use fake_wechat::{FakeOptions, FakeWechat};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let defaults = FakeOptions::default();
    let opts = FakeOptions {
        appid: env("FAKE_APPID", defaults.appid),
        secret: env("FAKE_SECRET", defaults.secret),
        latency: Duration::from_millis(env("FAKE_LATENCY_MS", 0)),
        busy_rate: env("FAKE_BUSY_RATE", 0.0),
        rate_limit_per_sec: env("FAKE_RATE_LIMIT", 0),
        keep_bodies: false,
        ..defaults
    };
    let fake = FakeWechat::start_on(&addr, opts).await;
    println!("{}", fake.base_url());
    let _ = tokio::signal::ctrl_c().await;
    eprintln!(
        "fake-wechat: {} token requests, {} sends, {} accepted",
        fake.token_requests(),
        fake.send_requests(),
        fake.accepted_count()
    );
}
