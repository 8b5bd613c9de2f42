//! Everyday conveniences: `check --json`, `config show`, completions, the man page.

use crate::helpers::*;

#[tokio::test]
async fn check_json_lists_problems_for_scripts_and_keeps_exit_2() {
    let env = TestEnv::with(&daily_job("")).await;
    env.write_config("concurrency = 0", &daily_job(""));
    let run = env.wxpush(&["check", "--offline", "--json"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("delivery.concurrency")),
        "{v}"
    );
    assert_eq!(run.stderr.trim(), "", "nothing but JSON: {}", run.stderr);

    env.write_config("", &daily_job(""));
    let run = env.wxpush(&["check", "--offline", "--json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["jobs"][0]["name"], "daily");
    assert!(
        v["jobs"][0]["next_fire"]
            .as_str()
            .unwrap()
            .contains("09:00:00")
    );
}

#[tokio::test]
async fn config_show_says_where_each_value_came_from_and_hides_secrets() {
    let env = TestEnv::with(&daily_job("")).await;
    let run = finish(
        env.command(&["config", "show"])
            .env(
                "WXPUSH__DATABASE__URL",
                "postgres://wx:hunter2@db:5432/wxpush",
            )
            .env("WXPUSH__DELIVERY__RATE_LIMIT_PER_SEC", "20"),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let out = &run.stdout;
    for want in [
        "wechat.secret = \"***\"  # env WXPUSH__WECHAT__SECRET",
        "delivery.rate_limit_per_sec = 20  # env WXPUSH__DELIVERY__RATE_LIMIT_PER_SEC",
        "delivery.concurrency = 8  # file",
        "retention.keep = \"180d\"  # default",
        "jobs[0].name = \"daily\"  # file",
        "database.url = \"postgres://wx:***@db:5432/wxpush\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.contains("retention.enabled = true  # default"), "{out}");
    assert!(!run.all().contains(SECRET) && !run.all().contains("hunter2"));

    let json = env.wxpush(&["config", "show", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["config"]["wechat"]["secret"], "***");
    assert_eq!(v["sources"]["wechat.appid"], "file");
}

#[tokio::test]
async fn completions_and_the_man_page_are_generated_from_the_command_line() {
    let env = TestEnv::with("").await;
    for shell in ["bash", "zsh", "fish"] {
        let run = env.wxpush(&["completions", shell]).await;
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("recipients") && run.stdout.contains("backup"),
            "{shell}"
        );
    }
    let bad = env.wxpush(&["completions", "cmd.exe"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    let man = env.wxpush(&["man"]).await;
    assert_eq!(man.code, 0, "{man:?}");
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH wxpush"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    let example = env.wxpush(&["config", "example"]).await;
    assert!(example.stdout.contains("[retention]"));
    let version = env.wxpush(&["--version"]).await;
    assert!(
        version.stdout.starts_with("wxpush 0.1.0 (") && !version.stdout.contains("unknown"),
        "the commit built: {}",
        version.stdout
    );
}
