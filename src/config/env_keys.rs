//! `WXPUSH__SECTION__KEY` variables that name no key. The config crate would
//! hand such a key to serde, whose "unknown field" names the section but not
//! the variable: an operator then searches the file for a typo that is in the
//! unit's `Environment=` line. Each is reported as the variable it is.

use serde_json::Value;

/// The prefix of every override (`WXPUSH_CONFIG`, with one underscore, is not one).
const PREFIX: &str = "WXPUSH__";

/// One line per variable in `vars` that names no key of `tree` (the file's
/// settings with every default filled in, as JSON); `apps` and `sources` are
/// checked against `app` and `source`, whatever the name in between.
pub(super) fn unknown(
    vars: impl IntoIterator<Item = String>,
    tree: &Value,
    app: &Value,
    source: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    for var in vars {
        // The config crate matches the prefix in any letter case.
        let upper = var.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if let Some(problem) = check(&var, &path, tree, app, source) {
            problems.push(problem);
        }
    }
    problems.sort();
    problems
}

fn check(var: &str, path: &[String], tree: &Value, app: &Value, source: &Value) -> Option<String> {
    let mut node = tree;
    let mut i = 0;
    while i < path.len() {
        let key = &path[i];
        let Value::Object(map) = node else {
            // Deeper than any key goes: `WXPUSH__LOG__LEVEL__X`.
            return Some(say(var, path, i, node));
        };
        match map.get(key) {
            // `apps.NAME.KEY`: any name; the key must be an app's.
            Some(_) if i == 0 && (key == "apps" || key == "sources") => {
                if path.len() < 3 {
                    return None;
                }
                node = if key == "apps" { app } else { source };
                i += 2;
                continue;
            }
            Some(next) => node = next,
            None => return Some(say(var, path, i, node)),
        }
        i += 1;
    }
    None
}

/// The line for `var`, whose segment `at` is not a key of `node`.
fn say(var: &str, path: &[String], at: usize, node: &Value) -> String {
    let dotted = path.join(".");
    let keys: Vec<&String> = match node {
        Value::Object(map) => map.keys().collect(),
        _ => Vec::new(),
    };
    let wrong = &path[at];
    let near = keys
        .iter()
        .map(|k| (strsim::levenshtein(k, wrong), *k))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = match near {
        Some((_, key)) => {
            let mut fixed: Vec<String> = path.iter().map(|s| s.to_uppercase()).collect();
            fixed[at] = key.to_uppercase();
            format!("; did you mean {PREFIX}{}?", fixed.join("__"))
        }
        None if keys.is_empty() => String::new(),
        None => format!(
            "; the keys there are {}",
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("environment variable {var}: {dotted} is not a configuration key{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree() -> Value {
        json!({
            "delivery": {"concurrency": 16, "max_attempts": 5},
            "log": {"level": "info"},
            "apps": {},
            "sources": {},
        })
    }

    fn unknown_of(vars: &[&str]) -> Vec<String> {
        unknown(
            vars.iter().map(|v| v.to_string()),
            &tree(),
            &json!({"appid": "", "secret": null}),
            &json!({"url": null, "timeout": "60s"}),
        )
    }

    #[test]
    fn a_misspelt_variable_is_named_with_the_one_it_was_meant_to_be() {
        assert_eq!(
            unknown_of(&["WXPUSH__DELIVERY__CONCURENCY"]),
            [
                "environment variable WXPUSH__DELIVERY__CONCURENCY: delivery.concurency is not a configuration key; did you mean WXPUSH__DELIVERY__CONCURRENCY?"
            ]
        );
        assert_eq!(
            unknown_of(&["WXPUSH__DELIVRY__CONCURRENCY"]),
            [
                "environment variable WXPUSH__DELIVRY__CONCURRENCY: delivry.concurrency is not a configuration key; did you mean WXPUSH__DELIVERY__CONCURRENCY?"
            ]
        );
    }

    #[test]
    fn keys_apps_and_sources_and_other_variables_pass() {
        assert!(
            unknown_of(&[
                "WXPUSH__DELIVERY__CONCURRENCY",
                "WXPUSH__LOG__LEVEL",
                "WXPUSH__APPS__SHOP__SECRET",
                "WXPUSH__SOURCES__CRM__URL",
                "WXPUSH_CONFIG",
                "PATH",
            ])
            .is_empty()
        );
        // The config crate takes the prefix in any case: so is it checked.
        let lower = unknown_of(&["wxpush__delivery__concurency"]);
        assert_eq!(lower.len(), 1, "{lower:?}");
        assert!(
            lower[0].starts_with("environment variable wxpush__delivery__concurency:"),
            "{lower:?}"
        );
        let wrong = unknown_of(&["WXPUSH__APPS__SHOP__SECRETT", "WXPUSH__LOG__LEVEL__X"]);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(
            wrong[0].contains("did you mean WXPUSH__APPS__SHOP__SECRET?"),
            "{wrong:?}"
        );
        assert!(
            wrong[1].starts_with("environment variable WXPUSH__LOG__LEVEL__X:"),
            "{wrong:?}"
        );
    }
}
