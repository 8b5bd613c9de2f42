//! `wxpush config show`: the configuration in effect, each value with where it
//! came from, so that an operator sees which of file, environment and default won.

use std::path::Path;

use super::{Console, Exit, Failure, outln};

/// Prints the effective configuration of `path`.
pub(super) fn run(
    path: &Path,
    env: &crate::config::Env,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let (tree, sources) = crate::config::effective(path, env)?;
    if json {
        let sources: serde_json::Map<String, serde_json::Value> = sources
            .into_iter()
            .map(|(k, _, from)| (k, serde_json::Value::String(from)))
            .collect();
        let doc = serde_json::json!({ "config": tree, "sources": sources });
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON serialises")
        );
        return Ok(Exit::Ok);
    }
    outln!(
        out,
        "# {} as in effect; secrets are shown as \"***\"",
        path.display()
    );
    for (key, value, source) in &sources {
        outln!(out, "{key} = {}  # {source}", shown(value));
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
