//! The status page (`/status`, `/v1/status/...`) as an operator and a product
//! manager use it: after a run with a refusal and a bad keyword, its numbers
//! match the store, openids are masked except on the person page, the password
//! is asked for, bad input is a 400 or a 404 (never a 500), and a real browser
//! renders the overview and a run's detail.

use fake_wechat::Scripted;
use serde_json::Value;

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000000";
const BOB: &str = "oBob000000000000000000000000";
const CAT: &str = "oCat000000000000000000000000";
const PASSWORD: &str = "status-password-0123";

/// A run of `daily` to three people: Ann gets it, WeChat refuses Bob (43101)
/// and finds Cat's data bad (47003). Returns the env and the run's id.
async fn one_run(status: &str) -> (TestEnv, i64) {
    let body = format!(
        "{status}{}{}",
        recipients(&[ANN, BOB, CAT]),
        recent_daily("")
    );
    let env = TestEnv::with(&body).await;
    env.store().await.close().await;
    env.fake.script(BOB, [Scripted::Errcode(43101)]);
    env.fake.script(CAT, [Scripted::Errcode(47003)]);
    let sent = env.wxpush(&["send", "daily"]).await;
    assert_eq!(sent.code, 1, "one of three failed: {sent:?}");
    let store = env.store().await;
    let id = store.runs(None, 1).await.unwrap()[0].id;
    store.close().await;
    (env, id)
}

struct Page {
    status: u16,
    content_type: String,
    text: String,
}

async fn fetch(
    http: std::net::SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
    lang: Option<&str>,
) -> Page {
    static CLIENT: std::sync::LazyLock<reqwest::Client> =
        std::sync::LazyLock::new(reqwest::Client::new);
    let mut r = CLIENT.get(format!("http://{http}{path}"));
    if let Some((user, password)) = auth {
        r = r.basic_auth(user, Some(password));
    }
    if let Some(lang) = lang {
        r = r.header("Accept-Language", lang);
    }
    let r = r.send().await.unwrap();
    Page {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        text: r.text().await.unwrap(),
    }
}

fn json(page: &Page) -> Value {
    serde_json::from_str(&page.text).unwrap_or_else(|e| panic!("{e}: {}", page.text))
}

