//! Sends gated by consent: no call without it, one credit for one message, settled after crashes and refusals.

use super::*;

#[tokio::test]
async fn without_consent_there_is_no_api_call_and_43101_clears_the_credit() {
    let (with, without, stale) = (
        "oWith00000000000000000000001",
        "oWithout00000000000000000002",
        "oStale0000000000000000000003",
    );
    let env = consent_env(&format!(
        "{}{}",
        once_job("remind", ""),
        listed("remind", &[with, without, stale])
    ))
    .await;
    grant(&env, with, 1).await;
    grant(&env, stale, 1).await;
    // The stale person's acceptance was used up elsewhere: WeChat will answer 43101.
    env.fake.script(stale, [Scripted::Errcode(43101)]);

    let run = env.wxpush(&["send", "remind", "--again"]).await;

    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("1 sent, 0 failed, 1 refused, 0 invalid, 0 unknown, 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(
        env.fake.send_requests(),
        2,
        "no call for the one without consent"
    );
    assert_eq!(env.fake.accepted_for(with), 1);
    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    let status_of = |o: &str| {
        let d = rows.iter().find(|d| d.openid == o).unwrap();
        (d.status.as_str(), d.errmsg.clone())
    };
    assert_eq!(status_of(without), ("skipped", Some("no consent".into())));
    assert_eq!(status_of(stale).0, "refused");
    store.close().await;
    assert_eq!(consent(&env, with, ONCE).await, Some(("accept".into(), 0)));
    assert_eq!(consent(&env, stale, ONCE).await, Some(("accept".into(), 0)));
    assert_eq!(consent(&env, without, ONCE).await, None);

    // Next time nobody has a credit: no calls at all.
    let again = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(again.stdout.contains("0 sent"), "{}", again.stdout);
    assert!(again.stdout.contains("3 skipped"), "{}", again.stdout);
    assert_eq!(env.fake.send_requests(), 2);
}

