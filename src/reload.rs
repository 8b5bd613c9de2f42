//! SIGHUP, or a change of the config file when `[scheduler] reload_on_change` is on,
//! re-reads the config file; a bad file is reported and the running configuration
//! stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
/// the file if `running.reload_on_change`, until `shutdown`.
pub fn watch(
    path: PathBuf,
    running: Settings,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Settings> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut hup = hangups();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied = stamp(&path);
        let mut seen = applied;
        loop {
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = next_hangup(&mut hup) => "SIGHUP",
                _ = tick.tick(), if running.reload_on_change => {
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
                    warn_about_restart_only_changes(&running, &settings);
                    if tx.send(settings).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    for problem in &e.problems {
                        tracing::error!(problem = %problem, "reload refused; the running configuration stays");
                    }
                }
            }
        }
    });
    rx
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

/// Jobs and recipients reload; connections, limits and the listener do not.
fn warn_about_restart_only_changes(running: &Settings, new: &Settings) {
    let changed = [
        (
            "wechat",
            format!("{:?}", running.wechat) != format!("{:?}", new.wechat),
        ),
        ("database", running.database.url != new.database.url),
        (
            "delivery",
            format!("{:?}", running.delivery) != format!("{:?}", new.delivery),
        ),
        ("http", running.http != new.http),
        (
            "intake",
            format!("{:?}", running.intake) != format!("{:?}", new.intake),
        ),
        (
            "log",
            format!("{:?}", running.log) != format!("{:?}", new.log),
        ),
    ];
    for (section, differs) in changed {
        if differs {
            tracing::warn!(
                section,
                "this section changed; it takes effect at the next restart"
            );
        }
    }
}
