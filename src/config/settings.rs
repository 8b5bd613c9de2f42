//! The checked settings that the rest of wxpush uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::policy::{Policy, PolicyLayer};

use super::{Audience, ConsentCheck, LogFormat, OnUnknown, TokenSource};
use crate::domain::{AppId, JobName, MessageSpec, OpenId, Schedule};

/// The whole configuration, valid once loaded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[wechat]`: the default app.
    pub wechat: WechatSettings,
    /// `[apps.NAME]`: more mini programs, by name.
    pub apps: Vec<AppSettings>,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[delivery]`.
    pub delivery: DeliverySettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[http]`: where health and metrics are served; `None` when disabled.
    pub http: Option<std::net::SocketAddr>,
    /// `[intake]`: the subscription API and WeChat's event push; `None` when disabled.
    pub intake: Option<IntakeSettings>,
    /// `[api]`: sends on demand over HTTP; `None` when disabled.
    pub api: Option<ApiSettings>,
    /// `[status]`: the status page on `[http]`; `None` when off.
    pub status: Option<StatusSettings>,
    /// `[[jobs]]`.
    pub jobs: Vec<Job>,
    /// `[[recipients]]`.
    pub recipients: Vec<Recipient>,
    /// `[scheduler] reload_on_change`: the daemon reloads when the file changes,
    /// as on SIGHUP.
    pub reload_on_change: bool,
    /// `[scheduler] outage_retry`: the first wait before the daemon resumes a run
    /// stopped because WeChat or the database was unreachable (doubling, at most
    /// 10 min, while the run's send window is open).
    pub outage_retry: Duration,
    /// `[retention]`: what is deleted when; `None` keeps everything.
    pub retention: Option<RetentionSettings>,
    /// `[policy]`: every app's delivery policy, unless its own or a job's says otherwise.
    pub policy: PolicyLayer,
}

/// `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Finished runs (with their deliveries) and event pushes older than this go.
    pub keep: Duration,
    /// How often the daemon looks.
    pub every: Duration,
    /// Rows per statement.
    pub batch: u32,
}

impl Settings {
    /// The WeChat settings of `app` (`None`: the default app).
    pub fn wechat_of(&self, app: Option<&crate::domain::AppName>) -> &WechatSettings {
        app.and_then(|name| self.apps.iter().find(|a| &a.name == name))
            .map_or(&self.wechat, |a| &a.wechat)
    }

    /// The AppID whose consent and history `job` uses.
    pub fn appid_of_job(&self, job: &Job) -> &AppId {
        &self.wechat_of(job.app.as_ref()).appid
    }

    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name.as_ref() == name)
    }

    /// The policy a delivery of `appid` is checked against: `[policy]`, the
    /// app's, `job`'s (if any), then `over` (an API send's own), each
    /// overriding the one before; recorded wherever some policy of the app
    /// caps or dedupes.
    pub fn policy_of(
        &self,
        appid: &AppId,
        job: Option<&Job>,
        over: Option<&PolicyLayer>,
    ) -> Policy {
        let app = self.apps.iter().find(|a| &a.wechat.appid == appid);
        let app_layer = app.map(|a| &a.policy);
        let layers = [Some(&self.policy), app_layer, job.map(|j| &j.policy), over];
        let mut policy = Policy::fold(layers.into_iter().flatten());
        let of_app = |j: &&Job| self.appid_of_job(j) == appid;
        let dedupes = |l: &PolicyLayer| l.dedupe.is_some_and(|d| !d.is_zero());
        policy.digests = dedupes(&self.policy)
            || app_layer.is_some_and(dedupes)
            || self.jobs.iter().filter(of_app).any(|j| dedupes(&j.policy))
            || over.is_some_and(dedupes);
        policy.record = Policy::layer_records(&self.policy)
            || app_layer.is_some_and(Policy::layer_records)
            || self
                .jobs
                .iter()
                .filter(of_app)
                .any(|j| Policy::layer_records(&j.policy))
            || over.is_some_and(Policy::layer_records);
        policy
    }

    /// The config-file recipients of one job.
    pub fn recipients_of<'a>(&'a self, job: &'a JobName) -> impl Iterator<Item = &'a Recipient> {
        self.recipients.iter().filter(move |r| r.jobs.contains(job))
    }
}

