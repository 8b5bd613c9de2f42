//! Imports from Excel on Chinese Windows (GBK) and tables with Chinese names.

use crate::helpers::*;

const ZHANG: &str = "oZhang0000000000000000000001";
const LI: &str = "oLi0000000000000000000000002";
const BOB: &str = "oBob000000000000000000000003";

/// Writes `bytes` as a file in the env's folder and imports it into job `daily`.
async fn import(env: &TestEnv, name: &str, bytes: &[u8]) -> Run {
    let path = env.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    env.wxpush(&[
        "recipients",
        "import",
        path.to_str().unwrap(),
        "--job",
        "daily",
    ])
    .await
}

/// The listed recipients: (openid, name, city).
async fn listed(env: &TestEnv) -> Vec<(String, String, String)> {
    let run = env.wxpush(&["recipients", "list", "--json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    rows.iter()
        .map(|r| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&r["openid"]),
                text(&r["name"]),
                text(&r["vars"]["city"]),
            )
        })
        .collect()
}

/// How many columns `s` takes on a terminal, for the strings these tests use:
/// ASCII takes one, each Chinese character two.
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

#[tokio::test]
async fn a_gbk_csv_saved_by_excel_imports_with_its_chinese_intact() {
    let env = TestEnv::with(&daily_job("")).await;
    let text = format!("openid,name,city\n{ZHANG},张三丰,北京\n{LI},李四,上海\n");
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&gbk).is_err(),
        "the test file is not UTF-8"
    );

    let run = import(&env, "excel.csv", &gbk).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("imported 2 recipients into job daily"),
        "{run:?}"
    );
    assert_eq!(
        run.stderr.matches("read it as GB18030 (GBK)").count(),
        1,
        "said once: {}",
        run.stderr
    );
    let mut rows = listed(&env).await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (LI.to_owned(), "李四".to_owned(), "上海".to_owned()),
            (ZHANG.to_owned(), "张三丰".to_owned(), "北京".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_utf8_csv_with_a_bom_imports_as_utf8() {
    let env = TestEnv::with(&daily_job("")).await;
    let text = format!("\u{FEFF}openid,name,city\n{ZHANG},张三丰,北京\n");

    let run = import(&env, "bom.csv", text.as_bytes()).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("GB18030"), "{}", run.stderr);
    assert_eq!(
        listed(&env).await,
        vec![(ZHANG.to_owned(), "张三丰".to_owned(), "北京".to_owned())]
    );
}

#[tokio::test]
async fn a_csv_neither_utf8_nor_gbk_is_refused_naming_the_line_and_nothing_is_imported() {
    let env = TestEnv::with(&daily_job("")).await;
    // 0xFF starts no character in UTF-8 or in GB18030.
    let mut bytes = format!("openid,name\n{BOB},Bob\n{LI},Li").into_bytes();
    bytes.extend_from_slice(b"\xFF\n");
    let run = import(&env, "latin.csv", &bytes).await;

    assert_eq!(run.code, 2, "{run:?}");
    let path = env.dir.path().join("latin.csv").display().to_string();
    // Not GBK either: the hint is for what the file looks like.
    let hint = format!(
        "wxpush: {path} line 3: not UTF-8: the file looks like windows-1252 text; convert it: \
         iconv -f WINDOWS-1252 -t UTF-8 {path} > {path}.utf8.csv (or save it as \"CSV UTF-8\" in Excel)"
    );
    assert!(
        run.stderr.lines().any(|l| l == hint),
        "{hint}\n{}",
        run.stderr
    );
    assert_eq!(listed(&env).await, vec![]);

    // Mostly GBK with one stray byte: the line shown is the stray byte's, not the
    // first Chinese character's (which only UTF-8 cannot read).
    let text = format!("openid,name\n{ZHANG},张三丰\n{LI},李四\n{BOB},Bob");
    let mut bytes = encoding_rs::GBK.encode(&text).0.into_owned();
    bytes.extend_from_slice(b"\xFF\n");
    let run = import(&env, "stray.csv", &bytes).await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("stray.csv line 4: not UTF-8 (nor GBK)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("read it as GB18030"), "{}", run.stderr);
    assert_eq!(listed(&env).await, vec![]);

    // A file that starts with a UTF-8 BOM is not read as GBK, even where GBK
    // would read it (B0 A1 is 啊): the BOM would become part of the first header.
    let mut bytes = format!("\u{FEFF}openid,name\n{BOB},Bob\n{LI},Li").into_bytes();
    bytes.extend_from_slice(b"\xB0\xA1\n");
    let run = import(&env, "bom.csv", &bytes).await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("bom.csv line 3: not UTF-8 (nor GBK)"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await, vec![]);
}

#[tokio::test]
async fn recipients_list_lines_columns_up_after_a_chinese_name() {
    let env = TestEnv::with(&daily_job("")).await;
    for (openid, name, city) in [(ZHANG, "张三丰", "北京"), (BOB, "Bob", "Rome")] {
        let run = env
            .wxpush(&[
                "recipients",
                "add",
                openid,
                "--job",
                "daily",
                "--name",
                name,
                "--var",
                &format!("city={city}"),
            ])
            .await;
        assert_eq!(run.code, 0, "{run:?}");
    }

    let run = env.wxpush(&["recipients", "list"]).await;

    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    // Where the column after NAME (VARS) starts, on screen, on each line.
    let starts: Vec<usize> = [("JOB", "VARS"), (ZHANG, "city="), (BOB, "city=")]
        .iter()
        .map(|(key, vars)| {
            let line = lines.iter().find(|l| l.contains(key)).unwrap();
            display_width(&line[..line.find(vars).unwrap()])
        })
        .collect();
    assert!(
        starts.iter().all(|s| *s == starts[0]),
        "{starts:?}\n{}",
        run.stdout
    );
    assert!(lines.iter().any(|l| l.contains("张三丰")), "{}", run.stdout);
}

#[tokio::test]
async fn a_japanese_or_western_csv_is_refused_naming_its_encoding_never_read_as_chinese() {
    let env = TestEnv::with(&daily_job("")).await;
    // Excel on Japanese Windows saves Shift-JIS; GB18030 would read it as
    // Chinese mojibake, every byte being a character to it.
    let text = format!(
        "openid,name,city\n{ZHANG},山田太郎（ヤマダ　タロウ）,東京都\n{LI},佐藤花子（サトウ　ハナコ）,大阪府\n{BOB},鈴木一郎（スズキ　イチロウ）,北海道\n"
    );
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
    assert!(!unmappable);
    let run = import(&env, "japan.csv", &sjis).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("looks like Shift_JIS text; convert it: iconv -f SHIFT_JIS -t UTF-8"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("GB18030"), "{}", run.stderr);

    // Latin-1 (Windows-1252) with accented names.
    let text =
        format!("openid,name,city\n{ZHANG},José Müller,Zürich\n{LI},Françoise Lefèvre,Orléans\n");
    let (latin, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
    let run = import(&env, "west.csv", &latin).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("looks like windows-1252 text; convert it: iconv -f WINDOWS-1252 -t UTF-8"),
        "{}",
        run.stderr
    );
    // Nothing imported, so no mojibake stored.
    assert_eq!(listed(&env).await, vec![]);
}
