//! Several mini programs in one daemon: each job through its own app's token and
//! API, an openid per app, one app's failure leaving the others sending.

use crate::helpers::*;

const SHOP_APPID: &str = "wxfedcba9876543210";
const SHOP_SECRET: &str = "shop-secret";
const SAME: &str = "oSame00000000000000000000001";

/// A second fake WeChat: the `shop` mini program's account.
async fn shop_fake() -> FakeWechat {
    FakeWechat::start(FakeOptions {
        appid: SHOP_APPID.into(),
        secret: SHOP_SECRET.into(),
        templates: vec![checkin_template()],
        ..FakeOptions::default()
    })
    .await
}

/// `daily` on the default app and `shop_daily` on `shop`, both to `SAME`.
fn two_apps(shop: &FakeWechat) -> String {
    format!(
        "{daily}\n[apps.shop]\nappid = \"{SHOP_APPID}\"\napi_base = \"{base}\"\ntimeout = \"1s\"\n\
         {shop_job}\n\
         [[recipients]]\nopenid = \"{SAME}\"\njobs = [\"daily\"]\nname = \"Default\"\n\n\
         [[recipients]]\nopenid = \"{SAME}\"\napp = \"shop\"\njobs = [\"shop_daily\"]\nname = \"Shop\"\n",
        daily = daily_job(""),
        base = shop.base_url(),
        shop_job = daily_job("app = \"shop\"").replace("name = \"daily\"", "name = \"shop_daily\""),
    )
}

#[tokio::test]
async fn each_job_uses_its_apps_token_and_api_and_one_openid_in_two_apps_gets_each_message_once() {
    let shop = shop_fake().await;
    let env = TestEnv::with(&two_apps(&shop)).await;
    let with_shop_secret = |args: &[&str]| {
        let mut c = env.command(args);
        c.env("WXPUSH__APPS__SHOP__SECRET", SHOP_SECRET);
        c
    };
    for job in ["daily", "shop_daily"] {
        let run = finish(&mut with_shop_secret(&["send", job, "--again"])).await;
        assert_eq!(run.code, 0, "{job}: {run:?}");
    }
    assert_eq!(env.fake.accepted_for(SAME), 1, "the default app's message");
    assert_eq!(shop.accepted_for(SAME), 1, "the shop's message");
    assert_eq!((env.fake.token_requests(), shop.token_requests()), (1, 1));
    let shop_body = shop.accepted()[0].body.clone().unwrap();
    assert!(
        shop_body.to_string().contains("Shop"),
        "the shop's variables: {shop_body}"
    );

    // A second send of each job's slot run never repeats either.
    let runs = finish(&mut with_shop_secret(&["runs", "--json"])).await;
    assert_eq!(runs.code, 0, "{runs:?}");
    let v: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let apps: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["shop", "default"], "newest first: {v}");
    let table = finish(&mut with_shop_secret(&["runs"])).await;
    let header = table.stdout.lines().next().unwrap();
    assert!(header.contains(" APP "), "{header}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("shop_daily") && l.contains(" shop ")),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn one_apps_bad_secret_stops_only_its_jobs() {
    let shop = shop_fake().await;
    let env = TestEnv::with(&two_apps(&shop)).await;
    let bad = finish(
        env.command(&["send", "shop_daily", "--again"])
            .env("WXPUSH__APPS__SHOP__SECRET", "wrong-secret"),
    )
    .await;
    assert_eq!(bad.code, 3, "{bad:?}");
    assert_eq!(shop.accepted_count(), 0);
    let good = finish(
        env.command(&["send", "daily", "--again"])
            .env("WXPUSH__APPS__SHOP__SECRET", "wrong-secret"),
    )
    .await;
    assert_eq!(good.code, 0, "{good:?}");
    assert_eq!(env.fake.accepted_for(SAME), 1);
    assert!(!bad.all().contains("wrong-secret") && !good.all().contains("wrong-secret"));
}