/// `[wechat]`: who we are to WeChat and where it is.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    /// The mini program's AppID.
    pub appid: AppId,
    /// The AppSecret; only ever exposed when building a token request. Commands
    /// that never call WeChat (`runs`, `recipients`) work without it.
    pub secret: Option<SecretString>,
    /// `https://api.weixin.qq.com`, or a local fake in tests.
    pub api_base: String,
    /// Which endpoint issues tokens.
    pub token_source: TokenSource,
    /// How long one request may take.
    pub timeout: Duration,
}

/// `[apps.NAME]`: one more mini program.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// Its name in `[[jobs]] app`, `--app` and `/wechat/callback/NAME`.
    pub name: crate::domain::AppName,
    /// Who it is to WeChat and where WeChat is.
    pub wechat: WechatSettings,
    /// Its message-push Token, when `/wechat/callback/NAME` is served.
    pub callback_token: Option<SecretString>,
    /// Its EncodingAESKey.
    pub aes_key: Option<crate::domain::AesKey>,
    /// `[apps.NAME.policy]`.
    pub policy: PolicyLayer,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// A `sqlite://` or `postgres://` URL (it may hold a password: never print it).
    pub url: String,
    /// Pooled connections per process; the backend's default when `None`.
    pub max_connections: Option<u32>,
    /// How long an instance may miss heartbeats before others settle what it held.
    pub instance_lease: std::time::Duration,
    /// SQLite: how long a write waits for another's write lock before it fails.
    pub busy_timeout: std::time::Duration,
}

impl DatabaseSettings {
    /// The URL with any password replaced by `***`, for logs and output.
    pub fn shown(&self) -> String {
        masked_url(&self.url)
    }

    /// How the store opens this database.
    pub fn open_options(&self) -> crate::storage::OpenOptions {
        crate::storage::OpenOptions {
            max_connections: self.max_connections,
            busy_timeout: self.busy_timeout,
        }
    }
}

/// A database URL with any password replaced by `***`, for logs and output.
pub(crate) fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters can carry a password too (`?password=`).
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `[delivery]`: how fast and how persistently to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Sends started per second; 0 means no limit.
    pub rate_limit_per_sec: u32,
    /// Tries per recipient, the first included.
    pub max_attempts: u32,
    /// The first retry's delay; doubled each time, with jitter.
    pub backoff_base: Duration,
    /// The longest delay between tries.
    pub backoff_max: Duration,
    /// What a send with no answer gets.
    pub on_unknown: OnUnknown,
}

/// `[intake]`: routes served on the `[http]` listener for the mini program's backend.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// `[intake] listen`: the public routes on their own address, apart from
    /// `/metrics` and `/readyz`; `None`: on `[http] listen` with them.
    pub listen: Option<std::net::SocketAddr>,
    /// The message-push Token from the mini program console; `/wechat/callback`
    /// is served only when it is set.
    pub callback_token: Option<SecretString>,
    /// The console's EncodingAESKey, for pushes in secure or compatible mode.
    pub aes_key: Option<crate::domain::AesKey>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests one client IP may make per minute.
    pub per_ip_per_minute: u32,
    /// A header set by the reverse proxy in front (`X-Forwarded-For`,
    /// `X-Real-IP`) whose last address is the client's; `None`: the peer's address.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

/// `[api]`: `/v1/sends` on the `[http]` listener, for a backend's own sends.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `[api] listen`: an address of its own; `None` serves it on `[http]`.
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token callers present.
    pub token: SecretString,
    /// How far ahead a send may be scheduled.
    pub max_schedule_ahead: Duration,
    /// How long idempotency keys (and ended sends) are kept at least.
    pub idempotency_retention: Duration,
}

/// `[status]`: the read-only status page under `/status` and `/v1/status/`.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    /// The HTTP basic auth password (user `wxpush`); `None` serves it openly.
    pub password: Option<SecretString>,
    /// Why the page is not served though `[status]` did not turn it off
    /// (a public listener and no password): logged at start, and by `check`.
    pub withheld: Option<String>,
}

/// `[api] idempotency_retention`'s default: how long a send's key is kept
/// (sends added with `wxpush sends add --key` too, with or without the API).
pub const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(35 * 24 * 3600);

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `wxpush=debug`; `RUST_LOG` wins.
    pub level: Option<String>,
    /// Human or JSON lines.
    pub format: LogFormat,
}