#[tokio::test]
async fn the_pages_show_what_the_store_holds_masked_behind_the_password() {
    let env_file = format!("[status]\npassword = \"{PASSWORD}\"\n");
    let (env, run) = one_run(&env_file).await;
    let logs = Logs::capture();
    let daemon = env.daemon_at(chrono::Utc::now()).await;
    let http = daemon.http;
    let me = Some(("wxpush", PASSWORD));

    // The password: none, a wrong one, another user: 401, and never echoed.
    for auth in [
        None,
        Some(("wxpush", "wrong-password-0000")),
        Some(("admin", PASSWORD)),
    ] {
        let page = fetch(http, "/status", auth, None).await;
        assert_eq!(page.status, 401, "{auth:?}");
        assert!(!page.text.contains(PASSWORD));
    }
    // The password is the status page's alone: the probes and metrics stay
    // open, and an unknown path is still a 404.
    assert_eq!(fetch(http, "/healthz", None, None).await.status, 200);
    assert_eq!(fetch(http, "/metrics", None, None).await.status, 200);
    assert_eq!(fetch(http, "/nothing-here", None, None).await.status, 404);
    let overview = fetch(http, "/status", me, None).await;
    assert_eq!(overview.status, 200, "{}", overview.text);
    assert!(overview.content_type.starts_with("text/html"));
    assert!(overview.text.contains("daily") && overview.text.contains(&format!("#{run}")));

    // The run's counts as the store has them.
    let store = env.store().await;
    let stored = store.run(run).await.unwrap().unwrap();
    store.close().await;
    assert_eq!(
        (
            stored.counts.sent,
            stored.counts.refused,
            stored.counts.invalid
        ),
        (1, 1, 1)
    );
    let runs = json(&fetch(http, "/v1/status/runs?job=daily", me, None).await);
    assert_eq!(runs[0]["id"], run);
    assert_eq!(
        runs[0]["counts"],
        serde_json::to_value(stored.counts).unwrap()
    );
    assert_eq!(runs[0]["app"], "default");
    assert_eq!(
        json(&fetch(http, "/v1/status/runs?status=running", me, None).await),
        Value::Array(vec![])
    );

    // The detail, filtered: Bob's refusal, masked, its errcode in words.
    let refused = json(
        &fetch(
            http,
            &format!("/v1/status/runs/{run}?status=refused"),
            me,
            None,
        )
        .await,
    );
    let rows = refused["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{refused}");
    assert_eq!(rows[0]["openid"], "oBob…0000");
    assert_eq!(rows[0]["errcode"], 43101);
    assert!(
        rows[0]["errcode_meaning"]
            .as_str()
            .unwrap()
            .contains("refused")
    );
    let by_code = json(
        &fetch(
            http,
            &format!("/v1/status/runs/{run}?errcode=47003"),
            me,
            None,
        )
        .await,
    );
    assert_eq!(by_code["deliveries"][0]["openid"], "oCat…0000");
    assert_eq!(by_code["deliveries"].as_array().unwrap().len(), 1);
    let detail = fetch(http, &format!("/status/runs/{run}"), me, None).await;
    assert_eq!(detail.status, 200);
    for openid in [ANN, BOB, CAT] {
        assert!(!detail.text.contains(openid), "{openid} shown whole");
    }
    assert!(detail.text.contains("oBob…0000") && detail.text.contains("the user refused"));
    // In Chinese by the browser's language, and back by the switch.
    let zh = fetch(
        http,
        &format!("/status/runs/{run}"),
        me,
        Some("zh-CN,zh;q=0.9"),
    )
    .await;
    assert!(
        zh.text.contains("用户拒绝接收") && zh.text.contains("已发送"),
        "{}",
        zh.text
    );
    let en = fetch(
        http,
        &format!("/status/runs/{run}?lang=en"),
        me,
        Some("zh-CN"),
    )
    .await;
    assert!(en.text.contains("the user refused"));

    // The person page, by exact openid, is the one place an openid is whole.
    let person = json(&fetch(http, &format!("/v1/status/person?openid={BOB}"), me, None).await);
    assert_eq!(person["openid"], BOB);
    assert_eq!(person["jobs"][0]["job"], "daily");
    let page = fetch(http, &format!("/status/person?openid={BOB}"), me, None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains(BOB));
    let nobody = fetch(
        http,
        "/status/person?openid=oNobody000000000000000000000",
        me,
        None,
    )
    .await;
    assert_eq!(nobody.status, 404);

    // Consent: the 43101 answers of the last 7 days, of all answered.
    let consent = json(&fetch(http, "/v1/status/consent", me, None).await);
    let t = consent["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template_id"] == "tmpl-checkin")
        .unwrap_or_else(|| panic!("{consent}"));
    assert_eq!(
        (t["errcode_43101"].as_i64(), t["answered"].as_i64()),
        (Some(1), Some(3))
    );

    // Bad input: a 400 naming the parameter, a 404, or an empty page; never a 500.
    for (path, want) in [
        ("/status/runs?bogus=1", 400),
        ("/v1/status/runs?bogus=1", 400),
        ("/status/runs?status=nonsense", 400),
        ("/status/runs?before=abc", 400),
        ("/status/runs?app=nope", 400),
        ("/status?lang=fr", 400),
        ("/status/runs/999999", 404),
        ("/v1/status/runs/999999", 404),
        ("/status/runs/abc", 404),
        ("/status/person?openid=not%20an%20openid", 400),
        ("/v1/status/sends?status=bogus", 400),
        ("/v1/status/runs?lang=de", 400),
    ] {
        let page = fetch(http, path, me, None).await;
        assert_eq!(page.status, want, "{path}: {}", page.text);
    }
    let past = json(
        &fetch(
            http,
            &format!("/v1/status/runs/{run}?after=999999"),
            me,
            None,
        )
        .await,
    );
    assert_eq!(past["deliveries"], Value::Array(vec![]));
    let bad = fetch(http, "/status/runs?bogus=1", me, None).await;
    assert!(bad.text.contains("bogus"), "{}", bad.text);
    daemon.stop().await.unwrap();
    let logged = logs.text();
    assert!(
        logged.contains("ready"),
        "the daemon's log was captured: {logged}"
    );
    assert!(!logged.contains(PASSWORD), "the password is never logged");
}