#[tokio::test]
async fn app_mistakes_are_config_errors_naming_both_sides() {
    let shop = shop_fake().await;
    let env = TestEnv::with("").await;
    // A default-app recipient listed on the shop's job.
    let crossed = two_apps(&shop).replace(
        "jobs = [\"daily\"]\nname = \"Default\"",
        "jobs = [\"daily\", \"shop_daily\"]\nname = \"Default\"",
    );
    env.write_config("", &crossed);
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "job \"shop_daily\" sends for app \"shop\", but this recipient is of the default app"
        ),
        "{}",
        run.stderr
    );

    let unknown = two_apps(&shop).replace("app = \"shop\"\njobs", "app = \"shops\"\njobs");
    env.write_config("", &unknown);
    let run = env.wxpush(&["check", "--offline"]).await;
    assert!(
        run.stderr
            .contains(".app: no app is named \"shops\" (configured: shop)"),
        "{}",
        run.stderr
    );

    let twice = two_apps(&shop).replace(SHOP_APPID, APPID);
    env.write_config("", &twice);
    let run = env.wxpush(&["check", "--offline"]).await;
    assert!(
        run.stderr
            .contains("apps.shop.appid: is [wechat]'s AppID too"),
        "{}",
        run.stderr
    );

    // Sending needs every app's secret, and says which is missing.
    env.write_config("", &two_apps(&shop));
    let run = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("apps.shop.secret: is missing")
            && run.stderr.contains("WXPUSH__APPS__SHOP__SECRET"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn intake_and_callbacks_route_by_app() {
    let shop = shop_fake().await;
    let body = format!(
        "{}\n[intake]\nenabled = true\ncallback_token = \"defaultTok1\"\n",
        two_apps(&shop).replace(
            "[apps.shop]\n",
            "[apps.shop]\ncallback_token = \"shopTok9\"\n"
        )
    );
    let env = TestEnv::with(&body).await;
    let mut child = env
        .command(&["run"])
        .env("WXPUSH__APPS__SHOP__SECRET", SHOP_SECRET)
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("http://{}/v1/subscriptions", env.http))
            .json(&body)
            .send()
    };

    // A report names its mini program; the code goes to that app's WeChat.
    let code = shop.login(SAME);
    let r = post(serde_json::json!({
        "appid": SHOP_APPID, "code": code, "results": {"tmpl-checkin": "accept"}
    }))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!((shop.code_requests(), env.fake.code_requests()), (1, 0));
    let r = post(serde_json::json!({
        "appid": "wx0000000000000000", "code": "x", "results": {"tmpl-checkin": "accept"}
    }))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["field"], "appid", "{v}");

    // Each app's callback checks its own Token.
    let check = |path: &str, token: &str| {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let sig = wxpush::intake::sign(token, &timestamp, "n1");
        let url = format!(
            "http://{}{path}?signature={sig}&timestamp={timestamp}&nonce=n1&echostr=hello",
            env.http
        );
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        check("/wechat/callback/shop", "shopTok9").await,
        (200, "hello".into())
    );
    assert_eq!(check("/wechat/callback/shop", "defaultTok1").await.0, 403);
    assert_eq!(
        check("/wechat/callback", "defaultTok1").await,
        (200, "hello".into())
    );
    assert_eq!(check("/wechat/callback", "shopTok9").await.0, 403);
    assert_eq!(check("/wechat/callback/nope", "shopTok9").await.0, 404);

    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn readiness_names_the_app_that_cannot_get_a_token() {
    let shop = shop_fake().await;
    let env = TestEnv::with(&two_apps(&shop)).await;
    let mut child = env
        .command(&["run"])
        .env("WXPUSH__APPS__SHOP__SECRET", "wrong-secret")
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    let r = reqwest::get(format!("http://{}/readyz", env.http))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("app shop: "), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
    assert_eq!(
        env.fake.token_requests(),
        1,
        "the default app is fine: {text}"
    );
    // Job series say which app they are for.
    let metrics = reqwest::get(format!("http://{}/metrics", env.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (job, app) in [("daily", "default"), ("shop_daily", "shop")] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("wxpush_next_fire_timestamp_seconds")
                    && l.contains(&format!("wxpush_job=\"{job}\""))
                    && l.contains(&format!("app=\"{app}\""))),
            "{job}: {metrics}"
        );
    }
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn recipients_commands_work_on_one_app_at_a_time() {
    let shop = shop_fake().await;
    let env = TestEnv::with(&two_apps(&shop)).await;
    let other = "oOther0000000000000000000001";
    let wrong = env
        .wxpush(&[
            "recipients",
            "add",
            other,
            "--job",
            "shop_daily",
            "--name",
            "O",
        ])
        .await;
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("job shop_daily sends for app shop, not the default app; add --app shop"),
        "{}",
        wrong.stderr
    );
    let added = env
        .wxpush(&[
            "recipients",
            "add",
            other,
            "--app",
            "shop",
            "--job",
            "shop_daily",
            "--name",
            "O",
        ])
        .await;
    assert_eq!(added.code, 0, "{added:?}");
    let unknown = env.wxpush(&["recipients", "list", "--app", "nope"]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("--app nope: no app is named so (configured: shop)")
    );

    let jobs_listed = |out: &str| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["job"].as_str().unwrap().to_owned(),
                    r["openid"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let shop_rows = env
        .wxpush(&["recipients", "list", "--app", "shop", "--json"])
        .await;
    assert_eq!(
        jobs_listed(&shop_rows.stdout),
        [
            ("shop_daily".to_owned(), other.to_owned()),
            ("shop_daily".to_owned(), SAME.to_owned())
        ]
    );
    let default_rows = env.wxpush(&["recipients", "list", "--json"]).await;
    assert_eq!(
        jobs_listed(&default_rows.stdout),
        [("daily".to_owned(), SAME.to_owned())]
    );

    // Removing from the shop leaves the default app's entry of the same openid.
    let removed = env
        .wxpush(&["recipients", "remove", SAME, "--app", "shop"])
        .await;
    assert_eq!(removed.code, 0, "{removed:?}");
    let default_rows = env.wxpush(&["recipients", "list", "--json"]).await;
    assert_eq!(
        jobs_listed(&default_rows.stdout),
        [("daily".to_owned(), SAME.to_owned())]
    );
}

