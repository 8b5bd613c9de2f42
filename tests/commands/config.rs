//! Bad configuration: one clear line per problem naming file and key, exit 2.

use crate::helpers::*;

async fn check_with(body: &str) -> Run {
    let env = TestEnv::with(body).await;
    env.wxpush(&["check"]).await
}

#[tokio::test]
async fn check_lists_every_problem_with_its_key_and_exits_2() {
    let body = r#"
[[jobs]]
name = "bad job"
cron = "0 61 * * *"
timezone = "Mars/Olympus"
template_id = ""
page = "https://example.com"
[jobs.data]
"thing1\t" = "x"

[[jobs]]
name = "ok"
cron = "0 0 9 * * *"
template_id = "tmpl"
[jobs.data]
thing1 = "{{name}} says hi"

[[recipients]]
openid = "o bad"
jobs = ["ok"]

[[recipients]]
openid = "oGood00000000000000000000000"
jobs = ["nope"]
"#;
    let run = check_with(body).await;

    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    for want in [
        "jobs[0].name: job name \"bad job\" contains ' '",
        "jobs[0].timezone: \"Mars/Olympus\" is not an IANA time zone",
        "jobs[0].template_id: template_id is empty",
        "jobs[0].page: page \"https://example.com\" is a URL",
        "jobs[0].data: \"thing1\\t\" is not a template keyword",
        "recipients[0].openid: openid \"o bad\" contains ' '",
        "recipients[1] (oGo***000).jobs: no job is named \"nope\"",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "missing {want:?} in:\n{}",
            run.stderr
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("wxpush: ") && l.contains("wxpush.toml: ")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn check_renders_every_recipients_message() {
    let body = format!(
        "{}\n[[recipients]]\nopenid = \"oAAAAAAAAAAAAAAAAAAAA0000000\"\njobs = [\"daily\"]\nname = \"{}\"\n",
        daily_job(""),
        "z".repeat(25)
    );
    let run = check_with(&body).await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("recipients[0] (oAA***000) in job daily: data.thing1: "),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn check_accepts_a_good_config_and_shows_next_fire_times() {
    let body = format!(
        "{}{}",
        daily_job(""),
        recipients(&[
            "oUser00000000000000000000001",
            "oUser00000000000000000000002"
        ])
    );
    let run = check_with(&body).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("job daily: next fire "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+08:00"),
        "shown in the job's time zone: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("OK (1 jobs, 2 recipients)"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn unknown_keys_and_wrong_types_are_refused() {
    let env = TestEnv::with(&daily_job("")).await;
    env.write_config("concurency = 4", &daily_job(""));
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("concurency"), "{}", run.stderr);
    assert!(run.stderr.contains("wxpush.toml"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    env.write_config("", &daily_job("lang = \"fr_FR\""));
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("fr_FR"), "{}", run.stderr);
}

#[tokio::test]
async fn a_toml_syntax_error_names_the_line() {
    let env = TestEnv::with(&daily_job("")).await;
    std::fs::write(
        &env.config,
        "[wechat]\nappid = \"wx0123456789abcdef\"\ntimeout = \n",
    )
    .unwrap();
    let run = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[tokio::test]
async fn environment_variables_override_the_file() {
    let env = TestEnv::with(&daily_job("")).await;
    let out = env
        .command(&["check"])
        .env("WXPUSH__DELIVERY__CONCURRENCY", "0")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("delivery.concurrency: 0 is not between 1 and 1024"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_and_never_a_panic() {
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&["oUser00000000000000000000001"])
    ))
    .await;
    let out = env
        .command(&["send", "daily", "--again"])
        .env_remove("WXPUSH__WECHAT__SECRET")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("wechat.secret: is missing"),
        "{}",
        run.stderr
    );
    assert_eq!(env.fake.token_requests(), 0);
}

#[tokio::test]
async fn a_missing_config_file_says_how_to_choose_one() {
    let env = TestEnv::with("").await;
    let out = env
        .command(&["check"])
        .env("WXPUSH_CONFIG", env.dir.path().join("nope.toml"))
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("nope.toml: config file not found"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn an_unknown_job_is_a_usage_error() {
    let env = TestEnv::with(&daily_job("")).await;
    let run = env.wxpush(&["send", "weekly", "--again"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("no job named \"weekly\" (configured: daily)"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn the_shipped_example_config_is_valid() {
    let env = TestEnv::with("").await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/wxpush.example.toml");
    // Offline: the example names templates of an account that is not the fake's.
    let run = env
        .wxpush(&["--config", example, "check", "--offline"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("job checkin: next fire"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn the_compose_example_config_is_valid() {
    let env = TestEnv::with("").await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/compose/wxpush.toml");
    // Its database is the compose file's `postgres` service; nothing listens here.
    let run = finish(
        env.command(&["--config", example, "check", "--offline"])
            .env(
                "WXPUSH__DATABASE__URL",
                "postgres://wxpush@127.0.0.1:1/wxpush",
            ),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("job daily: next fire"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn check_also_renders_recipients_added_from_the_command_line() {
    let env = TestEnv::with(&daily_job("")).await;
    let add = env
        .wxpush(&[
            "recipients",
            "add",
            "oCliUser00000000000000000001",
            "--job",
            "daily",
            "--name",
            "Li",
        ])
        .await;
    assert_eq!(add.code, 0, "{add:?}");
    assert_eq!(env.wxpush(&["check"]).await.code, 0);

    // The job now needs {{city}}, which that recipient never had.
    let changed = daily_job("").replace("{{name}}, check in", "{{name}} in {{city}}");
    env.write_config("", &changed);
    let run = env.wxpush(&["check"]).await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "recipient oCl***001 in job daily (added by cli): data.thing1: {{city}} has no value"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn intake_and_job_consent_keys_are_checked_by_name() {
    let body = format!(
        "\n[intake]\nenabled = true\ncallback_token = \"no spaces please\"\nmax_body_bytes = 10\nper_ip_per_minute = 0\n{}",
        daily_job("audience = \"everyone\"")
    );
    let run = check_with(&body).await;
    assert_eq!(run.code, 2, "{run:?}");
    // Serde stops at the first bad enum value; fix it and the rest are listed together.
    assert!(run.stderr.contains("audience"), "{}", run.stderr);
    assert!(
        !run.all().contains("no spaces please"),
        "the token is a secret"
    );

    let run = check_with(&body.replace("audience = \"everyone\"", "consent = \"unchecked\"")).await;
    assert_eq!(run.code, 2, "{run:?}");
    for want in [
        "intake.callback_token: must be 3 to 32 letters or digits",
        "intake.max_body_bytes: 10 is not between 256 and 1048576",
        "intake.per_ip_per_minute: must be at least 1",
    ] {
        assert!(
            run.stderr.contains(want),
            "missing {want:?} in:\n{}",
            run.stderr
        );
    }
    assert!(
        !run.all().contains("no spaces please"),
        "the token is a secret"
    );

    // A mistyped EncodingAESKey, or one with no token to check pushes with.
    let short_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF";
    let run = check_with(&format!(
        "\n[intake]\nenabled = true\ncallback_token = \"tok123\"\nencoding_aes_key = \"{short_key}\"\n{}",
        daily_job("")
    ))
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("intake.encoding_aes_key: must be the 43-character EncodingAESKey"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(short_key), "the key is a secret");
    let run = check_with(&format!(
        "\n[intake]\nenabled = true\nencoding_aes_key = \"{short_key}G\"\n{}",
        daily_job("")
    ))
    .await;
    assert!(
        run.stderr
            .contains("intake.encoding_aes_key: is used only with intake.callback_token"),
        "{run:?}"
    );

    let no_http = "\n[http]\nenabled = false\n[intake]\nenabled = true\n";
    let env = TestEnv::with(&daily_job("")).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    // Replace the harness's [http] section with one that turns the listener off.
    let text = text.replace(&format!("[http]\nlisten = \"{}\"\n", env.http), "");
    std::fs::write(&env.config, format!("{no_http}{text}")).unwrap();
    let run = env.wxpush(&["check", "--offline"]).await;
    assert!(
        run.stderr
            .contains("intake.enabled: needs the HTTP listener"),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_misspelt_environment_variable_is_named_as_the_variable_not_a_key_of_the_file() {
    let env = TestEnv::with(&daily_job("")).await;

    let run = finish(
        env.command(&["check", "--offline"])
            .env("WXPUSH__DELIVERY__CONCURENCY", "4"),
    )
    .await;

    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "wxpush: environment variable WXPUSH__DELIVERY__CONCURENCY: delivery.concurency is not a configuration key; did you mean WXPUSH__DELIVERY__CONCURRENCY?",
        "{run:?}"
    );
    // Spelt right, it is taken.
    let run = finish(
        env.command(&["config", "show"])
            .env("WXPUSH__DELIVERY__CONCURRENCY", "4"),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("delivery.concurrency = 4  # env WXPUSH__DELIVERY__CONCURRENCY"),
        "{}",
        run.stdout
    );
}
