//! `wxpush init`: the starter config.

use crate::helpers::*;

#[tokio::test]
async fn init_writes_a_starter_that_checks_and_never_overwrites_without_force() {
    let env = TestEnv::with("").await;
    let path = env.dir.path().join("new/wxpush.toml");
    let run = env.wxpush(&["init", path.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "a missing folder is named: {run:?}");
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    std::fs::create_dir(path.parent().unwrap()).unwrap();
    // From another folder, with the path given by --config, as a first user would.
    let run = finish(
        env.command(&["--config", path.to_str().unwrap(), "init"])
            .env_remove("WXPUSH_CONFIG")
            .current_dir(std::env::temp_dir()),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("check"), "{}", run.stdout);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[wechat]") && text.contains("[retention]"));

    // The starter passes `check` once the secret is given (the database path is
    // pointed at the test folder).
    let check = finish(
        env.command(&["--config", path.to_str().unwrap(), "check", "--offline"])
            .env_remove("WXPUSH_CONFIG")
            .env("WXPUSH__DATABASE__URL", &env.db_url),
    )
    .await;
    assert_eq!(check.code, 0, "{check:?}");

    std::fs::write(&path, "# mine\n").unwrap();
    let again = env.wxpush(&["init", path.to_str().unwrap()]).await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    let forced = env
        .wxpush(&["init", path.to_str().unwrap(), "--force"])
        .await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(std::fs::read_to_string(&path).unwrap().contains("[wechat]"));
}