/// `daily` on the default app and `shop_daily` on `shop`, both sending to
/// everyone who accepted the template (the same template id in both accounts).
fn two_subscribed_apps(shop: &FakeWechat) -> String {
    format!(
        "{daily}\n[apps.shop]\nappid = \"{SHOP_APPID}\"\napi_base = \"{base}\"\ntimeout = \"1s\"\n{shop_job}",
        daily = daily_job("audience = \"subscribed\""),
        base = shop.base_url(),
        shop_job = daily_job("app = \"shop\"\naudience = \"subscribed\"")
            .replace("name = \"daily\"", "name = \"shop_daily\""),
    )
}

#[tokio::test]
async fn consent_intake_data_and_erasure_are_kept_per_app() {
    // The same openid string and template id in two accounts are two people and
    // two templates: the shop's consent never lets the default app send, and
    // erasing the shop's person keeps the default app's.
    let shop = shop_fake().await;
    let env = TestEnv::with(&two_subscribed_apps(&shop)).await;
    let store = env.store().await;
    let accept = [(tmpl("tmpl-checkin"), wxpush::domain::ConsentResult::Accept)];
    store
        .record_subscription(
            &appid(SHOP_APPID),
            &oid(SAME),
            Some("Shopper"),
            None,
            &accept,
        )
        .await
        .unwrap();
    // The default app only knows the person's name, no consent.
    store
        .record_subscription(&appid(APPID), &oid(SAME), Some("Reader"), None, &[])
        .await
        .unwrap();
    store.close().await;
    let with_shop_secret = |args: &[&str]| {
        let mut c = env.command(args);
        c.env("WXPUSH__APPS__SHOP__SECRET", SHOP_SECRET);
        c
    };
    for job in ["daily", "shop_daily"] {
        let run = finish(&mut with_shop_secret(&["send", job, "--again"])).await;
        assert_eq!(run.code, 0, "{job}: {run:?}");
    }
    assert_eq!(
        env.fake.accepted_count(),
        0,
        "no consent in the default app"
    );
    assert_eq!(shop.accepted_for(SAME), 1);
    let body = shop.accepted()[0].body.clone().unwrap().to_string();
    assert!(body.contains("Shopper"), "the shop's intake data: {body}");

    let (default, in_shop) = (shown(&env, None).await, shown(&env, Some("shop")).await);
    assert_eq!(default["subscriber"]["name"], "Reader", "{default}");
    assert_eq!(
        default["consents"].as_array().unwrap().len(),
        0,
        "{default}"
    );
    assert_eq!(in_shop["subscriber"]["name"], "Shopper", "{in_shop}");
    assert_eq!(in_shop["consents"][0]["status"], "accept", "{in_shop}");

    let forgot = env
        .wxpush(&["recipients", "forget", SAME, "--app", "shop"])
        .await;
    assert_eq!(forgot.code, 0, "{forgot:?}");
    let out = env
        .wxpush(&["recipients", "show", SAME, "--app", "shop"])
        .await;
    assert_eq!(out.code, 1, "the shop's person is gone: {out:?}");
    assert_eq!(shown(&env, None).await["subscriber"]["name"], "Reader");
    let runs = env.wxpush(&["runs", "--json"]).await;
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    for run in runs.as_array().unwrap() {
        let id = run["id"].to_string();
        let shown = env.wxpush(&["runs", "show", &id, "--json"]).await;
        assert_eq!(shown.code, 0, "{shown:?}");
        assert!(
            !shown.stdout.contains(SAME),
            "run {id} ({}): the shop's history is anonymised: {}",
            run["job"],
            shown.stdout
        );
    }
}

/// `recipients show OPENID --json [--app APP]`.
async fn shown(env: &TestEnv, app: Option<&str>) -> serde_json::Value {
    let mut args = vec!["recipients", "show", SAME, "--json"];
    if let Some(app) = app {
        args.extend(["--app", app]);
    }
    let out = env.wxpush(&args).await;
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}
