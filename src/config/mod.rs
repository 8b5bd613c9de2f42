//! Settings: defaults, then the TOML file, then `WXPUSH__SECTION__KEY` variables,
//! turned into domain types inside [`load`] so that a bad value names its key.

mod check;
mod database;
mod env_keys;
mod raw;
mod secret_file;
mod settings;

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

pub use raw::{Audience, ConsentCheck, LogFormat, OnUnknown, TokenSource};
pub(crate) use settings::same_secret;
pub use settings::{
    ApiSettings, AppSettings, DEFAULT_KEY_RETENTION, DatabaseSettings, DeliverySettings,
    IntakeSettings, Job, JobQuery, LogSettings, Recipient, RetentionSettings, Settings, SourceKind,
    SourceSettings, StatusSettings, WechatSettings,
};

use check::Checker;
use raw::RawSettings;

/// The config file used when neither `--config` nor `WXPUSH_CONFIG` names one.
pub(crate) const DEFAULT_PATH: &str = "config/wxpush.toml";

/// The package's config file (the .deb installs it), read when `DEFAULT_PATH`
/// does not exist.
pub(crate) const SYSTEM_PATH: &str = "/etc/wxpush/wxpush.toml";

/// Which file to read: `given` (`--config`, `WXPUSH_CONFIG`) when there is
/// one, else `default` if it exists, else `system` if that exists, else
/// `default` (whose absence is then reported). True when it fell back to
/// `system`, which the caller says, since nobody named that file.
pub(crate) fn resolve_path(given: Option<&Path>, default: &Path, system: &Path) -> (PathBuf, bool) {
    match given {
        Some(path) => (path.to_path_buf(), false),
        None if !default.exists() && system.is_file() => (system.to_path_buf(), true),
        None => (default.to_path_buf(), false),
    }
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// The problems, each naming the file and key at fault.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// Where the `WXPUSH__SECTION__KEY` overrides are read from.
#[derive(Debug, Clone, Default)]
pub enum Env {
    /// This process's environment (the binary).
    #[default]
    Process,
    /// These variables and no others: commands run inside another program (the
    /// tests) must not see, nor need, that program's environment.
    Given(std::collections::HashMap<String, String>),
}

impl Env {
    /// The names of the variables that are set (those that are not Unicode
    /// name no key, and are left out).
    fn names(&self) -> Vec<String> {
        match self {
            Self::Process => std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .collect(),
            Self::Given(vars) => vars.keys().cloned().collect(),
        }
    }

    fn is_set(&self, name: &str) -> bool {
        match self {
            Self::Process => std::env::var_os(name).is_some(),
            Self::Given(vars) => vars.contains_key(name),
        }
    }

    /// The config crate's source: `None` reads the process's own, which keeps
    /// its error for a value that is not Unicode.
    fn source(&self) -> Option<config::Map<String, String>> {
        match self {
            Self::Process => None,
            Self::Given(vars) => Some(vars.clone().into_iter().collect()),
        }
    }
}

/// Loads and checks the configuration at `path`, with overrides from this
/// process's environment.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_in(path, &Env::Process)
}

/// `load`, with the overrides of `env`.
pub(crate) fn load_in(path: &Path, env: &Env) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    if !path.is_file() {
        return Err(ConfigError::one(format!(
            "{file}: config file not found (choose one with --config PATH or WXPUSH_CONFIG)"
        )));
    }
    let raw: RawSettings = read(path, Some(env))?;
    Checker::new(file, path.to_path_buf()).check(raw)
}

/// The file at `path` as `T`, with the `WXPUSH__SECTION__KEY` overrides of
/// `env` when there is one (last, so that the environment wins over the file).
/// A variable that names no key is an error naming the variable.
fn read<T: serde::de::DeserializeOwned>(path: &Path, env: Option<&Env>) -> Result<T, ConfigError> {
    if let Some(env) = env {
        // Every key there is: the settings of a file with nothing but the one
        // required key, every default filled in.
        let all: RawSettings = serde_json::from_value(serde_json::json!({"wechat": {"appid": ""}}))
            .expect("only wechat.appid is required");
        let tree = serde_json::to_value(&all).expect("the settings serialise");
        let app: raw::RawApp = serde_json::from_value(serde_json::json!({"appid": ""}))
            .expect("an app needs only its appid");
        let source: raw::RawSource =
            serde_json::from_value(serde_json::json!({})).expect("a source has defaults");
        let problems = env_keys::unknown(
            env.names(),
            &tree,
            &serde_json::to_value(&app).expect("an app serialises"),
            &serde_json::to_value(&source).expect("a source serialises"),
        );
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
    }
    let mut builder = Config::builder().add_source(File::from(path).format(FileFormat::Toml));
    if let Some(env) = env {
        builder = builder.add_source(
            Environment::with_prefix("WXPUSH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env.source()),
        );
    }
    builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::one(describe(&path.display().to_string(), &e)))
}

