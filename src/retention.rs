//! `[retention]` in the daemon: every `every`, deletes what is older than `keep`.

use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::storage::Store;

/// Prunes now and then every `r.every` until `shutdown`.
pub async fn keep_pruning(store: Store, r: RetentionSettings, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(r.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(keep) = chrono::Duration::from_std(r.keep) else {
            return;
        };
        let before = chrono::Utc::now() - keep;
        // A pass stops between two batches at shutdown; the next start goes on.
        let pass = tokio::select! {
            p = store.prune(before, r.batch) => p,
            _ = shutdown.cancelled() => return,
        };
        match pass {
            Ok(p) => {
                crate::stats::pruned("deliveries", p.deliveries);
                crate::stats::pruned("runs", p.runs);
                crate::stats::pruned("events", p.events);
                if p != crate::storage::Pruned::default() {
                    tracing::info!(
                        deliveries = p.deliveries,
                        runs = p.runs,
                        events = p.events,
                        older_than = %before.format("%Y-%m-%d %H:%M UTC"),
                        "pruned old history ([retention] keep)"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning old history failed; trying again later"),
        }
    }
}
