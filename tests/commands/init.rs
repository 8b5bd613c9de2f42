//! `wxpush init`: the starter config.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn init_writes_a_starter_that_checks_and_never_overwrites_without_force() {
    let env = TestEnv::with("").await;
    // A folder that does not exist yet is made, as `mkdir -p` would.
    let path = env.dir.path().join("new/conf/wxpush.toml");
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
    // Its database is beside it, which whoever wrote the file can create; the
    // packaged /var/lib/wxpush is for the service.
    assert!(text.contains("url = \"sqlite://data/wxpush.db\""), "{text}");
    let data = path.parent().unwrap().join("data/wxpush.db");
    assert!(
        run.stdout.contains(&data.display().to_string()),
        "{}",
        run.stdout
    );

    // The starter passes `check` once the secret is given.
    let check = finish(
        env.command(&["--config", path.to_str().unwrap(), "check", "--offline"])
            .env_remove("WXPUSH_CONFIG"),
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

#[tokio::test]
async fn the_starter_runs_a_trial_whose_database_is_beside_the_config() {
    if on_postgres() {
        return; // the starter's SQLite file
    }
    let env = TestEnv::with("").await;
    let path = env.dir.path().join("trial/wxpush.toml");
    assert_eq!(env.wxpush(&["init", path.to_str().unwrap()]).await.code, 0);
    let addr = free_addr();
    // The starter as written, but WeChat and the listener of the test.
    let mut daemon = env
        .command(&["--config", path.to_str().unwrap(), "run"])
        .env_remove("WXPUSH_CONFIG")
        .env("WXPUSH__WECHAT__APPID", APPID)
        .env("WXPUSH__HTTP__LISTEN", addr.to_string())
        .current_dir(std::env::temp_dir())
        .spawn()
        .unwrap();
    wait_http(addr).await;
    let data = path.parent().unwrap().join("data/wxpush.db");
    wait_until(10, "the trial's database", || data.is_file()).await;
    still_running(&mut daemon);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stop(&mut daemon).await.code(), Some(0));
}
