//! The config file as written: one serde tree, defaults filled in here.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::policy::RawPolicy;
use crate::domain::{Lang, MiniprogramState, Overflow};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub wechat: RawWechat,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub scheduler: RawScheduler,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub intake: RawIntake,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub apps: BTreeMap<String, RawApp>,
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub jobs: Vec<RawJob>,
    #[serde(default)]
    pub recipients: Vec<RawRecipient>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWechat {
    pub appid: String,
    #[serde(serialize_with = "redacted")]
    pub secret: Option<SecretString>,
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default)]
    pub token_source: TokenSource,
    #[serde(default = "default_timeout", with = "plain_duration")]
    pub timeout: Duration,
}

/// `[sources.NAME]`: a read-only connection to the operator's own database.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(default, serialize_with = "masked_url_opt")]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
    #[serde(default = "default_source_timeout", with = "plain_duration")]
    pub timeout: Duration,
}

fn default_source_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `[apps.NAME]`: another mini program, with `[wechat]`'s keys and its own
/// callback secrets.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub appid: String,
    #[serde(default, serialize_with = "redacted")]
    pub secret: Option<SecretString>,
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default)]
    pub token_source: TokenSource,
    #[serde(default = "default_timeout", with = "plain_duration")]
    pub timeout: Duration,
    #[serde(default, serialize_with = "redacted")]
    pub callback_token: Option<SecretString>,
    #[serde(default)]
    pub callback_token_file: Option<String>,
    #[serde(default, serialize_with = "redacted")]
    pub encoding_aes_key: Option<SecretString>,
    #[serde(default)]
    pub encoding_aes_key_file: Option<String>,
    #[serde(default)]
    pub policy: RawPolicy,
}

impl RawApp {
    /// Its `[wechat]`-like part, and the callback secrets.
    pub(super) fn split(self) -> (RawWechat, RawCallback) {
        (
            RawWechat {
                appid: self.appid,
                secret: self.secret,
                secret_file: self.secret_file,
                api_base: self.api_base,
                token_source: self.token_source,
                timeout: self.timeout,
            },
            RawCallback {
                callback_token: self.callback_token,
                callback_token_file: self.callback_token_file,
                encoding_aes_key: self.encoding_aes_key,
                encoding_aes_key_file: self.encoding_aes_key_file,
            },
        )
    }
}

/// An app's callback secrets, as written.
pub(super) struct RawCallback {
    pub callback_token: Option<SecretString>,
    pub callback_token_file: Option<String>,
    pub encoding_aes_key: Option<SecretString>,
    pub encoding_aes_key_file: Option<String>,
}

/// Which endpoint issues the access_token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// `POST /cgi-bin/stable_token`: the same token for every caller, no rotation war.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every call rotates the token.
    Classic,
}

impl TokenSource {
    /// The name stored beside a cached token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Classic => "classic",
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    #[serde(default = "default_db_url", serialize_with = "masked_url")]
    pub url: String,
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default = "default_instance_lease", with = "plain_duration")]
    pub instance_lease: Duration,
    #[serde(default = "default_busy_timeout", with = "plain_duration")]
    pub busy_timeout: Duration,
}