#[tokio::test]
async fn sends_due_within_the_hour_are_on_the_overview_masked() {
    let (env, _) = one_run("").await;
    let due = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    crate::cli::add(&env, &["--at", &due, "--key", "soon"]).await;
    let daemon = env.daemon_at(chrono::Utc::now()).await;
    // No password configured: the page is open (on the loopback listener).
    let overview = json(&fetch(daemon.http, "/v1/status/overview", None, None).await);
    let soon = &overview["sends_due_within_an_hour"];
    assert_eq!(soon.as_array().map(Vec::len), Some(1), "{overview}");
    assert_eq!(soon[0]["to"], "oAnn…0000");
    assert_eq!(overview["jobs"][0]["job"], "daily");
    assert_eq!(overview["jobs"][0]["latest_run"]["counts"]["sent"], 1);
    assert!(
        !overview.to_string().contains("access_token\":\""),
        "no token is shown"
    );
    let sends = json(&fetch(daemon.http, "/v1/status/sends?status=scheduled", None, None).await);
    assert_eq!(sends[0]["to"], "oAnn…0000");
    assert_eq!(sends[0]["status"], "scheduled");
    // Not due yet: not queued, not deferred.
    for other in ["queued", "deferred", "sent"] {
        let none = json(
            &fetch(
                daemon.http,
                &format!("/v1/status/sends?status={other}"),
                None,
                None,
            )
            .await,
        );
        assert_eq!(none, Value::Array(vec![]), "{other}");
    }
    let older = sends[0]["id"].as_i64().unwrap();
    let none = json(
        &fetch(
            daemon.http,
            &format!("/v1/status/sends?before={older}"),
            None,
            None,
        )
        .await,
    );
    assert_eq!(
        none,
        Value::Array(vec![]),
        "nothing older than the only send"
    );
    let page = fetch(daemon.http, "/status/sends", None, None).await;
    assert!(page.text.contains("oAnn…0000") && !page.text.contains(ANN));
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn status_false_serves_no_page_and_enabled_without_http_is_refused() {
    let (env, _) = one_run("[status]\nenabled = false\n").await;
    let daemon = env.daemon_at(chrono::Utc::now()).await;
    assert_eq!(fetch(daemon.http, "/status", None, None).await.status, 404);
    daemon.stop().await.unwrap();
    let env = TestEnv::with(&format!(
        "[status]\nenabled = true\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    ))
    .await;
    let check = finish(
        env.command(&["check"])
            .env("WXPUSH__HTTP__ENABLED", "false"),
    )
    .await;
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stderr.contains("status.enabled"), "{}", check.stderr);
    // The intake served on [http] makes it public: no page without a password
    // (said by `check`), and asking for one anyway is refused.
    let public = TestEnv::with(&format!(
        "[intake]\nenabled = true\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    ))
    .await;
    let check = public.wxpush(&["check", "--offline"]).await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.all().contains("the status page is not served"),
        "{check:?}"
    );
    let daemon = public.daemon_at(chrono::Utc::now()).await;
    assert_eq!(fetch(daemon.http, "/status", None, None).await.status, 404);
    daemon.stop().await.unwrap();
    let asked = finish(
        public
            .command(&["check", "--offline"])
            .env("WXPUSH__STATUS__ENABLED", "true"),
    )
    .await;
    assert_eq!(asked.code, 2, "{asked:?}");
    assert!(asked.stderr.contains("status.password"), "{}", asked.stderr);
    let short = TestEnv::with(&format!(
        "[status]\npassword = \"short\"\n{}{}",
        recipients(&[ANN]),
        daily_job("")
    ))
    .await;
    let check = short.wxpush(&["check"]).await;
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stderr.contains("status.password") && !check.stderr.contains("\"short\""));
}

/// Chromium, when installed (CI installs Debian's `chromium` and sets
/// `WXPUSH_REQUIRE_CHROMIUM=1`, so that this never skips there).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("WXPUSH_REQUIRE_CHROMIUM").is_none(),
            "WXPUSH_REQUIRE_CHROMIUM is set and no chromium is installed"
        );
        eprintln!("no chromium: the browser test is skipped");
    }
    found
}

