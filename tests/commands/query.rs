//! Audiences from the operator's own database (#14): a job's read-only query on
//! SQLite, PostgreSQL and MariaDB, run once per slot.

use std::time::Duration;

use crate::helpers::*;

const ANN: &str = "oAnn000000000000000000000001";
const BOB: &str = "oBob000000000000000000000002";
const CAT: &str = "oCat000000000000000000000003";

#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
    Mariadb,
}

const ALL: [Db; 3] = [Db::Sqlite, Db::Postgres, Db::Mariadb];

/// Runs `statements` on the database at `url`.
async fn exec(url: &str, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    pool.close().await;
}

/// How many rows `members` has.
async fn members(url: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// A new database of kind `db` with the `members` table; `None` (the test is
/// skipped, saying why) when its server binaries are missing.
async fn shop_db(env: &TestEnv, db: Db, test: &str) -> Option<String> {
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", env.dir.path().join("shop.db").display()),
        Db::Postgres => testpg::cluster_or_skip(test)?.database(),
        Db::Mariadb => testmysql::server_or_skip(test)?.database(),
    };
    let create = match db {
        Db::Sqlite => format!("{url}?mode=rwc"),
        _ => url.clone(),
    };
    exec(
        &create,
        &[
            "CREATE TABLE members (openid VARCHAR(64), nickname VARCHAR(64), points INTEGER, \
             expire_on DATE, push_ok INTEGER)",
            // Ann twice (one person, one message), Bob without a name, a row
            // that is no openid, and Cat who did not opt in.
            &format!(
                "INSERT INTO members VALUES ('{ANN}', 'Ann', 120, '2026-11-30', 1), \
                 ('{BOB}', NULL, 80, '2026-12-01', 1), ('{ANN}', 'Ann again', 5, '2026-12-02', 1), \
                 ('not an openid', 'X', 1, '2026-12-03', 1), ('{CAT}', 'Cat', 50, '2026-12-04', 0)"
            ),
        ],
    )
    .await;
    Some(url)
}

fn points_template() -> FakeTemplate {
    FakeTemplate {
        id: "tmpl-points".into(),
        title: "积分过期提醒".into(),
        content: "{{thing1.DATA}}{{number2.DATA}}{{date3.DATA}}".into(),
        kind: 3,
        everyone_subscribed: true,
    }
}

const QUERY: &str = "SELECT openid, nickname AS name, points, expire_on FROM members \
                     WHERE push_ok = 1 ORDER BY points DESC";

/// The `points` job reading `query` from source `shop` at `url`.
fn points_job(url: &str, query: &str, timeout: &str) -> String {
    points_job_at(url, query, timeout, &recent_cron(chrono_tz::Asia::Shanghai))
}

/// `points_job` firing on `cron`.
fn points_job_at(url: &str, query: &str, timeout: &str, cron: &str) -> String {
    format!(
        r#"
[sources.shop]
url = "{url}"
timeout = "{timeout}"

[[jobs]]
name = "points"
cron = "{cron}"
timezone = "Asia/Shanghai"
template_id = "tmpl-points"
audience = "query"
source = "shop"
query = """{query}"""
[jobs.data]
thing1 = "{{{{name|会员}}}}，积分即将过期"
number2 = "{{{{points}}}}"
date3 = "{{{{expire_on}}}}"
"#
    )
}

async fn points_env(opts: FakeOptions, delivery: &str) -> TestEnv {
    TestEnv::new(
        FakeOptions {
            templates: vec![points_template()],
            ..opts
        },
        delivery,
        "",
    )
    .await
}

