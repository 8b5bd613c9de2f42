//! Imports from Excel on Chinese Windows (GBK) and tables with Chinese names.

use crate::helpers::*;

const ZHANG: &str = "oZhang0000000000000000000001";
const BOB: &str = "oBob000000000000000000000003";

/// How many columns `s` takes on a terminal, for the strings these tests use:
/// ASCII takes one, each Chinese character two.
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
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