/// `chromium --headless` on `url`: the DOM it rendered, and a screenshot into
/// `WXPUSH_SCREENSHOTS` (a folder) as `name`.png when that is set (and `name` is not empty).
async fn browse(browser: &str, url: &str, name: &str) -> String {
    let profile = tempfile_dir();
    let base = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let run = |extra: Vec<String>| {
        let mut c = tokio::process::Command::new(browser);
        c.args(&base).args(extra).arg(url).kill_on_drop(true);
        async move { tokio::time::timeout(std::time::Duration::from_secs(60), c.output()).await }
    };
    let dom = run(vec!["--dump-dom".into()])
        .await
        .expect("chromium answered within 60 s")
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    if let Some(dir) = std::env::var_os("WXPUSH_SCREENSHOTS").filter(|_| !name.is_empty()) {
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::path::Path::new(&dir).join(format!("{name}.png"));
        let shot = run(vec![
            format!("--screenshot={}", file.display()),
            "--window-size=1280,800".into(),
            "--hide-scrollbars".into(),
        ])
        .await
        .expect("chromium answered within 60 s")
        .unwrap();
        assert!(
            shot.status.success() && file.exists(),
            "{}",
            String::from_utf8_lossy(&shot.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8(dom.stdout).unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wxpush-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_real_browser_renders_the_overview_and_a_runs_detail() {
    let Some(browser) = chromium() else {
        return;
    };
    let (env, run) = one_run("").await;
    let daemon = env.daemon_at(chrono::Utc::now()).await;
    let base = format!("http://{}", daemon.http);
    let overview = browse(
        browser,
        &format!("{base}/status?lang=en"),
        "status-overview",
    )
    .await;
    assert!(overview.contains("<h1>Overview</h1>"), "{overview}");
    assert!(overview.contains("daily") && overview.contains(&format!("#{run}")));
    let detail = browse(
        browser,
        &format!("{base}/status/runs/{run}?lang=zh"),
        "status-run",
    )
    .await;
    // Chinese, by the switch (a browser's own language is tested by header above).
    assert!(
        detail.contains("用户拒绝接收或没有剩余的订阅次数"),
        "{detail}"
    );
    assert!(detail.contains("oBob…0000") && !detail.contains(BOB));
    // Every other page renders, each with its heading.
    for (path, heading) in [
        ("/status/runs?lang=en", "<h1>Runs</h1>"),
        ("/status/sends?lang=en", "<h1>Sends</h1>"),
        ("/status/consent?lang=en", "<h1>Consent</h1>"),
        (
            &*format!("/status/person?lang=en&openid={BOB}"),
            "<h1>Person</h1>",
        ),
    ] {
        let dom = browse(browser, &format!("{base}{path}"), "").await;
        assert!(dom.contains(heading), "{path}: {dom}");
    }
    daemon.stop().await.unwrap();
}
