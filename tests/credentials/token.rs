//! The access_token: cached across processes, refreshed once, replaced on 40001.

use std::sync::Arc;

use wxpush::config::TokenSource;
use wxpush::storage::Store;
use wxpush::wechat::{TokenManager, WechatClient};

use crate::helpers::*;

fn body(n: usize) -> String {
    daily_audience(n).1
}

#[tokio::test]
async fn three_sends_in_a_row_fetch_one_token() {
    let env = TestEnv::with(&body(3)).await;

    for i in 1..=3 {
        let run = env.wxpush(&["send", "daily", "--again"]).await;
        assert_eq!(run.code, 0, "send {i}: {run:?}");
    }

    assert_eq!(env.fake.token_requests(), 1);
    assert_eq!(env.fake.accepted_count(), 9);
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once_and_the_send_retried() {
    let env = TestEnv::with(&body(4)).await;
    assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    // Someone force-refreshed the stable token elsewhere: ours now gets 40001.
    env.fake.revoke_tokens();

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.fake.token_requests(), 2, "one refresh for all senders");
    assert_eq!(env.fake.accepted_count(), 8);
    let rows = env.store().await.deliveries(2).await.unwrap();
    assert!(rows.iter().all(|r| r.status.as_str() == "sent"));
}

#[tokio::test]
async fn a_token_rejected_twice_stops_the_run_without_looping() {
    let env = TestEnv::with(&body(2)).await;
    let ids = openids(2);
    env.fake.script(
        &ids[0],
        [Scripted::Errcode(40001), Scripted::Errcode(40001)],
    );

    let run = env
        .wxpush(&[
            "send",
            "daily",
            "--again",
            "--config",
            env.config.to_str().unwrap(),
        ])
        .await;

    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout
            .contains("stopped: a fresh access_token was rejected too"),
        "{}",
        run.stdout
    );
    let row = env
        .store()
        .await
        .deliveries(1)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.openid == ids[0])
        .unwrap();
    assert_eq!(
        row.status.as_str(),
        "pending",
        "not used up: a later send retries it"
    );
}

#[tokio::test]
async fn a_stable_token_handed_back_after_rejection_is_force_refreshed() {
    let env = TestEnv::with(&body(1)).await;
    let ids = openids(1);
    // WeChat rejects the current (still cached upstream) token: the normal fetch
    // returns the same one, so only a force refresh can help.
    env.fake.script(&ids[0], [Scripted::Errcode(40001)]);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.fake.force_refreshes(), 1);
    assert_eq!(
        env.fake.token_requests(),
        3,
        "fetch, refetch (same token), force refresh"
    );
}

#[tokio::test]
async fn bad_credentials_fail_the_send_with_a_hint_and_exit_3() {
    let env = TestEnv::with(&body(1)).await;

    let out = env
        .command(&["send", "daily", "--again"])
        .env("WXPUSH__WECHAT__SECRET", "wrong-secret")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);

    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.all().contains("errcode 40125"), "{}", run.all());
    assert!(run.all().contains("check [wechat] secret"), "{}", run.all());
    assert!(
        !run.all().contains("wrong-secret"),
        "the secret never reaches output"
    );
    let row = &env.store().await.deliveries(1).await.unwrap()[0];
    assert_eq!(row.status.as_str(), "pending");
}

async fn manager(env: &TestEnv, store: &Store) -> Arc<TokenManager> {
    let mut settings = wxpush::config::load(&env.config).unwrap().wechat;
    settings.api_base = env.fake.base_url();
    let client = WechatClient::new(&settings, SECRET.to_string().into(), 8).unwrap();
    Arc::new(TokenManager::new(
        client,
        store.clone(),
        appid(APPID),
        TokenSource::Stable,
    ))
}

#[tokio::test]
async fn many_senders_needing_a_token_at_once_cause_one_request() {
    let env = TestEnv::with(&body(1)).await;
    let store = env.store().await;
    let tokens = manager(&env, &store).await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let tokens = Arc::clone(&tokens);
        tasks.push(tokio::spawn(async move { tokens.get().await.unwrap() }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }

    assert_eq!(env.fake.token_requests(), 1);
    assert!(got.windows(2).all(|w| w[0] == w[1]));

    // Fifty senders all told the token is bad also refresh it once.
    env.fake.revoke_tokens();
    let bad = got[0].clone();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (tokens, bad) = (Arc::clone(&tokens), bad.clone());
        tasks.push(tokio::spawn(
            async move { tokens.replace(&bad).await.unwrap() },
        ));
    }
    let mut fresh = Vec::new();
    for t in tasks {
        fresh.push(t.await.unwrap());
    }
    assert_eq!(env.fake.token_requests(), 2);
    assert!(fresh.iter().all(|t| *t == fresh[0] && *t != bad));
}

#[tokio::test]
async fn a_token_cached_by_another_process_is_reused() {
    let env = TestEnv::with(&body(1)).await;
    let store = env.store().await;
    let first = manager(&env, &store).await.get().await.unwrap();
    let second = manager(&env, &store).await.get().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(env.fake.token_requests(), 1);
}

/// A server that answers every request with a 307 to the same path and query
/// on `target` (a 307 keeps the method and body); returns its base URL and
/// how many requests it answered.
async fn redirector(target: String) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (target, counted) = (target.clone(), Arc::clone(&counted));
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, format!("{target}{uri}"))],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn a_redirect_from_api_base_is_never_followed_with_the_secret_or_the_token() {
    use std::sync::atomic::Ordering;
    let env = TestEnv::with(&body(1)).await;
    let (moved, hits) = redirector(env.fake.base_url()).await;
    let send_via = |api_base: &str| {
        let mut command = env.command(&["send", "daily", "--again"]);
        command.env("WXPUSH__WECHAT__API_BASE", api_base);
        async move { Run::from(command.output().await.unwrap()) }
    };

    // The token request carries the appsecret: it stops at the redirect.
    let run = send_via(&moved).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.all().contains("HTTP 307"), "{}", run.all());
    assert!(
        run.all()
            .contains("a redirect, not followed: check [wechat] api_base"),
        "{}",
        run.all()
    );
    assert!(hits.load(Ordering::SeqCst) >= 1, "api_base was asked");
    assert_eq!(
        env.fake.token_requests(),
        0,
        "the secret never went on to another host"
    );

    // With a token cached (a send through the real api_base), the message
    // itself carries the token: it stops at the redirect too, and stays pending.
    let sent = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(sent.code, 0, "{sent:?}");
    assert_eq!(env.fake.accepted_count(), 1);
    let run = send_via(&moved).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.all().contains("HTTP 307; check [wechat] api_base"),
        "{}",
        run.all()
    );
    assert_eq!(
        env.fake.accepted_count(),
        1,
        "the token never went on to another host"
    );
    assert_eq!(env.fake.token_requests(), 1);
    // Every run's deliveries: one sent (through the real api_base), the
    // rest pending, none uncertain.
    let store = env.store().await;
    let mut seen = Vec::new();
    for run in 1..=4 {
        for d in store.deliveries(run).await.unwrap() {
            seen.push(d.status.as_str().to_owned());
        }
    }
    assert_eq!(seen.iter().filter(|s| *s == "sent").count(), 1, "{seen:?}");
    assert!(seen.iter().any(|s| s == "pending"), "{seen:?}");
    assert!(
        seen.iter().all(|s| s == "sent" || s == "pending"),
        "{seen:?}"
    );
}
