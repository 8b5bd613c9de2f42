//! Settings: defaults, then the TOML file, then `WXPUSH__SECTION__KEY` variables,
//! turned into domain types inside [`load`] so that a bad value names its key.

mod database;
mod env_keys;
mod raw;
mod secret_file;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use config::{Config, Environment, File, FileFormat};

pub use raw::{Audience, ConsentCheck, LogFormat, OnUnknown, TokenSource};
pub(crate) use settings::same_secret;
pub use settings::{
    AppSettings, DatabaseSettings, DeliverySettings, IntakeSettings, Job, JobQuery, LogSettings,
    Recipient, RetentionSettings, Settings, SourceKind, SourceSettings, WechatSettings,
};

use crate::domain::{
    AppName, JobName, KeywordName, MessageSpec, OpenId, Page, Schedule, TemplateId, ValueTemplate,
};
use raw::RawSettings;

/// Why `token_source = "classic"` is refused on a shared database.
const CLASSIC_SHARED: &str = "\"classic\" cannot be used with a PostgreSQL database: every classic fetch invalidates the token other instances hold; use \"stable\"";

/// How long after its slot a run may still send, unless `send_window` says.
const DEFAULT_SEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// The config file used when neither `--config` nor `WXPUSH_CONFIG` names one.
pub const DEFAULT_PATH: &str = "config/wxpush.toml";

/// The package's config file (the .deb installs it), read when `DEFAULT_PATH`
/// does not exist.
pub const SYSTEM_PATH: &str = "/etc/wxpush/wxpush.toml";

/// Which file to read: `given` (`--config`, `WXPUSH_CONFIG`) when there is
/// one, else `default` if it exists, else `system` if that exists, else
/// `default` (whose absence is then reported). True when it fell back to
/// `system`, which the caller says, since nobody named that file.
pub fn resolve_path(given: Option<&Path>, default: &Path, system: &Path) -> (PathBuf, bool) {
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

/// Loads and checks the configuration at `path`, with environment overrides.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    if !path.is_file() {
        return Err(ConfigError::one(format!(
            "{file}: config file not found (choose one with --config PATH or WXPUSH_CONFIG)"
        )));
    }
    let raw: RawSettings = read(path, true)?;
    Checker::new(file, path.to_path_buf()).check(raw)
}

