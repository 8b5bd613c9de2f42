//! Where the database is, and whether the daemon may call itself ready: a
//! relative path is the config file's, read-only commands never create a
//! database, a bad URL is a config error, and /readyz tells the truth.

use std::time::Duration;

use crate::helpers::*;
use wxpush::storage::Store;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The env's config with `[database] url` set to `url` as written.
fn with_database_url(env: &TestEnv, url: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let start = text.find("url = \"sqlite://").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}url = \"{url}\"{}", &text[..start], &text[end..]);
    std::fs::write(&env.config, text).unwrap();
}

#[tokio::test]
async fn a_relative_database_path_is_the_config_files_from_any_folder() {
    if on_postgres() {
        return; // about the SQLite file and its lock folder
    }
    let ids = openids(2);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&refs))).await;
    with_database_url(&env, "sqlite://data/w.db");
    let elsewhere = tempfile::tempdir().unwrap();
    let config = env.config.to_str().unwrap();

    let sent = env
        .command(&["--config", config, "send", "daily", "--again"])
        .current_dir(elsewhere.path())
        .output()
        .await
        .unwrap();
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    assert!(
        env.dir.path().join("data/w.db").is_file(),
        "beside the config file"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing in the working folder"
    );

    // `runs` from yet another folder sees the same history.
    let other = tempfile::tempdir().unwrap();
    let runs = finish(
        env.command(&["--config", config, "runs", "--json"])
            .current_dir(other.path()),
    )
    .await;
    assert_eq!(runs.code, 0, "{runs:?}");
    let v: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{}", runs.stdout);
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn read_only_commands_never_create_a_database() {
    if on_postgres() {
        return; // about the SQLite file and its lock folder
    }
    let ids = openids(1);
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&[&ids[0]]))).await;
    for args in [
        &["runs"][..],
        &["runs", "show", "1"],
        &["recipients", "list"],
        &["recipients", "show", &ids[0]],
    ] {
        let run = env.wxpush(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        let line = run.stderr.lines().last().unwrap_or_default();
        assert!(
            line.contains("database.url: no database at")
                && line.contains(&env.db_path().display().to_string()),
            "{args:?}: {}",
            run.stderr
        );
    }
    let check = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(!env.db_path().exists(), "no database was created");
    assert!(!env.dir.path().join("wxpush.db.locks").exists());
}

#[tokio::test]
async fn an_unsupported_database_url_is_a_config_error_and_creates_nothing() {
    let ids = openids(1);
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&[&ids[0]]))).await;
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["send", "daily", "--again"][..],
        &["check", "--offline"],
        &["runs"],
    ] {
        let run = finish(
            env.command(args)
                .env("WXPUSH__DATABASE__URL", "mysql://root:hunter2@x/y")
                .current_dir(cwd.path()),
        )
        .await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr
                .contains("database.url: \"mysql\" is not a supported database"),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(!run.all().contains("hunter2"), "{run:?}");
    }
    assert_eq!(env.fake.send_requests(), 0);
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

/// A job that fires every second, and the daemon (in process) serving /readyz,
/// after its first run.
async fn ticking_daemon() -> (TestEnv, Daemon) {
    let ids = openids(1);
    let body = format!(
        "\n[scheduler]\noutage_retry = \"200ms\"\n\n[[jobs]]\nname = \"tick\"\ncron = \"* * * * * *\"\ntemplate_id = \"tmpl\"\n[jobs.data]\nthing1 = \"hi\"\n\n[[recipients]]\nopenid = \"{}\"\njobs = [\"tick\"]\n",
        ids[0]
    );
    let env = TestEnv::with(&body).await;
    // Half a second before a slot.
    let start = "2026-01-05T00:00:00.5Z".parse().unwrap();
    let daemon = env.daemon_at(start).await;
    daemon.advance(Duration::from_millis(500)).await;
    wait_until(10, "a first run", || env.fake.accepted_count() >= 1).await;
    (env, daemon)
}

