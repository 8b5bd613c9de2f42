//! SIGHUP re-reads the config file; a bad file is reported and the running
//! configuration stays.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Settings};

/// Sends a freshly loaded configuration on every SIGHUP until `shutdown`.
pub fn on_sighup(
    path: PathBuf,
    running: Settings,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Settings> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    Some(()) = hup.recv() => {}
                }
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
        }
        #[cfg(not(unix))]
        {
            let _ = (path, running, shutdown, tx);
        }
    });
    rx
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
