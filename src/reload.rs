//! SIGHUP, or a change of the config file when `[scheduler] reload_on_change` is on,
//! re-reads the config file; a bad file is reported and the running configuration
//! stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{self, Settings};

/// How often the file's modification time is looked at: a stat, nothing more.
const POLL: Duration = Duration::from_secs(2);

/// One version of the file, as far as its metadata tells.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Sends a freshly loaded configuration on every SIGHUP, and on every change of
/// the file if `running.reload_on_change`, until `shutdown`: the receiver, and the
/// watch itself, for the caller to run.
pub(crate) fn watch(
    path: PathBuf,
    running: Settings,
    clock: Clock,
    shutdown: CancellationToken,
) -> (
    mpsc::Receiver<Settings>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(1);
    let task = async move {
        let mut hup = hangups();
        let mut applied = stamp(&path);
        let mut seen = applied;
        loop {
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = next_hangup(&mut hup) => "SIGHUP",
                _ = clock.sleep(POLL), if running.reload_on_change => {
                    let now = stamp(&path);
                    // Only once it has stayed the same for a poll, so that a save
                    // still being written is not read half-way.
                    let settled = now == seen;
                    seen = now;
                    if !settled || now.is_none() || now == applied {
                        continue;
                    }
                    "the config file changed"
                }
            };
            // Even a refused file counts as seen, so that it is reported once.
            applied = stamp(&path);
            seen = applied;
            tracing::info!(trigger = why, "reloading the configuration");
            match config::load(&path) {
                Ok(settings) => {
                    crate::stats::reload(true);
                    warn_about_restart_only_changes(&running, &settings);
                    if tx.send(settings).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    crate::stats::reload(false);
                    for problem in &e.problems {
                        tracing::error!(problem = %problem, "reload refused; the running configuration stays");
                    }
                }
            }
        }
    };
    (rx, task)
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart or a file change");
        }
        hup
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP; never, when there is no way to hear one.
async fn next_hangup(hup: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(hup) = hup {
        return hup.recv().await;
    }
    let _ = hup;
    std::future::pending().await
}

/// Jobs and recipients reload; credentials, connections, limits and the listener
/// do not. Compared by value (secrets too), and named by key, never by value.
fn warn_about_restart_only_changes(running: &Settings, new: &Settings) {
    for key in restart_only_changes(running, new) {
        tracing::warn!(key, "changed; it takes effect at the next restart");
    }
}

/// Whether `[apps.NAME]` changed: an app added, removed or given other
/// credentials (clients and token caches are built at start).
fn apps_changed(a: &[crate::config::AppSettings], b: &[crate::config::AppSettings]) -> bool {
    a.len() != b.len()
        || a.iter().zip(b).any(|(x, y)| {
            x.name != y.name
                || x.wechat != y.wechat
                || !crate::config::same_secret(&x.callback_token, &y.callback_token)
                || x.aes_key != y.aes_key
        })
}

/// The keys (or sections) whose change the running daemon does not apply.
fn restart_only_changes(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let (a, b) = (&running.wechat, &new.wechat);
    [
        ("wechat.appid", a.appid != b.appid),
        (
            "wechat.secret",
            !crate::config::same_secret(&a.secret, &b.secret),
        ),
        ("wechat.api_base", a.api_base != b.api_base),
        ("wechat.token_source", a.token_source != b.token_source),
        ("wechat.timeout", a.timeout != b.timeout),
        ("apps", apps_changed(&running.apps, &new.apps)),
        ("database", running.database != new.database),
        ("delivery", running.delivery != new.delivery),
        ("http", running.http != new.http),
        ("intake", running.intake != new.intake),
        ("api", running.api != new.api),
        ("status", running.status != new.status),
        ("log", running.log != new.log),
        ("retention", running.retention != new.retention),
        (
            "scheduler.outage_retry",
            running.outage_retry != new.outage_retry,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod value_tests {
    use super::*;

    fn settings(secret: &str, api_base: &str, thing: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            format!(
                "[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = \"{secret}\"\napi_base = \"{api_base}\"\n[database]\nurl = \"sqlite:///var/lib/wxpush/w.db\"\n\
                 [[jobs]]\nname = \"d\"\ncron = \"0 0 9 * * *\"\ntemplate_id = \"tmpl\"\n[jobs.data]\nthing1 = \"{thing}\"\n"
            ),
        )
        .unwrap();
        crate::config::load(&path).unwrap()
    }

    #[test]
    fn a_changed_secret_is_a_change_though_it_prints_redacted() {
        let a = settings("first-secret", "https://api.weixin.qq.com", "hi");
        let b = settings("second-secret", "https://api.weixin.qq.com", "hi");
        assert_eq!(format!("{:?}", a.wechat), format!("{:?}", b.wechat));
        assert_ne!(a.wechat, b.wechat);
        assert_eq!(restart_only_changes(&a, &b), ["wechat.secret"]);
        let c = settings("first-secret", "http://127.0.0.1:9", "hi");
        assert_eq!(restart_only_changes(&a, &c), ["wechat.api_base"]);
        assert!(restart_only_changes(&a, &a.clone()).is_empty());
        // A rotated API token is a change too: warned about, never silently kept.
        let token = |t: &str| secrecy::SecretString::from(t.to_owned());
        let api = |t: &str| crate::config::ApiSettings {
            listen: None,
            token: token(t),
            max_schedule_ahead: std::time::Duration::from_secs(60),
            idempotency_retention: std::time::Duration::from_secs(86_460),
        };
        let (mut d, mut e) = (a.clone(), a.clone());
        d.api = Some(api("token-one-0123456789"));
        e.api = Some(api("token-two-0123456789"));
        assert_eq!(restart_only_changes(&d, &e), ["api"]);
        assert!(restart_only_changes(&d, &d.clone()).is_empty());
    }

    #[test]
    fn jobs_compare_by_value() {
        let a = settings("s", "https://api.weixin.qq.com", "hi");
        let same = settings("s", "https://api.weixin.qq.com", "hi");
        let other = settings("s", "https://api.weixin.qq.com", "hello");
        assert_eq!(a.jobs, same.jobs);
        assert_ne!(a.jobs, other.jobs);
    }
}
