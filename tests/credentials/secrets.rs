//! Secrets from files (Docker secrets, systemd credentials), as operators pass them.

use crate::helpers::*;

#[tokio::test]
async fn the_secret_from_a_file_named_in_the_environment_fetches_a_token_and_sends() {
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&["oUser00000000000000000000001"])
    ))
    .await;
    // As a Docker secret is mounted: the value and a trailing line break.
    let file = env.file("wechat_secret", &format!("{SECRET}\n"));
    let out = env
        .command(&["send", "daily", "--again"])
        .env_remove("WXPUSH__WECHAT__SECRET")
        .env("WXPUSH__WECHAT__SECRET_FILE", &file)
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.fake.token_requests(), 1);
    assert_eq!(env.fake.accepted().len(), 1);
}

#[tokio::test]
async fn a_secret_and_its_file_together_are_refused_naming_both_and_showing_neither() {
    let env = TestEnv::with(&daily_job("")).await;
    let file = env.file("wechat_secret", "from-the-file-1234");
    let run = finish(
        env.command(&["check", "--offline"])
            .env("WXPUSH__WECHAT__SECRET_FILE", &file),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("wechat.secret: both wechat.secret and wechat.secret_file are set; keep one"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(SECRET) && !run.all().contains("from-the-file-1234"));
}

#[tokio::test]
async fn a_missing_secret_file_names_the_key_and_the_path() {
    let env = TestEnv::with(&daily_job("")).await;
    let run = finish(
        env.command(&["check", "--offline"])
            .env_remove("WXPUSH__WECHAT__SECRET")
            .env("WXPUSH__WECHAT__SECRET_FILE", "/run/secrets/nope"),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("wechat.secret_file: cannot read /run/secrets/nope: No such file"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn intake_secrets_come_from_files_relative_to_the_config() {
    let env = TestEnv::with(&format!(
        "{}\n[intake]\nenabled = true\ncallback_token_file = \"token\"\nencoding_aes_key_file = \"aes\"\n",
        daily_job("")
    ))
    .await;
    env.file("token", "Tok3n\n");
    env.file("aes", "too-short\n");
    // The key in the file is checked like one written in the config.
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("intake.encoding_aes_key:"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("too-short"), "{}", run.all());
    env.file("aes", &format!("{}\n", "a".repeat(43)));
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 0, "{run:?}");
}
