//! The operator's commands: recipients, runs, and what output never contains.

use crate::helpers::*;

#[tokio::test]
async fn import_is_all_or_nothing_and_names_the_bad_lines() {
    let env = TestEnv::with(&daily_job("")).await;
    let bad = env.file(
        "bad.csv",
        "openid,name,city\noAlice0000000000000000000001,Alice,Paris\no bad,Bob,Rome\noAlice0000000000000000000001,Again,Oslo\noLong00000000000000000000000,xxxxxxxxxxxxxxxxxxxxxxxxx,Nice\nabc,Carl,Lyon\n",
    );

    let run = env
        .wxpush(&[
            "recipients",
            "import",
            bad.to_str().unwrap(),
            "--job",
            "daily",
        ])
        .await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("bad.csv line 3: openid: openid \"o bad\" contains ' '"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "bad.csv line 6: openid: openid \"abc\" is 3 characters; WeChat openids are 28"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("bad.csv line 5: job daily: data.thing1: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    let listed = env.wxpush(&["recipients", "list", "--json"]).await;
    assert_eq!(listed.stdout.trim(), "[]");

    let dup = env.file(
        "dup.csv",
        "openid,name\noAlice0000000000000000000001,Alice\noBob000000000000000000000022,Bob\noAlice0000000000000000000001,Again\n",
    );
    let run = env
        .wxpush(&[
            "recipients",
            "import",
            dup.to_str().unwrap(),
            "--job",
            "daily",
        ])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "dup.csv line 4: openid oAlice0000000000000000000001 is already on an earlier line"
        ),
        "{}",
        run.stderr
    );
    let listed = env.wxpush(&["recipients", "list", "--json"]).await;
    assert_eq!(listed.stdout.trim(), "[]", "rolled back");

    let good = env.file(
        "good.csv",
        "openid,name,city\noAlice0000000000000000000001,Alice,Paris\noBob000000000000000000000022,Bob,Rome\n",
    );
    let run = env
        .wxpush(&[
            "recipients",
            "import",
            good.to_str().unwrap(),
            "--job",
            "daily",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("imported 2 recipients into job daily"),
        "{}",
        run.stdout
    );

    let send = env.wxpush(&["send", "daily", "--again"]).await;
    assert_eq!(send.code, 0, "{send:?}");
    assert_eq!(env.fake.accepted_for("oAlice0000000000000000000001"), 1);
    let body = env
        .fake
        .accepted()
        .into_iter()
        .find(|a| a.touser == "oAlice0000000000000000000001")
        .unwrap()
        .body
        .unwrap();
    assert_eq!(body["data"]["thing1"]["value"], "Alice, check in");
}

#[tokio::test]
async fn a_csv_without_an_openid_column_is_refused() {
    let env = TestEnv::with(&daily_job("")).await;
    let f = env.file("x.csv", "id,name\n1,a\n");
    let run = env
        .wxpush(&[
            "recipients",
            "import",
            f.to_str().unwrap(),
            "--job",
            "daily",
        ])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("x.csv line 1: the header has no `openid` column"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn editing_the_config_file_adds_and_deactivates_recipients_but_keeps_cli_ones() {
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&[
            "oFile00000000000000000000001",
            "oFile00000000000000000000002"
        ])
    ))
    .await;
    let add = env
        .wxpush(&[
            "recipients",
            "add",
            "oCli000000000000000000000001",
            "--job",
            "daily",
            "--name",
            "Cli",
        ])
        .await;
    assert_eq!(add.code, 0, "{add:?}");
    assert_eq!(env.wxpush(&["send", "daily", "--again"]).await.code, 0);
    assert_eq!(env.fake.accepted_count(), 3);

    // The operator removes oFile2 and adds oFile3.
    env.write_config(
        "",
        &format!(
            "{}{}",
            daily_job(""),
            recipients(&[
                "oFile00000000000000000000001",
                "oFile00000000000000000000003"
            ])
        ),
    );
    let run = env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.fake.accepted_for("oFile00000000000000000000001"), 2);
    assert_eq!(
        env.fake.accepted_for("oFile00000000000000000000002"),
        1,
        "removed from the file: not sent again"
    );
    assert_eq!(env.fake.accepted_for("oFile00000000000000000000003"), 1);
    assert_eq!(
        env.fake.accepted_for("oCli000000000000000000000001"),
        2,
        "added by the CLI: untouched by the sync"
    );
    let list = env.wxpush(&["recipients", "list", "--job", "daily"]).await;
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains("oFile00000000000000000000002"))
        .unwrap();
    assert!(line.contains("config") && line.contains(" no "), "{line}");
}