/// `runs --json`, newest first.
async fn runs(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env.wxpush(&["runs", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn each_row_is_one_message_with_its_columns_fallbacks_for_nulls_and_duplicates_folded() {
    for db in ALL {
        let env = points_env(FakeOptions::default(), "").await;
        let test = "each_row_is_one_message_with_its_columns";
        let Some(url) = shop_db(&env, db, test).await else {
            continue;
        };
        env.write_config("", &points_job(&url, QUERY, "10s"));

        // The dry run reads the real audience and sends nothing.
        let dry = env.wxpush(&["send", "points", "--dry-run"]).await;
        assert!(
            dry.stdout.contains(
                "2 valid, 1 invalid of 3 messages from source shop (1 duplicate openids folded)"
            ),
            "{db:?}: {dry:?}"
        );
        assert_eq!(env.fake.accepted_count(), 0);

        let sent = env.wxpush(&["send", "points", "--again"]).await;
        assert_eq!(sent.code, 1, "{db:?}: one row is no openid: {sent:?}");
        assert_eq!(env.fake.accepted_count(), 2, "{db:?}");
        assert_eq!(env.fake.accepted_for(ANN), 1, "{db:?}: Ann once");
        assert_eq!(env.fake.accepted_for(CAT), 0, "{db:?}: not opted in");
        let body = |who: &str| {
            env.fake
                .accepted()
                .iter()
                .find(|m| m.touser == who)
                .and_then(|m| m.body.clone())
                .unwrap()
                .to_string()
        };
        // The first of Ann's rows, her values as the database wrote them.
        let ann = body(ANN);
        for part in ["Ann，积分即将过期", "\"120\"", "\"2026-11-30\""] {
            assert!(ann.contains(part), "{db:?}: {part} in {ann}");
        }
        assert!(
            body(BOB).contains("会员，积分即将过期"),
            "{db:?}: a NULL name takes the fallback: {}",
            body(BOB)
        );
        let run = &runs(&env).await[0];
        assert_eq!(run["folded"], 1, "{db:?}: {run}");
        let id = run["id"].to_string();
        let shown = env.wxpush(&["runs", "show", &id, "--json"]).await;
        let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
        let bad = v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["openid"] == "not an openid")
            .unwrap_or_else(|| panic!("{db:?}: {v}"));
        assert_eq!(bad["status"], "invalid", "{db:?}: {bad}");
        assert!(
            bad["errmsg"].as_str().unwrap().contains("openid"),
            "{db:?}: {bad}"
        );
    }
}

#[tokio::test]
async fn a_query_that_writes_is_refused_by_the_database_and_nobody_is_messaged() {
    for db in ALL {
        let env = points_env(FakeOptions::default(), "").await;
        let Some(url) = shop_db(&env, db, "a_query_that_writes_is_refused").await else {
            continue;
        };
        let delete = "DELETE FROM members WHERE push_ok = 1 RETURNING openid, nickname AS name, points, expire_on";
        env.write_config("", &points_job(&url, delete, "10s"));
        let sent = env.wxpush(&["send", "points", "--again"]).await;
        assert_eq!(sent.code, 3, "{db:?}: {sent:?}");
        assert!(
            sent.stderr.contains("source shop: the query failed"),
            "{db:?}: {}",
            sent.stderr
        );
        assert_eq!(env.fake.accepted_count(), 0, "{db:?}");
        assert_eq!(members(&url).await, 5, "{db:?}: the table is intact");
        let run = &runs(&env).await[0];
        assert_eq!(run["status"], "stopped", "{db:?}: {run}");
        assert!(
            run["note"]
                .as_str()
                .unwrap()
                .starts_with("audience query failed: source shop: the query failed"),
            "{db:?}: {run}"
        );
    }
}

#[tokio::test]
async fn check_reports_a_bad_query_and_a_fixed_query_sends_the_stopped_slot() {
    let env = points_env(FakeOptions::default(), "").await;
    let url = shop_db(&env, Db::Sqlite, "").await.unwrap();

    // A syntax error: `check` names the job; `send` stops before any send.
    env.write_config("", &points_job(&url, "SELEC openid FROM members", "10s"));
    let checked = env.wxpush(&["check"]).await;
    assert_eq!(checked.code, 2, "{checked:?}");
    assert!(
        checked
            .stderr
            .contains("jobs[0] (points).query: source shop: the query failed"),
        "{}",
        checked.stderr
    );
    let sent = env.wxpush(&["send", "points"]).await;
    assert_eq!(sent.code, 3, "{sent:?}");
    assert_eq!(env.fake.accepted_count(), 0);

    // No openid column, and a variable nothing supplies.
    env.write_config(
        "",
        &points_job(&url, "SELECT nickname AS name FROM members", "10s"),
    );
    let checked = env.wxpush(&["check"]).await;
    assert!(
        checked
            .stderr
            .contains("the result has no openid column (columns: name)"),
        "{}",
        checked.stderr
    );
    env.write_config(
        "",
        &points_job(&url, "SELECT openid, points FROM members", "10s"),
    );
    let checked = env.wxpush(&["check"]).await;
    assert!(
        checked.stderr.contains(
            "jobs[0] (points).data.date3: {{expire_on}} is not a column of the query on source shop (columns: openid, points)"
        ),
        "{}",
        checked.stderr
    );
    assert!(
        !checked.stderr.contains("{{name"),
        "name has a fallback: {}",
        checked.stderr
    );

    // Fixed, the same slot takes its snapshot again and sends once.
    env.write_config("", &points_job(&url, QUERY, "10s"));
    assert_eq!(env.wxpush(&["check"]).await.code, 0);
    let sent = env.wxpush(&["send", "points"]).await;
    assert_eq!(sent.code, 1, "one invalid row: {sent:?}");
    assert_eq!(env.fake.accepted_count(), 2);
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "still the slot's one run: {all:?}");
    assert_eq!(all[0]["status"], "done");
    let again = env.wxpush(&["send", "points"]).await;
    assert_eq!(env.fake.accepted_count(), 2, "never twice: {again:?}");
}

#[tokio::test]
async fn a_query_longer_than_its_timeout_stops_the_firing() {
    let env = points_env(FakeOptions::default(), "").await;
    let Some(url) = shop_db(&env, Db::Postgres, "a_query_longer_than_its_timeout").await else {
        return;
    };
    let slow = "SELECT m.*, m.nickname AS name FROM members m, pg_sleep(5) WHERE push_ok = 1";
    env.write_config("", &points_job(&url, slow, "1s"));
    let started = std::time::Instant::now();
    let sent = env.wxpush(&["send", "points", "--again"]).await;
    assert_eq!(sent.code, 3, "{sent:?}");
    assert!(
        sent.stderr.contains("ran longer than its timeout (1s)"),
        "{}",
        sent.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(4), "bounded");
    assert_eq!(env.fake.accepted_count(), 0);
}

#[tokio::test]
async fn a_run_killed_after_its_snapshot_resumes_without_asking_again() {
    let opts = FakeOptions {
        latency: Duration::from_millis(50),
        ..FakeOptions::default()
    };
    let env = points_env(opts, "concurrency = 2").await;
    let url = format!("sqlite://{}", env.dir.path().join("shop.db").display());
    let mut rows = Vec::new();
    for i in 0..40 {
        rows.push(format!("('oRow{i:024}', 'P{i}', {i}, '2026-12-01', 1)"));
    }
    exec(
        &format!("{url}?mode=rwc"),
        &[
            "CREATE TABLE members (openid TEXT, nickname TEXT, points INTEGER, expire_on TEXT, push_ok INTEGER)",
            &format!("INSERT INTO members VALUES {}", rows.join(", ")),
        ],
    )
    .await;
    env.write_config("concurrency = 2", &points_job(&url, QUERY, "10s"));
    let mut child = env
        .command(&["send", "points", "--again"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.fake.accepted_count() < 5 {
        still_running(&mut child);
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The audience changes after the snapshot: nobody is added or dropped.
    let newcomer = "oNew000000000000000000000009";
    exec(
        &url,
        &[
            "DELETE FROM members WHERE points < 20",
            &format!("INSERT INTO members VALUES ('{newcomer}', 'N', 1, '2026-12-01', 1)"),
        ],
    )
    .await;
    let resumed = env.wxpush(&["send", "points", "--again"]).await;
    assert!(
        resumed.stdout.starts_with("points: run 1:"),
        "run 1 resumed: {resumed:?}"
    );
    assert_eq!(env.fake.accepted_for(newcomer), 0, "not in the snapshot");
    let store = env.store().await;
    let deliveries = store.deliveries(1).await.unwrap();
    store.close().await;
    assert_eq!(deliveries.len(), 40, "the snapshot, whole");
    for d in &deliveries {
        let n = env.fake.accepted_for(&d.openid);
        assert!(n <= 1, "{} got {n}", d.openid);
        match d.status.as_str() {
            "sent" => assert_eq!(n, 1, "{}", d.openid),
            "unknown" => {}
            other => panic!("{} ended {other}", d.openid),
        }
    }
    assert_eq!(runs(&env).await.len(), 1);
}

/// The text of every column of the first row `sql` returns on `url`.
async fn first_row(
    url: &str,
    kind: wxpush::config::SourceKind,
    sql: &str,
) -> Vec<(String, String)> {
    let query = wxpush::config::JobQuery {
        source: wxpush::config::SourceSettings {
            name: "t".into(),
            kind,
            url: url.to_owned().into(),
            timeout: Duration::from_secs(10),
        },
        sql: sql.into(),
    };
    let mut rows = wxpush::source::rows(&query, "Asia/Shanghai".parse().unwrap());
    let row = rows.recv().await.unwrap().unwrap();
    assert_eq!(row.openid, ANN);
    row.vars.into_iter().collect()
}

#[tokio::test]
async fn values_become_text_the_same_way_on_every_database() {
    use wxpush::config::SourceKind;
    let dir = tempfile::tempdir().unwrap();
    // DDL and an insert per database; the UTC instant 01:00 is 09:00 in Shanghai.
    let cases: Vec<(Db, SourceKind, Vec<String>)> = vec![
        (
            Db::Sqlite,
            SourceKind::Sqlite,
            vec![
                "CREATE TABLE t (openid TEXT, amount NUMERIC, ok BOOLEAN, local_at DATETIME, day DATE, gone TEXT)".into(),
                format!("INSERT INTO t VALUES ('{ANN}', 12.5, 1, '2026-11-25 09:30:15', '2026-11-30', NULL)"),
            ],
        ),
        (
            Db::Postgres,
            SourceKind::Postgres,
            vec![
                "CREATE TABLE t (openid TEXT, amount NUMERIC(10,2), ok BOOLEAN, at TIMESTAMPTZ, \
                 local_at TIMESTAMP, day DATE, gone TEXT)".into(),
                format!("INSERT INTO t VALUES ('{ANN}', 12.50, true, '2026-11-25 01:00:00+00', \
                 '2026-11-25 09:30:15', '2026-11-30', NULL)"),
            ],
        ),
        (
            Db::Mariadb,
            SourceKind::MySql,
            vec![
                "CREATE TABLE t (openid VARCHAR(64), amount DECIMAL(10,2), ok BOOLEAN, at TIMESTAMP NULL, \
                 local_at DATETIME, day DATE, gone TEXT)".into(),
                // The instant in UTC, whatever the server's own zone.
                format!("INSERT INTO t VALUES ('{ANN}', 12.50, true, CONVERT_TZ('2026-11-25 01:00:00', '+00:00', @@session.time_zone), \
                 '2026-11-25 09:30:15', '2026-11-30', NULL)"),
            ],
        ),
    ];
    for (db, kind, statements) in cases {
        let test = "values_become_text_the_same_way_on_every_database";
        let url = match db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("v.db").display()),
            Db::Postgres => match testpg::cluster_or_skip(test) {
                Some(c) => c.database(),
                None => continue,
            },
            Db::Mariadb => match testmysql::server_or_skip(test) {
                Some(s) => s.database(),
                None => continue,
            },
        };
        let create = match db {
            Db::Sqlite => format!("{url}?mode=rwc"),
            _ => url.clone(),
        };
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        exec(&create, &statements).await;
        let got = first_row(&url, kind, "SELECT * FROM t").await;
        let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ok"), Some("true"), "{db:?}: {got:?}");
        assert_eq!(get("local_at"), Some("2026-11-25 09:30"), "{db:?}: {got:?}");
        assert_eq!(get("day"), Some("2026-11-30"), "{db:?}: {got:?}");
        assert_eq!(get("gone"), None, "{db:?}: NULL is absent: {got:?}");
        match db {
            // SQLite keeps the number it was given; it has no zoned timestamps.
            Db::Sqlite => assert_eq!(get("amount"), Some("12.5"), "{got:?}"),
            _ => {
                assert_eq!(get("amount"), Some("12.50"), "{db:?}: as written: {got:?}");
                assert_eq!(
                    get("at"),
                    Some("2026-11-25 09:00"),
                    "{db:?}: in the job's zone: {got:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn source_and_query_mistakes_are_one_line_each_and_a_password_is_never_shown() {
    let env = points_env(FakeOptions::default(), "").await;
    let secret = "Pa55-word";
    let url = format!("postgres://reader:{secret}@127.0.0.1:1/shop");
    let body = format!(
        "{}\n[sources.crm]\nurl = \"oracle://x@y/z\"\n\n[sources.files]\n\n\
         [[jobs]]\nname = \"listed\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl-points\"\n\
         source = \"shop\"\n[jobs.data]\nthing1 = \"x\"\n\n\
         [[jobs]]\nname = \"lost\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl-points\"\n\
         audience = \"query\"\nsource = \"nope\"\n[jobs.data]\nthing1 = \"x\"\n\n\
         [[recipients]]\nopenid = \"{ANN}\"\njobs = [\"points\"]\n",
        points_job(&url, QUERY, "10s")
    );
    env.write_config("", &body);
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    for want in [
        "sources.crm.url: \"oracle\" is not a supported source; use mysql://, mariadb://, postgres://, postgresql:// or sqlite://",
        "sources.files.url: is missing; give url (or url_file)",
        "jobs[1] (listed).source: is only read with audience = \"query\"",
        "jobs[2] (lost).source: no source is named \"nope\" (configured: shop)",
        "jobs[2] (lost).query: is missing",
        "recipients[0] (oAn***001).jobs: job \"points\" takes its audience from its query",
    ] {
        assert!(
            run.stderr.contains(want),
            "missing {want:?} in:\n{}",
            run.stderr
        );
    }
    assert!(!run.all().contains(secret));

    // Valid again: the source cannot be reached, and nothing says its password.
    env.write_config("", &points_job(&url, QUERY, "10s"));
    let shown = env.wxpush(&["config", "show"]).await;
    assert!(
        shown.stdout.contains("reader:***@127.0.0.1:1/shop"),
        "{}",
        shown.stdout
    );
    let checked = env.wxpush(&["check"]).await;
    assert!(
        checked
            .stderr
            .contains("jobs[0] (points).query: not checked: source shop: cannot connect"),
        "{checked:?}"
    );
    // The commands that log, on the binary: a password must not reach its log
    // lines either.
    let sent = env.binary(&["send", "points", "--again"]).await;
    assert_eq!(sent.code, 3, "{sent:?}");
    assert!(
        sent.stderr.contains("source shop: cannot connect"),
        "{sent:?}"
    );
    let added = env
        .binary(&["recipients", "add", ANN, "--job", "points"])
        .await;
    assert_eq!(added.code, 2, "{added:?}");
    assert!(
        added
            .stderr
            .contains("takes its audience from its query on source shop")
    );
    let runs = env.binary(&["runs", "--json"]).await;
    for out in [&shown, &checked, &sent, &added, &runs] {
        assert!(!out.all().contains(secret), "{out:?}");
    }

    // The URL from the environment, as any key.
    let mut c = env.command(&["config", "show"]);
    c.env("WXPUSH__SOURCES__SHOP__URL", "sqlite://elsewhere.db");
    let shown = finish(&mut c).await;
    assert!(shown.stdout.contains("elsewhere.db"), "{}", shown.stdout);
}

#[tokio::test]
async fn the_daemon_retries_an_unreachable_source_and_sends_once_it_is_back() {
    let env = points_env(FakeOptions::default(), "").await;
    // A source that is not there yet: SQLite cannot open a missing read-only file.
    let url = format!("sqlite://{}", env.dir.path().join("later.db").display());
    let job = points_job_at(&url, QUERY, "10s", "0 0 9 * * *");
    env.write_config(
        "",
        &format!("\n[scheduler]\noutage_retry = \"200ms\"\n{job}"),
    );
    // 09:00 in Shanghai is 01:00 UTC: start just before it.
    let start: chrono::DateTime<chrono::Utc> = "2026-11-25T00:59:59Z".parse().unwrap();
    let daemon = env.daemon_at(start).await;
    let status = async || {
        let run = daemon.app.store.run(1).await.unwrap();
        run.map(|r| r.status.as_str().to_owned())
    };
    daemon.advance(Duration::from_secs(2)).await;
    // Retried every 200 ms of the clock meanwhile; however loaded the machine,
    // the slot's run is there and stopped after a few of them.
    daemon
        .advance_until(
            Duration::from_millis(200),
            2000,
            "the slot's run stopped",
            async || status().await.as_deref() == Some("stopped"),
        )
        .await;
    for _ in 0..6 {
        daemon.advance(Duration::from_millis(200)).await;
    }
    assert_eq!(env.fake.accepted_count(), 0);
    let run = daemon
        .app
        .store
        .run(1)
        .await
        .unwrap()
        .expect("the slot's run");
    assert_eq!(run.status.as_str(), "stopped");
    assert!(
        run.note
            .as_deref()
            .unwrap_or_default()
            .contains("source shop: cannot connect"),
        "{run:?}"
    );

    // The database is back (here: created), and the next try takes the snapshot.
    exec(
        &format!("{url}?mode=rwc"),
        &[
            "CREATE TABLE members (openid TEXT, nickname TEXT, points INTEGER, expire_on TEXT, push_ok INTEGER)",
            &format!("INSERT INTO members VALUES ('{ANN}', 'Ann', 1, '2026-12-01', 1), ('{BOB}', NULL, 2, '2026-12-01', 1)"),
        ],
    )
    .await;
    daemon
        .advance_until(
            Duration::from_secs(1),
            // Each step lets the daemon act for 20 ms of real time: enough
            // of them for a loaded machine (the check ends the wait at once).
            600,
            "the slot's run was sent",
            async || status().await.as_deref() == Some("done"),
        )
        .await;
    daemon.stop().await.unwrap();
    assert_eq!(
        (env.fake.accepted_for(ANN), env.fake.accepted_for(BOB)),
        (1, 1)
    );
    assert_eq!(runs(&env).await.len(), 1, "the slot's one run");
}

#[tokio::test]
async fn a_query_audience_is_gated_by_one_time_credits_like_any_other() {
    let env = points_env(FakeOptions::default(), "").await;
    let url = shop_db(&env, Db::Sqlite, "").await.unwrap();
    // One-time: only Ann accepted, once.
    let once = FakeTemplate {
        kind: 2,
        everyone_subscribed: false,
        ..points_template()
    };
    let env = TestEnv::new(
        FakeOptions {
            templates: vec![once],
            ..FakeOptions::default()
        },
        "",
        &points_job(&url, QUERY, "10s"),
    )
    .await;
    let store = env.store().await;
    store
        .record_subscription(
            &appid(APPID),
            &oid(ANN),
            None,
            None,
            &[(tmpl("tmpl-points"), wxpush::domain::ConsentResult::Accept)],
        )
        .await
        .unwrap();
    store.close().await;
    env.fake.subscribe(ANN, "tmpl-points", 1);
    let first = env.wxpush(&["send", "points", "--again"]).await;
    assert_eq!(env.fake.accepted_for(ANN), 1, "{first:?}");
    assert_eq!(
        env.fake.accepted_for(BOB),
        0,
        "no consent: skipped, no call"
    );
    // Her one credit is spent: a new round skips her too.
    env.wxpush(&["send", "points", "--again"]).await;
    assert_eq!(env.fake.accepted_count(), 1);
    let run = &runs(&env).await[0];
    assert_eq!(run["counts"]["skipped"], 2, "{run}");
}

#[tokio::test]
async fn a_failed_query_is_counted_on_metrics_and_a_url_file_is_read() {
    let env = points_env(FakeOptions::default(), "").await;
    // The URL from a file (as a secret would be); the file names a database
    // that does not exist, so every firing fails to connect.
    let missing = env.dir.path().join("missing.db");
    env.file("shop-url", &format!("sqlite://{}\n", missing.display()));
    let job = points_job_at("unused", QUERY, "10s", "* * * * * *")
        .replace("url = \"unused\"", "url_file = \"shop-url\"");
    env.write_config("", &job);
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let metrics = format!("http://{}/metrics", env.http);
    let mut seen = String::new();
    for _ in 0..100 {
        seen = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        // Counted (the series is there at 0 from the start).
        if seen.lines().any(|l| {
            l.starts_with("wxpush_audience_query_failures_total")
                && l.contains("wxpush_job=\"points\"")
                && l.contains("reason=\"unreachable\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    assert!(
        seen.contains("wxpush_audience_query_failures_total{")
            && seen.contains("reason=\"unreachable\""),
        "{seen}"
    );
    assert_eq!(env.fake.accepted_count(), 0);
    let all = runs(&env).await;
    assert!(
        !all.is_empty() && all.iter().all(|r| r["status"] == "stopped"),
        "{all:?}"
    );
}

#[tokio::test]
async fn rows_without_an_openid_are_each_recorded_invalid_never_folded_as_duplicates() {
    let env = points_env(FakeOptions::default(), "").await;
    let url = format!("sqlite://{}", env.dir.path().join("shop.db").display());
    exec(
        &format!("{url}?mode=rwc"),
        &[
            "CREATE TABLE members (openid VARCHAR(64), nickname VARCHAR(64), points INTEGER, \
             expire_on DATE, push_ok INTEGER)",
            // Three rows the query failed to name (two NULLs, an empty string)
            // and Ann twice: one duplicate.
            &format!(
                "INSERT INTO members VALUES (NULL, 'A', 3, '2026-12-01', 1), ('', 'B', 2, '2026-12-01', 1), \
                 (NULL, 'C', 1, '2026-12-01', 1), ('{ANN}', 'Ann', 120, '2026-11-30', 1), \
                 ('{ANN}', 'Ann again', 5, '2026-12-02', 1)"
            ),
        ],
    )
    .await;
    env.write_config("", &points_job(&url, QUERY, "10s"));

    let dry = env.wxpush(&["send", "points", "--dry-run"]).await;
    let sent = env.wxpush(&["send", "points", "--again"]).await;

    assert!(
        dry.stdout.contains(
            "1 valid, 3 invalid of 4 messages from source shop (1 duplicate openids folded)"
        ),
        "{dry:?}"
    );
    assert_eq!(sent.code, 1, "{sent:?}");
    assert_eq!(env.fake.accepted_count(), 1);
    let run = &runs(&env).await[0];
    assert_eq!(run["folded"], 1, "only Ann's second row: {run}");
    assert_eq!(run["counts"]["invalid"], 3, "{run}");
    assert_eq!(run["counts"]["total"], 4, "{run}");
    let id = run["id"].to_string();
    let shown = env.wxpush(&["runs", "show", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let reasons: Vec<&str> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "invalid")
        .map(|d| d["errmsg"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{v}");
    assert_eq!(
        reasons.iter().filter(|r| r.contains("NULL")).count(),
        2,
        "{reasons:?}"
    );
}