/// The file at `path` as `T`, with the `WXPUSH__SECTION__KEY` overrides when
/// `with_env` (last, so that the environment wins over the file). A variable
/// that names no key is an error naming the variable.
fn read<T: serde::de::DeserializeOwned>(path: &Path, with_env: bool) -> Result<T, ConfigError> {
    if with_env {
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
            std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
            &tree,
            &serde_json::to_value(&app).expect("an app serialises"),
            &serde_json::to_value(&source).expect("a source serialises"),
        );
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
    }
    let mut builder = Config::builder().add_source(File::from(path).format(FileFormat::Toml));
    if with_env {
        builder = builder.add_source(
            Environment::with_prefix("WXPUSH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    }
    builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::one(describe(&path.display().to_string(), &e)))
}

/// The configuration in effect at `path`: every key (defaults filled in, secrets
/// and database passwords masked) and where each came from: `default`, `file`,
/// or the environment variable that set it. The file must pass `load`.
pub fn effective(path: &Path) -> Result<(serde_json::Value, Vec<Provenance>), ConfigError> {
    load(path)?;
    let raw: RawSettings = read(path, true)?;
    let tree = serde_json::to_value(&raw).expect("the settings serialise");
    let written: serde_json::Value = read(path, false)?;
    let mut sources = Vec::new();
    provenance(&tree, &written, "", &mut sources);
    Ok((tree, sources))
}

/// One key in effect: its dotted name, its value, and where it came from.
pub type Provenance = (String, serde_json::Value, String);

/// Each leaf key of `tree` with where it came from: an environment variable
/// `WXPUSH__A__B` that is set wins, then the file, else the default.
fn provenance(
    tree: &serde_json::Value,
    written: &serde_json::Value,
    key: &str,
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
                provenance(v, written.get(k).unwrap_or(&null), &child, out);
            }
        }
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                provenance(
                    v,
                    written.get(i).unwrap_or(&null),
                    &format!("{key}[{i}]"),
                    out,
                );
            }
        }
        _ => {
            let var = format!("WXPUSH__{}", key.replace('.', "__").to_uppercase());
            let source = if std::env::var_os(&var).is_some() {
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

/// Walks the raw tree, converting each value and collecting every problem.
struct Checker {
    file: String,
    path: PathBuf,
    problems: Vec<String>,
}

impl Checker {
    fn new(file: String, path: PathBuf) -> Self {
        Self {
            file,
            path,
            problems: Vec::new(),
        }
    }

    fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problems.push(format!("{}: {key}: {msg}", self.file));
    }

    /// The config file's folder: relative paths in it are read from there.
    fn config_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).to_path_buf()
    }

    /// A secret from its key or its `_file` key (see `secret_file`).
    fn secret(
        &mut self,
        key: &str,
        value: Option<secrecy::SecretString>,
        file: Option<&str>,
    ) -> Option<secrecy::SecretString> {
        secret_file::pick(key, value, file, &self.config_dir())
            .map_err(|e| self.problems.push(format!("{}: {e}", self.file)))
            .ok()
            .flatten()
    }

    fn check(mut self, raw: RawSettings) -> Result<Settings, ConfigError> {
        if raw.scheduler.outage_retry.is_zero() {
            self.fail("scheduler.outage_retry", "must be more than 0s");
        }
        let classic = raw.wechat.token_source == TokenSource::Classic;
        let default_appid = raw.wechat.appid.clone();
        let wechat = self.wechat("wechat", raw.wechat);
        let delivery = self.delivery(raw.delivery);
        let config_dir = self.config_dir();
        let config_dir = config_dir.as_path();
        let mut database_url = database::resolve(&raw.database.url, config_dir)
            .map_err(|e| self.fail("database.url", e))
            .unwrap_or_default();
        if let Some(file) = raw.database.password_file.as_deref() {
            let password = secret_file::pick("database.password", None, Some(file), config_dir);
            match password.and_then(|p| database::with_password(&database_url, p)) {
                Ok(url) => database_url = url,
                Err(e) => self.problems.push(format!("{}: {e}", self.file)),
            }
        }
        if raw.database.max_connections == Some(0) {
            self.fail("database.max_connections", "must be at least 1");
        }
        if raw.database.busy_timeout.is_zero() {
            self.fail(
                "database.busy_timeout",
                "must be more than 0s (a write would fail at once whenever another process writes)",
            );
        }
        if raw.database.instance_lease < std::time::Duration::from_secs(1) {
            // Heartbeats come every third of it: shorter would be mostly writes.
            self.fail("database.instance_lease", "must be at least 1s");
        }
        if database::is_shared(&database_url) && classic {
            // Every classic fetch rotates the token: instances sharing one
            // database would keep invalidating each other's.
            self.fail("wechat.token_source", CLASSIC_SHARED);
        }
        let apps = self.apps(raw.apps, &default_appid, database::is_shared(&database_url));
        let sources = self.sources(raw.sources);
        // Every name written in [[jobs]], good or not: a recipient of a job that has
        // its own error is not reported again (one root cause, one line).
        let written: BTreeSet<String> = raw.jobs.iter().map(|j| j.name.clone()).collect();
        let jobs: Vec<Job> = raw
            .jobs
            .into_iter()
            .enumerate()
            .filter_map(|(i, j)| self.job(i, j, &raw.scheduler, &apps, &sources))
            .collect();
        let mut seen = BTreeSet::new();
        for job in &jobs {
            if !seen.insert(job.name.clone()) {
                self.fail(
                    "jobs",
                    format!("job {:?} is defined twice", job.name.as_ref()),
                );
            }
        }
        let recipients = self.recipients(raw.recipients, &jobs, &written, &apps);
        let http = if raw.http.enabled {
            raw.http
                .listen
                .parse()
                .map_err(|_| {
                    self.fail(
                        "http.listen",
                        format!(
                            "{:?} is not an address such as 127.0.0.1:9464",
                            raw.http.listen
                        ),
                    )
                })
                .ok()
        } else {
            None
        };
        let intake = self.intake(raw.intake, http);
        let retention = self.retention(raw.retention);
        if !self.problems.is_empty() {
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        Ok(Settings {
            path: self.path,
            wechat: wechat.expect("no problems means the wechat section converted"),
            apps,
            database: DatabaseSettings {
                url: database_url,
                max_connections: raw.database.max_connections,
                instance_lease: raw.database.instance_lease,
                busy_timeout: raw.database.busy_timeout,
            },
            delivery,
            log: LogSettings {
                level: raw.log.level,
                format: raw.log.format,
            },
            http,
            intake,
            jobs,
            recipients,
            reload_on_change: raw.scheduler.reload_on_change,
            outage_retry: raw.scheduler.outage_retry,
            retention,
        })
    }

    fn retention(&mut self, r: raw::RawRetention) -> Option<RetentionSettings> {
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        if r.keep < DAY {
            // "180s" for "180d" would delete the history of every finished run.
            self.fail(
                "retention.keep",
                format!(
                    "{} is less than a day; write days as \"180d\", or set retention.enabled = false to keep everything",
                    humantime::format_duration(r.keep)
                ),
            );
        }
        if r.every < std::time::Duration::from_secs(60) {
            self.fail("retention.every", "must be at least 1m");
        }
        if !(1..=10_000).contains(&r.batch) {
            self.fail(
                "retention.batch",
                format!("{} is not between 1 and 10000", r.batch),
            );
        }
        r.enabled.then_some(RetentionSettings {
            keep: r.keep,
            every: r.every,
            batch: r.batch,
        })
    }

    /// `http` is `[http] listen` when enabled.
    fn intake(
        &mut self,
        i: raw::RawIntake,
        http: Option<std::net::SocketAddr>,
    ) -> Option<IntakeSettings> {
        if !i.enabled {
            return None;
        }
        let listen = match i.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) if Some(addr) == http => {
                    self.fail(
                        "intake.listen",
                        format!("{a} is http.listen too; give the public routes their own port, or leave intake.listen out to share it"),
                    );
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.fail(
                        "intake.listen",
                        format!("{a:?} is not an address such as 127.0.0.1:8080"),
                    );
                    None
                }
            },
        };
        if listen.is_none() && http.is_none() && i.listen.is_none() {
            self.fail(
                "intake.enabled",
                "needs the HTTP listener; set http.enabled = true, or give the intake its own with intake.listen",
            );
        }
        let (token, aes_key) = self.callback(
            "intake",
            raw::RawCallback {
                callback_token: i.callback_token,
                callback_token_file: i.callback_token_file,
                encoding_aes_key: i.encoding_aes_key,
                encoding_aes_key_file: i.encoding_aes_key_file,
            },
        );
        if !(256..=1024 * 1024).contains(&i.max_body_bytes) {
            self.fail(
                "intake.max_body_bytes",
                format!("{} is not between 256 and 1048576", i.max_body_bytes),
            );
        }
        if i.per_ip_per_minute == 0 {
            self.fail("intake.per_ip_per_minute", "must be at least 1");
        }
        let client_ip_header = match i.client_ip_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(h) => axum::http::HeaderName::try_from(h)
                .map_err(|_| {
                    self.fail(
                        "intake.client_ip_header",
                        format!("{h:?} is not a header name such as X-Forwarded-For"),
                    )
                })
                .ok(),
        };
        Some(IntakeSettings {
            listen,
            callback_token: token,
            aes_key,
            max_body_bytes: i.max_body_bytes,
            per_ip_per_minute: i.per_ip_per_minute,
            client_ip_header,
        })
    }

    /// The message-push Token and EncodingAESKey of `at` (`intake` or
    /// `apps.NAME`), each checked as the mini program console requires.
    fn callback(
        &mut self,
        at: &str,
        c: raw::RawCallback,
    ) -> (Option<secrecy::SecretString>, Option<crate::domain::AesKey>) {
        let token = self.secret(
            &format!("{at}.callback_token"),
            c.callback_token,
            c.callback_token_file.as_deref(),
        );
        if let Some(t) = &token {
            let t = secrecy::ExposeSecret::expose_secret(t);
            // The console's rule for the message-push Token.
            if !(3..=32).contains(&t.len()) || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
                self.fail(
                    &format!("{at}.callback_token"),
                    "must be 3 to 32 letters or digits, as the mini program console requires",
                );
            }
        }
        let aes_key = self
            .secret(
                &format!("{at}.encoding_aes_key"),
                c.encoding_aes_key,
                c.encoding_aes_key_file.as_deref(),
            )
            .and_then(|k| {
                crate::domain::AesKey::parse(secrecy::ExposeSecret::expose_secret(&k))
                    .map_err(|rule| self.fail(&format!("{at}.encoding_aes_key"), rule))
                    .ok()
            });
        if aes_key.is_some() && token.is_none() {
            self.fail(
                &format!("{at}.encoding_aes_key"),
                format!("is used only with {at}.callback_token; set that too"),
            );
        }
        (token, aes_key)
    }

    fn wechat(&mut self, at: &str, w: raw::RawWechat) -> Option<WechatSettings> {
        let appid_ok = w.appid.starts_with("wx")
            && w.appid.len() == 18
            && w.appid.chars().all(|c| c.is_ascii_alphanumeric());
        if !appid_ok {
            self.fail(
                &format!("{at}.appid"),
                format!(
                    "{:?} is not a mini program AppID (wx followed by 16 letters or digits)",
                    w.appid
                ),
            );
        }
        let secret = self.secret(&format!("{at}.secret"), w.secret, w.secret_file.as_deref());
        let api_base = w.api_base.trim_end_matches('/').to_owned();
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            self.fail(
                &format!("{at}.api_base"),
                format!("{api_base:?} is not an http(s) URL"),
            );
        }
        if w.timeout.is_zero() {
            self.fail(&format!("{at}.timeout"), "must be more than 0s");
        }
        Some(WechatSettings {
            appid: w.appid,
            secret,
            api_base,
            token_source: w.token_source,
            timeout: w.timeout,
        })
    }

    /// `[apps.NAME]` tables: each like `[wechat]`, with its own callback secrets.
    fn apps(
        &mut self,
        raw: BTreeMap<String, raw::RawApp>,
        default_appid: &str,
        shared_db: bool,
    ) -> Vec<AppSettings> {
        let mut apps: Vec<AppSettings> = Vec::new();
        for (name, app) in raw {
            let at = format!("apps.{name}");
            let Ok(app_name) = AppName::parse(&name).map_err(|e| self.fail(&at, e)) else {
                continue;
            };
            let (wechat, callback) = app.split();
            if shared_db && wechat.token_source == TokenSource::Classic {
                self.fail(&format!("{at}.token_source"), CLASSIC_SHARED);
            }
            let Some(wechat) = self.wechat(&at, wechat) else {
                continue;
            };
            // One AppID, one token: two names for it would fight over it.
            if wechat.appid == default_appid {
                self.fail(
                    &format!("{at}.appid"),
                    "is [wechat]'s AppID too; an app is configured once",
                );
            } else if let Some(other) = apps.iter().find(|a| a.wechat.appid == wechat.appid) {
                self.fail(
                    &format!("{at}.appid"),
                    format!(
                        "is apps.{}'s AppID too; an app is configured once",
                        other.name
                    ),
                );
            }
            let (callback_token, aes_key) = self.callback(&at, callback);
            apps.push(AppSettings {
                name: app_name,
                wechat,
                callback_token,
                aes_key,
            });
        }
        apps
    }

    /// `[sources.NAME]` tables: read-only connections to the operator's databases.
    fn sources(&mut self, raw: BTreeMap<String, raw::RawSource>) -> Vec<SourceSettings> {
        let mut sources = Vec::new();
        for (name, source) in raw {
            let at = format!("sources.{name}");
            // The job-name rule, lower case: `WXPUSH__SOURCES__NAME__URL` must reach it.
            if let Err(e) = AppName::parse(&name) {
                self.fail(&at, e);
                continue;
            }
            let before = self.problems.len();
            let url = self.secret(
                &format!("{at}.url"),
                source.url.map(secrecy::SecretString::from),
                source.url_file.as_deref(),
            );
            let Some(url) = url else {
                // A bad url_file was reported by `secret`; only absence is left.
                if self.problems.len() == before {
                    self.fail(
                        &format!("{at}.url"),
                        "is missing; give url (or url_file) such as mysql://reader@host:3306/shop",
                    );
                }
                continue;
            };
            let written = secrecy::ExposeSecret::expose_secret(&url).trim().to_owned();
            let Some(kind) = SourceKind::of_url(&written) else {
                // The scheme only: the rest may hold a password.
                let scheme = written.split_once(':').map_or("(none)", |(s, _)| s);
                self.fail(
                    &format!("{at}.url"),
                    format!(
                        "{scheme:?} is not a supported source; use mysql://, mariadb://, postgres://, postgresql:// or sqlite://"
                    ),
                );
                continue;
            };
            let url = if kind == SourceKind::Sqlite {
                // As [database] url: a relative path is read from the config's folder.
                match database::resolve(&written, &self.config_dir()) {
                    Ok(url) => url,
                    Err(e) => {
                        self.fail(&format!("{at}.url"), e);
                        continue;
                    }
                }
            } else {
                written
            };
            if source.timeout.is_zero() {
                self.fail(&format!("{at}.timeout"), "must be more than 0s");
            }
            sources.push(SourceSettings {
                name,
                kind,
                url: url.into(),
                timeout: source.timeout,
            });
        }
        sources
    }

    /// A job's `source` and `query`: both with `audience = "query"`, neither otherwise.
    fn job_query(
        &mut self,
        at: &str,
        audience: Audience,
        source: Option<String>,
        query: Option<String>,
        sources: &[SourceSettings],
    ) -> Result<Option<Arc<JobQuery>>, ()> {
        let before = self.problems.len();
        if audience != Audience::Query {
            for (key, given) in [("source", source.is_some()), ("query", query.is_some())] {
                if given {
                    self.fail(
                        &format!("{at}.{key}"),
                        "is only read with audience = \"query\"; set that, or remove it",
                    );
                }
            }
            return if self.problems.len() > before {
                Err(())
            } else {
                Ok(None)
            };
        }
        let sql = query.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
        if sql.is_none() {
            self.fail(
                &format!("{at}.query"),
                "is missing; audience = \"query\" needs a SELECT with an openid column",
            );
        }
        let source = match source {
            None => {
                self.fail(
                    &format!("{at}.source"),
                    "is missing; audience = \"query\" needs a [sources.NAME] to run on",
                );
                None
            }
            Some(name) => match sources.iter().find(|s| s.name == name) {
                Some(s) => Some(s.clone()),
                None => {
                    let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                    self.fail(
                        &format!("{at}.source"),
                        format!(
                            "no source is named {name:?} (configured: {}); define it as [sources.{name}]",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    );
                    None
                }
            },
        };
        match (source, sql) {
            (Some(source), Some(sql)) => Ok(Some(Arc::new(JobQuery { source, sql }))),
            _ => Err(()),
        }
    }

    /// The app `name` names, or the default app when absent; `at` is the key.
    fn app_ref(
        &mut self,
        at: &str,
        name: Option<&str>,
        apps: &[AppSettings],
    ) -> Result<Option<AppName>, ()> {
        let Some(name) = name else {
            return Ok(None);
        };
        match apps.iter().find(|a| a.name.as_ref() == name) {
            Some(a) => Ok(Some(a.name.clone())),
            None => {
                let known: Vec<&str> = apps.iter().map(|a| a.name.as_ref()).collect();
                self.fail(
                    at,
                    format!(
                        "no app is named {name:?} (configured: {}); define it as [apps.{name}]",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                Err(())
            }
        }
    }

    fn delivery(&mut self, d: raw::RawDelivery) -> DeliverySettings {
        if !(1..=1024).contains(&d.concurrency) {
            self.fail(
                "delivery.concurrency",
                format!("{} is not between 1 and 1024", d.concurrency),
            );
        }
        if d.max_attempts == 0 {
            self.fail("delivery.max_attempts", "must be at least 1");
        }
        if d.backoff_max < d.backoff_base {
            self.fail("delivery.backoff_max", "is less than delivery.backoff_base");
        }
        DeliverySettings {
            concurrency: d.concurrency,
            rate_limit_per_sec: d.rate_limit_per_sec,
            max_attempts: d.max_attempts,
            backoff_base: d.backoff_base,
            backoff_max: d.backoff_max,
            on_unknown: d.on_unknown,
        }
    }

    fn job(
        &mut self,
        i: usize,
        j: raw::RawJob,
        scheduler: &raw::RawScheduler,
        apps: &[AppSettings],
        sources: &[SourceSettings],
    ) -> Option<Job> {
        let at = format!("jobs[{i}]");
        let before = self.problems.len();
        let name = JobName::parse(&j.name)
            .map_err(|e| self.fail(&format!("{at}.name"), e))
            .ok();
        let at = name.as_ref().map_or(at.clone(), |n| format!("{at} ({n})"));
        let app = self.app_ref(&format!("{at}.app"), j.app.as_deref(), apps);
        let query = self.job_query(&at, j.audience, j.source, j.query, sources);
        let tz: Option<Tz> = j
            .timezone
            .parse()
            .map_err(|_| {
                self.fail(
                    &format!("{at}.timezone"),
                    format!(
                        "{:?} is not an IANA time zone such as Asia/Shanghai",
                        j.timezone
                    ),
                )
            })
            .ok();
        let schedule = tz.and_then(|tz| {
            Schedule::parse(&j.cron, tz)
                .map_err(|e| self.fail(&format!("{at}.cron"), e))
                .ok()
        });
        let template_id = TemplateId::parse(&j.template_id)
            .map_err(|e| self.fail(&format!("{at}.template_id"), e))
            .ok();
        let page = match j.page.as_deref().map(Page::parse) {
            Some(Err(e)) => {
                self.fail(&format!("{at}.page"), e);
                None
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        if j.data.is_empty() {
            self.fail(
                &format!("{at}.data"),
                "is empty; give one value per template keyword",
            );
        }
        let mut data = Vec::new();
        for (key, value) in j.data {
            let k = KeywordName::parse(&key).map_err(|e| self.fail(&format!("{at}.data"), e));
            let v = ValueTemplate::parse(&value.into_string())
                .map_err(|e| self.fail(&format!("{at}.data.{key}"), e));
            if let (Ok(k), Ok(v)) = (k, v) {
                data.push((k, v));
            }
        }
        let catch_up = j.catch_up.unwrap_or(scheduler.catch_up);
        // Unset, the window is wide enough for the catch-up it allows.
        let send_window = j
            .send_window
            .or(scheduler.send_window)
            .unwrap_or(DEFAULT_SEND_WINDOW.max(catch_up));
        if send_window < catch_up {
            let key = if j.send_window.is_some() {
                format!("{at}.send_window")
            } else {
                "scheduler.send_window".to_owned()
            };
            self.fail(
                &key,
                format!(
                    "{} is shorter than the catch-up ({}): a slot caught up that late could send nothing",
                    humantime::format_duration(send_window),
                    humantime::format_duration(catch_up)
                ),
            );
        }
        if send_window.is_zero() {
            self.fail(&format!("{at}.send_window"), "must be more than 0s");
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Job {
            name: name?,
            app: app.ok()?,
            schedule: schedule?,
            catch_up,
            send_window,
            audience: j.audience,
            consent: j.consent,
            query: query.ok()?,
            spec: Arc::new(MessageSpec {
                template_id: template_id?,
                page,
                state: j.miniprogram_state,
                lang: j.lang,
                overflow: j.on_overflow,
                data,
            }),
        })
    }

    fn recipients(
        &mut self,
        raw: Vec<raw::RawRecipient>,
        jobs: &[Job],
        written: &BTreeSet<String>,
        apps: &[AppSettings],
    ) -> Vec<Recipient> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        // A job named wrongly, by where it is listed: one line each, however
        // many recipients list it.
        let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("recipients[{i}]");
            let Ok(openid) =
                OpenId::parse(&r.openid).map_err(|e| self.fail(&format!("{at}.openid"), e))
            else {
                continue;
            };
            let at = format!("{at} ({})", openid.masked());
            let Ok(app) = self.app_ref(&format!("{at}.app"), r.app.as_deref(), apps) else {
                continue;
            };
            // The same openid in two apps is two people.
            if !seen.insert((app.clone(), openid.clone())) {
                self.fail(
                    &at,
                    "this openid is listed twice; merge its jobs into one entry",
                );
            }
            if r.jobs.is_empty() {
                self.fail(
                    &format!("{at}.jobs"),
                    "is empty; name the jobs that send to this recipient",
                );
            }
            let mut names = Vec::new();
            let app_name = |a: &Option<AppName>| {
                a.as_ref()
                    .map_or("the default app ([wechat])".to_owned(), |n| {
                        format!("app \"{n}\"")
                    })
            };
            for j in &r.jobs {
                let job = JobName::parse(j)
                    .ok()
                    .and_then(|n| jobs.iter().find(|job| job.name == n));
                match job {
                    Some(job) if job.app != app => self.fail(
                        &format!("{at}.jobs"),
                        format!(
                            "job {j:?} sends for {}, but this recipient is of {}; an openid belongs to one app, so list it in an entry with app = {:?}",
                            app_name(&job.app),
                            app_name(&app),
                            job.app.as_ref().map_or("", |n| n.as_ref())
                        ),
                    ),
                    Some(job) if job.query.is_some() => self.fail(
                        &format!("{at}.jobs"),
                        format!(
                            "job {j:?} takes its audience from its query (audience = \"query\"); \
                             [[recipients]] entries are not read for it"
                        ),
                    ),
                    Some(job) => names.push(job.name.clone()),
                    // That job's own problem is reported where it is defined.
                    _ if written.contains(j) => {}
                    _ => unknown.entry(j.clone()).or_default().push(at.clone()),
                }
            }
            let vars: BTreeMap<String, String> = r
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_string()))
                .collect();
            out.push(Recipient {
                app,
                openid,
                name: r.name,
                jobs: names,
                vars,
            });
        }
        let defined: Vec<String> = jobs
            .iter()
            .map(|j| format!("{:?}", j.name.as_ref()))
            .collect();
        for (name, at) in unknown {
            let others = match at.len() {
                1 => String::new(),
                n => format!(
                    " (nor in the {} other entries that list it: {}{})",
                    n - 1,
                    at[1..at.len().min(4)].join(", "),
                    if n > 4 { ", ..." } else { "" }
                ),
            };
            let jobs = if defined.is_empty() {
                "the file defines no [[jobs]]".to_owned()
            } else {
                format!("the jobs are {}", defined.join(", "))
            };
            self.fail(
                &format!("{}.jobs", at[0]),
                format!("no job is named {name:?}{others}; {jobs}"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