#[tokio::test]
async fn remove_takes_a_recipient_out_of_later_runs() {
    let env = TestEnv::with(&daily_job("")).await;
    env.wxpush(&[
        "recipients",
        "add",
        "oCli000000000000000000000001",
        "--job",
        "daily",
        "--name",
        "A",
    ])
    .await;
    env.wxpush(&[
        "recipients",
        "add",
        "oCli000000000000000000000002",
        "--job",
        "daily",
        "--name",
        "B",
    ])
    .await;
    let rm = env
        .wxpush(&["recipients", "remove", "oCli000000000000000000000001"])
        .await;
    assert_eq!(rm.code, 0, "{rm:?}");
    assert_eq!(
        env.wxpush(&["recipients", "remove", "oCli000000000000000000000001"])
            .await
            .code,
        1
    );

    env.wxpush(&["send", "daily", "--again"]).await;

    assert_eq!(env.fake.accepted_for("oCli000000000000000000000001"), 0);
    assert_eq!(env.fake.accepted_for("oCli000000000000000000000002"), 1);
}

#[tokio::test]
async fn add_refuses_a_recipient_whose_message_would_be_invalid() {
    let env = TestEnv::with(&daily_job("")).await;
    let run = env
        .wxpush(&[
            "recipients",
            "add",
            "oCli000000000000000000000001",
            "--job",
            "daily",
        ])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("thing1: {{name}} has no value"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn runs_shows_history_with_counts_and_per_recipient_outcomes() {
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&[
            "oUserA0000000000000000000001",
            "oUserB0000000000000000000002"
        ])
    ))
    .await;
    env.fake
        .script("oUserB0000000000000000000002", [Scripted::Errcode(43101)]);
    env.wxpush(&["send", "daily", "--again"]).await;

    let list = env.wxpush(&["runs", "--json"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let runs: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(runs[0]["job"], "daily");
    assert_eq!(runs[0]["status"], "done");
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["counts"]["sent"], 1);
    assert_eq!(runs[0]["counts"]["refused"], 1);

    let show = env.wxpush(&["runs", "show", "1", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let deliveries = doc["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let sent = deliveries
        .iter()
        .find(|d| d["openid"] == "oUserA0000000000000000000001")
        .unwrap();
    let msgid: u64 = sent["msgid"].as_str().unwrap().parse().unwrap();
    assert!(msgid > 1 << 53);

    let table = env.wxpush(&["runs", "show", "1"]).await;
    assert!(
        table.stdout.contains("oUserB0000000000000000000002") && table.stdout.contains("43101"),
        "{}",
        table.stdout
    );
    let missing = env.wxpush(&["runs", "show", "99"]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("no run with id 99"));
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_output_and_openids_are_masked_in_logs() {
    let env = TestEnv::with(&format!(
        "{}{}",
        daily_job(""),
        recipients(&["oSecretUser00000000012345678"])
    ))
    .await;
    env.fake.script(
        "oSecretUser00000000012345678",
        [Scripted::Errcode(-1), Scripted::Errcode(43101)],
    );

    let out = env
        .command(&["send", "daily", "--again"])
        .env("RUST_LOG", "debug")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);

    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.all().contains(SECRET), "secret leaked");
    assert!(
        !run.all().contains("FAKE_TOKEN"),
        "token leaked:\n{}",
        run.all()
    );
    assert!(
        !run.stderr.contains("oSecretUser00000000012345678"),
        "openid unmasked in logs:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("oSe***678"), "{}", run.stderr);
}