/// One `[[jobs]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its name, used by `wxpush send NAME`.
    pub name: JobName,
    /// The mini program it sends for (`None`: the default app, `[wechat]`).
    pub app: Option<crate::domain::AppName>,
    /// When it fires.
    pub schedule: Schedule,
    /// How late a missed slot may still be sent on start.
    pub catch_up: Duration,
    /// How long after its slot a run may still send; what is unsent then expires.
    pub send_window: Duration,
    /// Who it sends to.
    pub audience: Audience,
    /// Whether recorded consent gates its sends.
    pub consent: ConsentCheck,
    /// Its audience query, when `audience = "query"`.
    pub query: Option<Arc<JobQuery>>,
    /// `[jobs.policy]`.
    pub policy: PolicyLayer,
    /// The policy its deliveries are checked against: its layers folded (see `Settings::policy_of`).
    pub effective_policy: Arc<Policy>,
    /// What it sends.
    pub spec: Arc<MessageSpec>,
}

/// A job's `query` on its `source`: the audience and each person's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Where it runs.
    pub source: SourceSettings,
    /// The operator's SELECT, as written.
    pub sql: String,
}

/// `[sources.NAME]`: a read-only connection to the operator's own database.
#[derive(Clone)]
pub struct SourceSettings {
    /// Its name in `[[jobs]] source`.
    pub name: String,
    /// Which database it is.
    pub kind: SourceKind,
    /// The URL, which may hold a password: never printed (see `shown`).
    pub url: SecretString,
    /// The longest the query may run, first row to last.
    pub timeout: Duration,
}

impl SourceSettings {
    /// The URL with any password replaced by `***`, for logs and output.
    pub fn shown(&self) -> String {
        masked_url(secrecy::ExposeSecret::expose_secret(&self.url))
    }
}

impl std::fmt::Debug for SourceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.shown())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// By value, the URL too: a changed password is a change.
impl PartialEq for SourceSettings {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.timeout == other.timeout
            && secrecy::ExposeSecret::expose_secret(&self.url)
                == secrecy::ExposeSecret::expose_secret(&other.url)
    }
}

impl Eq for SourceSettings {}

/// The databases a source may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `sqlite://PATH`, opened read-only.
    Sqlite,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`: MySQL or MariaDB.
    MySql,
}

impl SourceKind {
    /// The kind a URL names by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }
}

/// One `[[recipients]]` entry.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The mini program this openid belongs to (`None`: the default app).
    pub app: Option<crate::domain::AppName>,
    /// Who.
    pub openid: OpenId,
    /// A display name, also the `{{name}}` variable.
    pub name: Option<String>,
    /// The jobs that send to them.
    pub jobs: Vec<JobName>,
    /// Their variables and keyword overrides.
    pub vars: BTreeMap<String, String>,
}

/// A secret compared by its value (never printed).
pub(crate) fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    use secrecy::ExposeSecret;
    a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
}

/// By value, secrets included: a changed secret is a change.
impl PartialEq for WechatSettings {
    fn eq(&self, other: &Self) -> bool {
        self.appid == other.appid
            && same_secret(&self.secret, &other.secret)
            && self.api_base == other.api_base
            && self.token_source == other.token_source
            && self.timeout == other.timeout
    }
}

/// By value, secrets included: a changed token or key is a change.
/// By value, the token included: a rotated token is a change.
impl PartialEq for StatusSettings {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.password, &other.password) && self.withheld == other.withheld
    }
}

impl PartialEq for ApiSettings {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.token.expose_secret() == other.token.expose_secret()
            && self.max_schedule_ahead == other.max_schedule_ahead
            && self.idempotency_retention == other.idempotency_retention
            && self.listen == other.listen
    }
}

impl PartialEq for IntakeSettings {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.callback_token, &other.callback_token)
            && self.aes_key == other.aes_key
            && self.max_body_bytes == other.max_body_bytes
            && self.per_ip_per_minute == other.per_ip_per_minute
            && self.client_ip_header == other.client_ip_header
    }
}

#[cfg(test)]
mod database_tests {
    use super::DatabaseSettings;

    #[test]
    fn a_shown_url_never_holds_the_password() {
        let shown = |url: &str| {
            DatabaseSettings {
                url: url.into(),
                max_connections: None,
                instance_lease: std::time::Duration::from_secs(30),
                busy_timeout: std::time::Duration::from_secs(10),
            }
            .shown()
        };
        assert_eq!(
            shown("postgres://wx:s3cr3t@db:5432/wxpush"),
            "postgres://wx:***@db:5432/wxpush"
        );
        assert_eq!(
            shown("postgresql://wx@db/wxpush?password=s3cr3t"),
            "postgresql://wx@db/wxpush?…"
        );
        assert_eq!(
            shown("sqlite:///var/lib/wxpush/w.db"),
            "sqlite:///var/lib/wxpush/w.db"
        );
    }
}