/// The configuration in effect at `path`: every key (defaults filled in, secrets
/// and database passwords masked) and where each came from: `default`, `file`,
/// or the variable of `env` that set it. The file must pass `load`.
pub(crate) fn effective(
    path: &Path,
    env: &Env,
) -> Result<(serde_json::Value, Vec<Provenance>), ConfigError> {
    load_in(path, env)?;
    let raw: RawSettings = read(path, Some(env))?;
    let tree = serde_json::to_value(&raw).expect("the settings serialise");
    let written: serde_json::Value = read(path, None)?;
    let mut sources = Vec::new();
    provenance(&tree, &written, "", env, &mut sources);
    Ok((tree, sources))
}

/// One key in effect: its dotted name, its value, and where it came from.
pub(crate) type Provenance = (String, serde_json::Value, String);

/// Each leaf key of `tree` with where it came from: an environment variable
/// `WXPUSH__A__B` that is set in `env` wins, then the file, else the default.
fn provenance(
    tree: &serde_json::Value,
    written: &serde_json::Value,
    key: &str,
    env: &Env,
    out: &mut Vec<Provenance>,
) {
    let null = serde_json::Value::Null;
    match tree {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                provenance(v, written.get(k).unwrap_or(&null), &child, env, out);
            }
        }
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                provenance(
                    v,
                    written.get(i).unwrap_or(&null),
                    &format!("{key}[{i}]"),
                    env,
                    out,
                );
            }
        }
        _ => {
            let var = format!("WXPUSH__{}", key.replace('.', "__").to_uppercase());
            let source = if env.is_set(&var) {
                format!("env {var}")
            } else if !written.is_null() {
                "file".to_owned()
            } else {
                "default".to_owned()
            };
            out.push((key.to_owned(), tree.clone(), source));
        }
    }
}

/// One line for a `config` crate error, always naming the file: TOML errors come
/// as several lines (position, a source excerpt, the message), folded here.
fn describe(file: &str, e: &config::ConfigError) -> String {
    let text = e.to_string();
    // The crate appends " in <path>" with a path of its own making; we name the file first.
    let text = match text.rfind(" in ") {
        Some(i) if text[i + 4..].trim_end().ends_with(".toml") => text[..i].to_owned(),
        _ => text,
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = lines.filter(|l| !l.contains('|')).collect();
    let first = first.trim_start_matches("TOML parse error at ");
    if rest.is_empty() {
        format!("{file}: {first}")
    } else {
        format!("{file}: {first}: {}", rest.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_environment_is_the_only_one_read_for_overrides_typos_and_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxpush.toml");
        std::fs::write(&path, "[wechat]\nappid = \"wx0123456789abcdef\"\n").unwrap();
        let env = |var: &str| Env::Given([(var.to_owned(), "3".to_owned())].into());
        let settings = load_in(&path, &env("WXPUSH__DELIVERY__CONCURRENCY")).unwrap();
        assert_eq!(settings.delivery.concurrency, 3);
        let typo = load_in(&path, &env("WXPUSH__DELIVERY__CONCURENCY")).unwrap_err();
        assert!(
            typo.problems[0].starts_with("environment variable WXPUSH__DELIVERY__CONCURENCY:"),
            "{typo}"
        );
        let (_, sources) = effective(&path, &env("WXPUSH__DELIVERY__CONCURRENCY")).unwrap();
        let from = |key: &str| {
            sources
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, from)| from.as_str())
        };
        assert_eq!(
            from("delivery.concurrency"),
            Some("env WXPUSH__DELIVERY__CONCURRENCY")
        );
        assert_eq!(from("wechat.appid"), Some("file"));
        assert_eq!(from("delivery.max_attempts"), Some("default"));
    }

    #[test]
    fn the_default_file_then_the_packages_file_then_the_default_for_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let (default, system) = (dir.path().join("config.toml"), dir.path().join("etc.toml"));
        let given = dir.path().join("given.toml");
        // Named: that one, whatever exists.
        assert_eq!(
            resolve_path(Some(&given), &default, &system),
            (given.clone(), false)
        );
        // Neither exists: the default, so that its absence is what is said.
        assert_eq!(
            resolve_path(None, &default, &system),
            (default.clone(), false)
        );
        std::fs::write(&system, "").unwrap();
        assert_eq!(
            resolve_path(None, &default, &system),
            (system.clone(), true)
        );
        std::fs::write(&default, "").unwrap();
        assert_eq!(
            resolve_path(None, &default, &system),
            (default.clone(), false)
        );
    }
}