fn default_busy_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_instance_lease() -> Duration {
    Duration::from_secs(30)
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            max_connections: None,
            password_file: None,
            instance_lease: default_instance_lease(),
            busy_timeout: default_busy_timeout(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDelivery {
    pub concurrency: usize,
    pub rate_limit_per_sec: u32,
    pub max_attempts: u32,
    #[serde(with = "plain_duration")]
    pub backoff_base: Duration,
    #[serde(with = "plain_duration")]
    pub backoff_max: Duration,
    pub on_unknown: OnUnknown,
}

impl Default for RawDelivery {
    fn default() -> Self {
        Self {
            concurrency: 16,
            rate_limit_per_sec: 0,
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            on_unknown: OnUnknown::Record,
        }
    }
}

/// What a send with no answer (sent, outcome unknown) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    /// Record it as `unknown` and never resend: at most one message.
    #[default]
    Record,
    /// Retry it like a transient failure: at least one message, maybe two.
    Retry,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawScheduler {
    #[serde(with = "plain_duration")]
    pub catch_up: Duration,
    pub reload_on_change: bool,
    #[serde(with = "plain_duration_opt")]
    pub send_window: Option<Duration>,
    #[serde(with = "plain_duration")]
    pub outage_retry: Duration,
}

impl Default for RawScheduler {
    fn default() -> Self {
        Self {
            catch_up: Duration::from_secs(3600),
            reload_on_change: true,
            send_window: None,
            outage_retry: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetention {
    pub enabled: bool,
    #[serde(with = "plain_duration")]
    pub keep: Duration,
    #[serde(with = "plain_duration")]
    pub every: Duration,
    pub batch: u32,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            enabled: true,
            keep: Duration::from_secs(180 * 86_400),
            every: Duration::from_secs(3600),
            batch: 500,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApi {
    pub enabled: bool,
    pub listen: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub token: Option<SecretString>,
    pub token_file: Option<String>,
    #[serde(with = "plain_duration")]
    pub max_schedule_ahead: Duration,
    #[serde(with = "plain_duration")]
    pub idempotency_retention: Duration,
}

/// `[status]`: the read-only status page on `[http]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStatus {
    /// Unset: on wherever `[http]` is; `true` without `[http]` is an error.
    pub enabled: Option<bool>,
    #[serde(serialize_with = "redacted")]
    pub password: Option<SecretString>,
    pub password_file: Option<String>,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            token: None,
            token_file: None,
            max_schedule_ahead: Duration::from_secs(30 * 24 * 3600),
            idempotency_retention: crate::config::DEFAULT_KEY_RETENTION,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    pub enabled: bool,
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIntake {
    pub enabled: bool,
    pub listen: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub callback_token: Option<SecretString>,
    pub callback_token_file: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub encoding_aes_key: Option<SecretString>,
    pub encoding_aes_key_file: Option<String>,
    pub max_body_bytes: usize,
    pub per_ip_per_minute: u32,
    pub client_ip_header: Option<String>,
}

impl Default for RawIntake {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            callback_token: None,
            callback_token_file: None,
            encoding_aes_key: None,
            encoding_aes_key_file: None,
            max_body_bytes: 16 * 1024,
            per_ip_per_minute: 60,
            client_ip_header: None,
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub level: Option<String>,
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub name: String,
    #[serde(default)]
    pub app: Option<String>,
    pub cron: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub template_id: String,
    pub page: Option<String>,
    #[serde(default)]
    pub miniprogram_state: MiniprogramState,
    #[serde(default)]
    pub lang: Lang,
    #[serde(default)]
    pub on_overflow: Overflow,
    #[serde(default, with = "plain_duration_opt")]
    pub catch_up: Option<Duration>,
    #[serde(default, with = "plain_duration_opt")]
    pub send_window: Option<Duration>,
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub consent: ConsentCheck,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub policy: RawPolicy,
}

/// Who a job sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Its recipients from the config file, the command line and imports.
    #[default]
    Listed,
    /// Everyone whose consent to the job's template is on record.
    Subscribed,
    /// The rows of the job's `query` on its `source`, read once per slot.
    Query,
}

/// Whether recorded consent gates a job's sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentCheck {
    /// Skip people without consent on record (no credit for a one-time template,
    /// or a rejection of a long-term one), with no API call.
    #[default]
    Required,
    /// Send to everyone listed; for mini programs that collect consent elsewhere.
    Unchecked,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecipient {
    pub openid: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub jobs: Vec<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, Scalar>,
}

/// A TOML value that may stand in a message: numbers and booleans are written as text.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub(super) fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_db_url() -> String {
    "sqlite://data/wxpush.db".into()
}

fn default_timezone() -> String {
    "Asia/Shanghai".into()
}

/// A secret in `config show`: whether it is set, never its value.
fn redacted<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) if !secrecy::ExposeSecret::expose_secret(v).is_empty() => s.serialize_some("***"),
        _ => s.serialize_none(),
    }
}

/// A source's URL in `config show`: its password masked.
fn masked_url_opt<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => masked_url(url, s),
        None => s.serialize_none(),
    }
}

/// A database URL in `config show`: its password masked.
fn masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::settings::masked_url(url))
}

/// Durations as operators write them: read by humantime ("90s", "180d"), and
/// shown by `config show` in the largest whole unit ("180d", not humantime's
/// "5months 27days 19h 12m", whose months are 30.44 days).
mod plain_duration {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        let text = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .iter()
        .find(|(unit, _)| ms >= *unit && ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, suffix)| format!("{}{suffix}", ms / unit),
        );
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        humantime_serde::deserialize(d)
    }
}

/// `plain_duration` for a duration that may be unset.
mod plain_duration_opt {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::plain_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        humantime_serde::deserialize(d)
    }
}