/// Waits (moving the clock a tick at a time, so that slots and retries come)
/// until /readyz answers `code` with a body containing `text`.
async fn wait_readyz(daemon: &Daemon, code: u16, text: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let (got, body) = get(daemon.http, "/readyz").await;
        if got == code && body.contains(text) {
            return body;
        }
        last = body;
        daemon.advance(Duration::from_millis(200)).await;
    }
    panic!("/readyz never answered {code} with {text:?}: {last}");
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_database_file_is_replaced() {
    if on_postgres() {
        return; // about the SQLite file and its lock folder
    }
    let (env, daemon) = ticking_daemon().await;
    assert_eq!(get(daemon.http, "/readyz").await.0, 200);
    // Another process (a restore, a stray `wxpush` with the file gone) puts a new
    // database where the daemon's was.
    let restored = env.dir.path().join("restored.db");
    Store::open(&format!("sqlite://{}", restored.display()))
        .await
        .unwrap()
        .close()
        .await;
    for leftover in ["wxpush.db-wal", "wxpush.db-shm"] {
        let _ = std::fs::remove_file(env.dir.path().join(leftover));
    }
    std::fs::rename(&restored, env.db_path()).unwrap();
    let (code, body) = get(daemon.http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("was replaced by another file"), "{body}");
    // And the daemon does not write into it, however many slots come.
    let before = env.fake.accepted_count();
    for _ in 0..5 {
        daemon.advance(Duration::from_secs(1)).await;
    }
    let runs = env.store().await.runs(None, 10).await.unwrap();
    assert!(runs.is_empty(), "nothing written to the new file: {runs:?}");
    assert_eq!(env.fake.accepted_count(), before, "nothing sent");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_reports_an_unusable_lock_folder_and_the_slot_is_retried_not_dropped() {
    if on_postgres() {
        return; // about the SQLite file and its lock folder
    }
    let (env, daemon) = ticking_daemon().await;
    let locks = env.dir.path().join("wxpush.db.locks");
    std::fs::rename(&locks, env.dir.path().join("locks.bak")).unwrap();
    std::fs::write(&locks, "not a folder").unwrap();

    let (code, body) = get(daemon.http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("lock"), "{body}");
    // A scheduled firing fails for it, and stays reported.
    let fault = wait_readyz(&daemon, 503, "the last firing failed").await;
    assert!(fault.contains("job tick"), "{fault}");
    // From now on nothing is sent while the lock cannot be taken: slots come and
    // the failed one is retried every 200 ms.
    let before = env.fake.accepted_count();
    for _ in 0..10 {
        daemon.advance(Duration::from_millis(300)).await;
    }
    assert_eq!(
        env.fake.accepted_count(),
        before,
        "nothing sent without its lock"
    );

    std::fs::remove_file(&locks).unwrap();
    wait_readyz(&daemon, 200, "").await;
    assert!(env.fake.accepted_count() > before, "sending again");
    let runs = daemon
        .app
        .store
        .runs(Some(&job_name("tick")), 100)
        .await
        .unwrap();
    daemon.stop().await.unwrap();
    // The slot that met the broken folder was retried and sent; slots that came
    // while that retry went on are skipped as overlapping, never for the lock.
    assert!(
        runs.iter()
            .all(|r| !r.note.as_deref().unwrap_or_default().contains("lock")),
        "no slot dropped for the lock folder: {runs:?}"
    );
    let sent = runs.iter().filter(|r| r.counts.sent == 1).count();
    assert!(
        sent >= 2,
        "the failed slot was sent after the fix: {runs:?}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_server_is_one_line_without_the_password() {
    let ids = openids(1);
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&[&ids[0]]))).await;
    // Port 1 on loopback: nothing listens there.
    for args in [&["send", "daily"][..], &["runs"]] {
        let run = finish(env.command(args).env(
            "WXPUSH__DATABASE__URL",
            "postgres://wx:hunter2@127.0.0.1:1/wxpush",
        ))
        .await;
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(!run.all().contains("hunter2"), "{run:?}");
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("connect to the database"), "{line}");
    }
    // `check` in a CI job that cannot reach production's database still checks
    // the file, and says what it could not check.
    let check = finish(env.command(&["check", "--offline"]).env(
        "WXPUSH__DATABASE__URL",
        "postgres://wx:hunter2@127.0.0.1:1/wxpush",
    ))
    .await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(!check.all().contains("hunter2"), "{check:?}");
    assert!(
        check.stderr.contains("database.url:") && check.stderr.contains("were not checked"),
        "{check:?}"
    );
    assert_eq!(env.fake.send_requests(), 0);
}

#[tokio::test]
async fn classic_tokens_are_refused_on_a_shared_database() {
    let ids = openids(1);
    let env = TestEnv::with(&format!("{}{}", daily_job(""), recipients(&[&ids[0]]))).await;
    let run = finish(
        env.command(&["check", "--offline"])
            .env("WXPUSH__DATABASE__URL", "postgres://wx@db.internal/wxpush")
            .env("WXPUSH__WECHAT__TOKEN_SOURCE", "classic"),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("wechat.token_source: \"classic\" cannot be used with a PostgreSQL database"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[tokio::test]
async fn a_command_run_as_root_leaves_the_service_users_database_usable_by_it() {
    if on_postgres() {
        return; // files of a SQLite database
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: giving files to another user needs root");
        return;
    }
    let (ids, body) = daily_audience(2);
    let mut env = TestEnv::with(&body).await;
    // The packaged host: the service's state folder, owned by its user
    // (here `nobody`), empty until the daemon first writes.
    let (uid, gid) = (65534u32, 65534u32);
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.db_url = format!("sqlite://{}", state.join("wxpush.db").display());
    env.write_config("", &body);
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The operator, as root, sends before the service ever ran.
    let as_root = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(as_root.code, 0, "{as_root:?}");

    let mut foreign = Vec::new();
    let mut walk = vec![state.clone()];
    while let Some(dir) = walk.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != uid {
                foreign.push(entry.path());
            }
            if meta.is_dir() {
                walk.push(entry.path());
            }
        }
    }
    assert!(foreign.is_empty(), "left to root: {foreign:?}");
    // The service's user sends next: the lock files and the database are its own.
    let as_service = finish(
        env.command(&["send", "daily", "--again"])
            .uid(uid)
            .gid(gid)
            .current_dir("/"),
    )
    .await;
    assert_eq!(as_service.code, 0, "{as_service:?}");
    for id in &ids {
        assert_eq!(env.fake.accepted_for(id), 2, "{id}");
    }
}

#[tokio::test]
async fn a_link_in_the_service_users_folder_never_gets_root_to_give_away_or_make_files_elsewhere() {
    if on_postgres() {
        return; // files of a SQLite database
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: giving files to another user needs root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let (_, body) = daily_audience(1);
    let mut env = TestEnv::with(&body).await;
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    // Root's files elsewhere, and the service's user's link to them where
    // the lock folder goes.
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("victim"), "root's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.join("wxpush.db.locks")).unwrap();
    env.db_url = format!("sqlite://{}", state.join("wxpush.db").display());
    env.write_config("", &body);

    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("wxpush.db.locks is not a folder"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::metadata(elsewhere.join("victim")).unwrap().uid(),
        0
    );
    assert_eq!(std::fs::metadata(&elsewhere).unwrap().uid(), 0);
    let made: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert_eq!(made.len(), 1, "nothing made there: {made:?}");
    assert_eq!(env.fake.accepted_count(), 0);
}
