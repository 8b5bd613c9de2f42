//! PostgreSQL over TLS, as managed databases require it (RDS with
//! `rds.force_ssl`, Aliyun, Tencent Cloud): a throwaway cluster that accepts
//! TLS connections only, with a self-signed certificate. `sslmode` and
//! `sslrootcert` in the URL and `PGSSLMODE` are honoured, for `[database]`
//! and for a `[sources]` audience alike.

use crate::helpers::*;

fn tls_cluster(test: &str) -> Option<testpg::Private> {
    match testpg::private_tls() {
        Ok(pg) => Some(pg),
        Err(why) if std::env::var("WXPUSH_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (WXPUSH_REQUIRE_POSTGRES=1) but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// `wxpush send daily --again` with the env's config but `[database] url` =
/// `url` (and `PGSSLMODE` = `pgsslmode`).
async fn send(env: &TestEnv, url: &str, pgsslmode: Option<&str>) -> Run {
    let config = env.dir.path().join("tls.toml");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        &format!("url = \"{}\"", env.db_url),
        &format!("url = \"{url}\""),
    );
    assert!(text.contains(url));
    std::fs::write(&config, text).unwrap();
    let mut c = env.command(&["send", "daily", "--again"]);
    c.env("WXPUSH_CONFIG", &config);
    if let Some(mode) = pgsslmode {
        c.env("PGSSLMODE", mode);
    }
    finish(&mut c).await
}

#[tokio::test]
async fn postgresql_that_accepts_only_tls_is_reached_as_sslmode_says_and_a_wrong_ca_is_refused() {
    let test =
        "postgresql_that_accepts_only_tls_is_reached_as_sslmode_says_and_a_wrong_ca_is_refused";
    let Some(pg) = tls_cluster(test) else {
        return;
    };
    let (ids, body) = daily_audience(1);
    let env = TestEnv::with(&body).await;
    let db = pg.database();
    let ca = pg.ca().display().to_string();
    let wrong = env.dir.path().join("other-ca.crt");
    testpg::other_ca(&wrong).unwrap();
    let wrong = wrong.display().to_string();

    // Plaintext is refused by the server, whether the URL or PGSSLMODE says so.
    let plain = send(&env, &format!("{db}?sslmode=disable"), None).await;
    assert_eq!(plain.code, 3, "{plain:?}");
    assert!(plain.stderr.contains("database"), "{plain:?}");
    let by_env = send(&env, &db, Some("disable")).await;
    assert_eq!(by_env.code, 3, "PGSSLMODE is read: {by_env:?}");

    // TLS: required, or verified against the server's own certificate (the
    // host name 127.0.0.1 is in it).
    for url in [
        format!("{db}?sslmode=require"),
        format!("{db}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{db}?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let run = send(&env, &url, None).await;
        assert_eq!(run.code, 0, "{url}: {run:?}");
    }
    let by_env = send(&env, &db, Some("require")).await;
    assert_eq!(by_env.code, 0, "PGSSLMODE=require: {by_env:?}");
    assert_eq!(env.fake.accepted_for(&ids[0]), 4);

    // Verified against an authority that did not sign the server's
    // certificate: refused, nothing sent.
    let refused = send(
        &env,
        &format!("{db}?sslmode=verify-full&sslrootcert={wrong}"),
        None,
    )
    .await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert_eq!(env.fake.accepted_for(&ids[0]), 4);
}

#[tokio::test]
async fn an_audience_source_on_postgresql_over_tls_is_verified_against_its_ca() {
    let test = "an_audience_source_on_postgresql_over_tls_is_verified_against_its_ca";
    let Some(pg) = tls_cluster(test) else {
        return;
    };
    let source = pg.database();
    let ca = pg.ca().display().to_string();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{source}?sslmode=require"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE members (openid TEXT, nickname TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO members VALUES ('oTls000000000000000000000001', 'Tls')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let job = |url: &str| {
        format!(
            r#"
[sources.crm]
url = "{url}"

[[jobs]]
name = "daily"
cron = "0 0 9 * * *"
timezone = "Asia/Shanghai"
template_id = "tmpl"
audience = "query"
source = "crm"
query = "SELECT openid, nickname AS name FROM members"
[jobs.data]
thing1 = "{{{{name}}}}"
"#
        )
    };
    let env = TestEnv::with(&job(&format!(
        "{source}?sslmode=verify-full&sslrootcert={ca}"
    )))
    .await;
    let dry = env.wxpush(&["send", "daily", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("1 valid"), "{dry:?}");

    let wrong = env.dir.path().join("other-ca.crt");
    testpg::other_ca(&wrong).unwrap();
    env.write_config(
        "",
        &job(&format!(
            "{source}?sslmode=verify-full&sslrootcert={}",
            wrong.display()
        )),
    );
    let refused = env.wxpush(&["send", "daily", "--dry-run"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stdout.is_empty() || !refused.stdout.contains("1 valid"),
        "{refused:?}"
    );
}
