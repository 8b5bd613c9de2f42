//! `check` as a gate before a deploy, reload compared by value, and one line for
//! one mistake.

use std::time::Duration;

use crate::helpers::*;

fn one_job() -> String {
    let ids = openids(1);
    format!("{}{}", daily_job(""), recipients(&[&ids[0]]))
}

#[tokio::test]
async fn check_offline_needs_no_secret() {
    let env = TestEnv::with(&one_job()).await;
    let run = finish(
        env.command(&["check", "--offline"])
            .env_remove("WXPUSH__WECHAT__SECRET"),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    // Online, the secret is needed to ask WeChat anything.
    let run = finish(env.command(&["check"]).env_remove("WXPUSH__WECHAT__SECRET")).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("wechat.secret: is missing"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn check_fails_when_wechat_rejects_the_secret_and_names_the_key() {
    let env = TestEnv::with(&one_job()).await;
    let run = finish(
        env.command(&["check"])
            .env("WXPUSH__WECHAT__SECRET", "a-wrong-secret-value"),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("40125"))
        .unwrap_or_default();
    assert!(
        line.contains("wechat.secret:") && line.contains("copy it again"),
        "{}",
        run.stderr
    );
    assert!(
        !run.all().contains("a-wrong-secret-value"),
        "the secret is never printed"
    );
}

#[tokio::test]
async fn check_tests_the_secret_itself_even_with_a_token_cached() {
    let env = TestEnv::with(&one_job()).await;
    // A send caches a token in the database: `check` once listed templates
    // with it and approved any secret.
    assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    assert_eq!(env.fake.token_requests(), 1);

    // The operator rotates the secret in the console, and puts the new one
    // in the environment with a typo.
    let run = finish(
        env.command(&["check"])
            .env("WXPUSH__WECHAT__SECRET", "a-wrong-secret-value"),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("wechat.secret:")
            && run.stderr.contains("40125")
            && run
                .stderr
                .contains("it came from the environment variable WXPUSH__WECHAT__SECRET"),
        "{}",
        run.stderr
    );
    // The same typo in a secret file names the file.
    let file = env.file("wechat_secret", "a-wrong-secret-value\n");
    let run = finish(
        env.command(&["check"])
            .env_remove("WXPUSH__WECHAT__SECRET")
            .env("WXPUSH__WECHAT__SECRET_FILE", &file),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "it was read from {}, named by the environment variable WXPUSH__WECHAT__SECRET_FILE",
            file.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("a-wrong-secret-value"));
    // The right secret passes, and asking for the stable token rotated
    // nothing: the cached token still sends.
    assert_eq!(env.wxpush(&["check"]).await.code, 0);
    assert_eq!(env.fake.force_refreshes(), 0);
    assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    assert_eq!(env.fake.accepted_count(), 2);
}

#[tokio::test]
async fn check_fails_for_an_unknown_appid_and_for_an_ip_off_the_whitelist() {
    let opts = FakeOptions {
        appid: "wx9999999999999999".into(),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &one_job()).await;
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("wechat.appid:") && run.stderr.contains("40013"),
        "{}",
        run.stderr
    );

    let opts = FakeOptions {
        ip_not_whitelisted: Some("203.0.113.7".into()),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "", &one_job()).await;
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("40164"))
        .unwrap_or_default();
    assert!(
        line.contains("add 203.0.113.7 to the API IP whitelist"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn one_broken_job_is_one_line_however_many_recipients_list_it() {
    let ids = openids(1000);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for broken in [
        daily_job("").replace("0 0 9 * * *", "0 0 25 * * *"),
        daily_job("").replace("Asia/Shanghai", "Mars/Olympus"),
    ] {
        let env = TestEnv::with(&format!("{broken}{}", recipients(&refs))).await;
        let run = env.wxpush(&["check", "--offline"]).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("jobs[0] (daily)"), "{}", run.stderr);
    }
    // A job name that is itself bad: its recipients are not reported again.
    let bad_name = daily_job("").replace("name = \"daily\"", "name = \"Daily Job\"");
    let listed = recipients(&refs).replace("jobs = [\"daily\"]", "jobs = [\"Daily Job\"]");
    let env = TestEnv::with(&format!("{bad_name}{listed}")).await;
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    // A name no job has is reported on one line, however many recipients
    // list it, naming them and the jobs there are.
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&refs[..3]).replace("\"daily\"", "\"nightly\"")
    ))
    .await;
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("recipients[0] (") && run.stderr.contains("no job is named \"nightly\" (nor in the 2 other entries that list it: recipients[1] (")
            && run.stderr.contains("recipients[2] (")
            && run.stderr.ends_with("; the jobs are \"daily\"\n"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_changed_secret_in_the_file_is_flagged_on_reload_by_key_not_value() {
    let env = TestEnv::with(&one_job()).await;
    let with_secret = |secret: &str| {
        let text = std::fs::read_to_string(&env.config).unwrap();
        let text = match text.find("secret = ") {
            Some(i) => {
                let end = i + text[i..].find('\n').unwrap();
                format!("{}secret = \"{secret}\"{}", &text[..i], &text[end..])
            }
            None => text.replacen(
                "[wechat]\n",
                &format!("[wechat]\nsecret = \"{secret}\"\n"),
                1,
            ),
        };
        std::fs::write(&env.config, text).unwrap();
    };
    with_secret(SECRET);
    let mut daemon = env
        .command(&["run"])
        .env_remove("WXPUSH__WECHAT__SECRET")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    with_secret("the-rotated-secret-value");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&daemon, "-HUP").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&mut daemon).await;
    let out = daemon.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains("wechat.secret") && l.contains("next restart")),
        "{log}"
    );
    assert!(
        !log.contains("the-rotated-secret-value") && !log.contains(SECRET),
        "{log}"
    );
}
