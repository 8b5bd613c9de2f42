//! Consent seen from the command line: check's template checks, recipients show, forget.

use super::*;

#[tokio::test]
async fn check_verifies_templates_and_warns_about_one_time_templates_on_daily_jobs() {
    let env = consent_env(&once_job("remind", "")).await;
    let run = env
        .command(&["check"])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("warning: ")
            && run
                .stderr
                .contains("jobs[0] (remind): template \"预约提醒\" is one-time"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("fires every 1day"), "{}", run.stderr);
    assert!(
        run.stderr.contains("is one-time and [intake] is disabled"),
        "{}",
        run.stderr
    );

    // A template the account does not have, and keys that are not its keywords.
    env.write_config(
        "",
        &(once_job("remind", "").replace("date2 = ", "time3 = ")
            + &daily_job("")
                .replace("tmpl-checkin", "tmpl-gone")
                .replace("\"daily\"", "\"gone\"")),
    );
    let run = env.wxpush(&["check"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("jobs[0] (remind).data.time3: template \"预约提醒\" has no keyword time3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("jobs[0] (remind).data: keyword date2 of template \"预约提醒\" has no value"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "jobs[1] (gone).template_id: \"tmpl-gone\" is not one of the account's templates"
        ),
        "{}",
        run.stderr
    );

    // Offline, only the file is checked.
    assert_eq!(env.wxpush(&["check", "--offline"]).await.code, 0);
}

#[tokio::test]
async fn recipients_show_lists_consent_per_template() {
    let alice = "oAlice0000000000000000000001";
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", ""),
        listed("remind", &[alice])
    ))
    .await;
    grant(&env, alice, 3).await;
    // Learn the template kinds (check fetches the list).
    assert_eq!(env.wxpush(&["check"]).await.code, 0);

    let run = env.wxpush(&["recipients", "show", alice]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("job remind: active (added by config)"),
        "{}",
        run.stdout
    );
    let line = run.stdout.lines().find(|l| l.starts_with(ONCE)).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        [ONCE, "one_time", "accept", "3", "intake"],
        "{line}"
    );

    let json = env.wxpush(&["recipients", "show", alice, "--json"]).await;
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["consents"][0]["credits"], 3);

    let nobody = env
        .wxpush(&["recipients", "show", "oNobody000000000000000000001"])
        .await;
    assert_eq!(nobody.code, 1);
    assert!(
        nobody.stderr.contains("nothing is known about oNobody"),
        "{}",
        nobody.stderr
    );
}

#[tokio::test]
async fn check_only_warns_when_wechat_cannot_be_reached() {
    let env = consent_env(&once_job("remind", "")).await;
    let closed = free_addr();
    let out = env
        .command(&["check"])
        .env("WXPUSH__WECHAT__API_BASE", format!("http://{closed}"))
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("warning: cannot verify the jobs' templates against WeChat"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(SECRET));
}

#[tokio::test]
async fn forget_erases_a_person_but_keeps_the_counts() {
    let (alice, listed_one) = (
        "oAlice0000000000000000000001",
        "oListed000000000000000000001",
    );
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", "audience = \"subscribed\""),
        listed("remind", &[listed_one])
    ))
    .await;
    grant(&env, alice, 1).await;
    let store = env.store().await;
    store
        .record_subscription(&appid(APPID), &oid(alice), Some("Alice"), None, &[])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(env.wxpush(&["send", "remind", "--again"]).await.code, 0);

    let run = env.wxpush(&["recipients", "forget", alice]).await;
    assert_eq!(run.code, 0, "{run:?}");

    let shown = env.wxpush(&["recipients", "show", alice]).await;
    assert_eq!(shown.code, 1, "{shown:?}");
    let history = env.wxpush(&["runs", "show", "1"]).await;
    assert!(!history.stdout.contains(alice), "{}", history.stdout);
    assert!(history.stdout.contains("forgotten-1"), "{}", history.stdout);
    let runs = env.wxpush(&["runs", "--json"]).await;
    let v: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(
        v[0]["counts"]["sent"], 1,
        "the run still counts its message"
    );

    // Someone the config file lists must leave the file first.
    let refused = env.wxpush(&["recipients", "forget", listed_one]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("remove it from the file first"));
    assert_eq!(
        env.wxpush(&["recipients", "forget", alice]).await.code,
        1,
        "nothing left to forget"
    );
}
