//! `wxpush config show`: the configuration in effect, each value with where it
//! came from, so that an operator sees which of file, environment and default won.

use std::path::Path;

use super::{Exit, Failure};

/// Prints the effective configuration of `path`.
pub(super) fn run(path: &Path, json: bool) -> Result<Exit, Failure> {
    let (tree, sources) = crate::config::effective(path)?;
    if json {
        let sources: serde_json::Map<String, serde_json::Value> = sources
            .into_iter()
            .map(|(k, _, from)| (k, serde_json::Value::String(from)))
            .collect();
        let out = serde_json::json!({ "config": tree, "sources": sources });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON serialises")
        );
        return Ok(Exit::Ok);
    }
    println!(
        "# {} as in effect; secrets are shown as \"***\"",
        path.display()
    );
    for (key, value, source) in &sources {
        println!("{key} = {}  # {source}", shown(value));
    }
    Ok(Exit::Ok)
}

/// A value as TOML would write it, near enough for reading.
fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(unset)".to_owned(),
        other => other.to_string(),
    }
}