#[tokio::test]
async fn a_subscribed_audience_is_everyone_with_consent_and_only_them() {
    let (twice, once, refused) = (
        "oTwice0000000000000000000001",
        "oOnce00000000000000000000002",
        "oRefused00000000000000000003",
    );
    let env = consent_env(&once_job("remind", "audience = \"subscribed\"")).await;
    grant(&env, twice, 2).await;
    grant(&env, once, 1).await;
    let store = env.store().await;
    for (who, name) in [(once, "Ona"), (twice, "Tw")] {
        store
            .record_subscription(&appid(APPID), &oid(who), Some(name), None, &[])
            .await
            .unwrap();
    }
    store
        .record_subscription(
            &appid(APPID),
            &oid(refused),
            Some("R"),
            None,
            &[(tmpl(ONCE), wxpush::domain::ConsentResult::Reject)],
        )
        .await
        .unwrap();
    store.close().await;

    // The dry run renders the same audience, without a call.
    let dry = env.wxpush(&["send", "remind", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("2 valid, 0 invalid of 2 messages"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("hello Ona") && !dry.stdout.contains(refused));
    assert_eq!(env.fake.send_requests(), 0);

    let first = env.wxpush(&["send", "remind", "--again"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stdout.contains("2 sent") && first.stdout.contains("of 2 "),
        "{}",
        first.stdout
    );
    let second = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(
        second.stdout.contains("1 sent") && second.stdout.contains("of 1 "),
        "{}",
        second.stdout
    );
    let third = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(third.stdout.contains("of 0 "), "{}", third.stdout);

    assert_eq!(env.fake.accepted_for(twice), 2);
    assert_eq!(env.fake.accepted_for(once), 1);
    assert_eq!(env.fake.accepted_for(refused), 0);
    assert_eq!(env.fake.send_requests(), 3, "not one wasted call");
    // The name given through the intake API fills {{name}} for subscribed people.
    let to_once = env
        .fake
        .accepted()
        .into_iter()
        .find(|a| a.touser == once)
        .unwrap();
    assert_eq!(
        to_once.body.unwrap()["data"]["thing1"]["value"],
        "hello Ona"
    );
}

#[tokio::test]
async fn a_one_time_credit_is_used_exactly_once_by_concurrent_runs() {
    let people: Vec<String> = (1..=40).map(|i| format!("oShared{i:021}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    // Two jobs on the same one-time template, both listing everyone.
    let body = format!(
        "{}{}{}",
        once_job("morning", ""),
        once_job("evening", ""),
        refs.iter()
            .map(|o| format!("\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"morning\", \"evening\"]\nname = \"n\"\n"))
            .collect::<String>()
    );
    let opts = FakeOptions {
        templates: vec![once_template()],
        latency: std::time::Duration::from_millis(5),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(opts, "concurrency = 4", &body).await;
    // Create the database (and sync the file's recipients) before the race.
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    for p in &refs {
        grant(&env, p, 1).await;
    }

    let (a, b) = tokio::join!(
        env.wxpush(&["send", "morning", "--again"]),
        env.wxpush(&["send", "evening", "--again"])
    );

    assert!(a.code <= 1 && b.code <= 1, "{a:?} {b:?}");
    for p in &refs {
        assert_eq!(env.fake.accepted_for(p), 1, "{p}");
        assert_eq!(
            consent(&env, p, ONCE).await,
            Some(("accept".into(), 0)),
            "{p}"
        );
    }
    // Whichever run held the credit sent; the other skipped without a call.
    assert_eq!(env.fake.send_requests(), 40, "{a:?} {b:?}");
    let store = env.store().await;
    let (r1, r2) = (
        store.run(1).await.unwrap().unwrap().counts,
        store.run(2).await.unwrap().unwrap().counts,
    );
    assert_eq!(r1.sent + r2.sent, 40, "{r1:?} {r2:?}");
    assert_eq!(r1.skipped + r2.skipped, 40, "{r1:?} {r2:?}");
}

#[tokio::test]
async fn credits_held_by_a_killed_send_are_settled_on_resume() {
    let people: Vec<String> = (1..=12).map(|i| format!("oCrash{i:022}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let opts = FakeOptions {
        templates: vec![once_template()],
        latency: std::time::Duration::from_millis(100),
        ..FakeOptions::default()
    };
    let env = TestEnv::new(
        opts,
        "concurrency = 2",
        &format!("{}{}", once_job("remind", ""), listed("remind", &refs)),
    )
    .await;
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    for p in &refs {
        // Two credits each: one for this run, one that must survive it.
        grant(&env, p, 2).await;
    }

    let mut child = env
        .command(&["send", "remind", "--again"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20, "some sends", || env.fake.accepted_count() >= 3).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let resumed = env.wxpush(&["send", "remind", "--again"]).await;
    assert!(resumed.stdout.starts_with("remind: run 1:"), "{resumed:?}");

    let store = env.store().await;
    let rows = store.deliveries(1).await.unwrap();
    for p in &refs {
        let row = rows.iter().find(|r| r.openid == *p).unwrap();
        let got = env.fake.accepted_for(p) as i64;
        assert!(got <= 1, "{p} got {got}");
        let c = store
            .consents_of(&appid(APPID), &oid(p))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(c.reserved, 0, "{p}: nothing is held after the resume");
        match row.status.as_str() {
            // Sent: one credit used, one left.
            "sent" => assert_eq!((got, c.credits), (1, 1), "{p}"),
            // Maybe sent: its credit counts as used, so the second stays.
            "unknown" => assert_eq!(c.credits, 1, "{p}"),
            other => panic!("{p} ended {other}"),
        }
    }
}

#[tokio::test]
async fn a_long_term_subscription_refused_by_wechat_is_not_tried_again() {
    let (kept, lost) = (
        "oKept00000000000000000000001",
        "oLost00000000000000000000002",
    );
    let long_term = FakeTemplate {
        id: "tmpl-long".into(),
        title: "长期提醒".into(),
        content: "{{thing1.DATA}}".into(),
        kind: 3,
        everyone_subscribed: false,
    };
    let opts = FakeOptions {
        templates: vec![long_term],
        ..FakeOptions::default()
    };
    let job = "\n[[jobs]]\nname = \"notice\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl-long\"\naudience = \"subscribed\"\n[jobs.data]\nthing1 = \"notice\"\n";
    let env = TestEnv::new(opts, "", job).await;
    // A read-only command never creates the database: open it as a daemon would.
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    let store = env.store().await;
    for who in [kept, lost] {
        store
            .record_subscription(
                &appid(APPID),
                &oid(who),
                None,
                None,
                &[(tmpl("tmpl-long"), wxpush::domain::ConsentResult::Accept)],
            )
            .await
            .unwrap();
    }
    store.close().await;
    // Only `kept` really holds the subscription at WeChat.
    env.fake.subscribe(kept, "tmpl-long", 1);

    let first = env.wxpush(&["send", "notice", "--again"]).await;
    assert!(
        first.stdout.contains("1 sent, 0 failed, 1 refused"),
        "{first:?}"
    );
    assert_eq!(
        consent(&env, lost, "tmpl-long").await,
        Some(("reject".into(), 0))
    );

    let second = env.wxpush(&["send", "notice", "--again"]).await;
    assert!(
        second.stdout.contains("1 sent") && second.stdout.contains("of 1 "),
        "{second:?}"
    );
    assert_eq!(
        env.fake.accepted_for(kept),
        2,
        "a long-term subscription is not used up"
    );
    assert_eq!(
        env.fake.send_requests(),
        3,
        "no second call for the refused one"
    );
}

#[tokio::test]
async fn a_listed_recipient_who_rejected_a_long_term_template_is_skipped_without_a_call() {
    let (kept, gone, banned) = (
        "oKept00000000000000000000001",
        "oGone00000000000000000000002",
        "oBann00000000000000000000003",
    );
    let long_term = FakeTemplate {
        id: "tmpl-long".into(),
        title: "长期提醒".into(),
        content: "{{thing1.DATA}}".into(),
        kind: 3,
        everyone_subscribed: true,
    };
    let opts = FakeOptions {
        templates: vec![long_term],
        ..FakeOptions::default()
    };
    let job = format!(
        "\n[[jobs]]\nname = \"notice\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl-long\"\n[jobs.data]\nthing1 = \"notice\"\n{}",
        listed("notice", &[kept, gone, banned])
    );
    let env = TestEnv::new(opts, "", &job).await;
    env.store().await.close().await;
    assert_eq!(env.wxpush(&["recipients", "list"]).await.code, 0);
    // The mini program reported one rejection, and WeChat pushed one ban.
    let store = env.store().await;
    for (who, result) in [
        (gone, wxpush::domain::ConsentResult::Reject),
        (banned, wxpush::domain::ConsentResult::Ban),
    ] {
        store
            .record_subscription(
                &appid(APPID),
                &oid(who),
                None,
                None,
                &[(tmpl("tmpl-long"), result)],
            )
            .await
            .unwrap();
    }
    store.close().await;

    let run = env.wxpush(&["send", "notice", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("1 sent") && run.stdout.contains("2 skipped"),
        "{run:?}"
    );
    assert_eq!(env.fake.send_requests(), 1, "no call for either of them");
    assert_eq!(env.fake.accepted_for(kept), 1);
    let rows = env.store().await.deliveries(1).await.unwrap();
    for who in [gone, banned] {
        let d = rows.iter().find(|d| d.openid == who).unwrap();
        assert_eq!(
            (d.status.as_str(), d.errmsg.as_deref()),
            ("skipped", Some("no consent")),
            "{who}"
        );
    }
    assert_eq!(
        consent(&env, banned, "tmpl-long").await.map(|c| c.0),
        Some("ban".into()),
        "a ban stays a ban"
    );
}
