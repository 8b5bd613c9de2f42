//! `[retention]` in the daemon: every `every`, deletes what is older than `keep`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Job, RetentionSettings};
use crate::domain::JobName;
use crate::storage::{OpenSlots, Store};

/// How long after its slot a run of each job may still be sent or caught up:
/// the longer of its send window and its catch-up.
pub(crate) fn horizons(jobs: &[Job]) -> Vec<(JobName, Duration)> {
    jobs.iter()
        .map(|j| (j.name.clone(), j.send_window.max(j.catch_up)))
        .collect()
}

/// The slots each job may still send at `now`, for `Store::prune`.
fn open_slots(horizons: &[(JobName, Duration)], now: DateTime<Utc>) -> Vec<OpenSlots> {
    horizons
        .iter()
        .map(|(job, h)| OpenSlots {
            job: job.clone(),
            since: now - chrono::Duration::from_std(*h).unwrap_or(chrono::Duration::MAX),
        })
        .collect()
}

/// How long an ended send (with its idempotency key) is kept: `keep`, but
/// never less than the keys' retention, so that a retry within it finds its
/// send rather than making a second one.
fn sends_kept(keep: Duration, keys: Duration) -> Duration {
    keep.max(keys)
}

/// Prunes now and then every `r.every` until `shutdown`, never a run of a slot
/// that may still send by the jobs' `horizons` as they are at each pass (a
/// reload changes them), nor a send whose key is younger than `keys`.
pub(crate) async fn keep_pruning(
    store: Store,
    r: RetentionSettings,
    keys: Duration,
    horizons: watch::Receiver<Vec<(JobName, Duration)>>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let (Ok(keep), Ok(keep_sends)) = (
        chrono::Duration::from_std(r.keep),
        chrono::Duration::from_std(sends_kept(r.keep, keys)),
    ) else {
        return;
    };
    loop {
        let now = clock.now();
        let before = now - keep;
        let open = open_slots(&horizons.borrow(), now);
        // A pass stops between two batches at shutdown; the next start goes on.
        let pass = tokio::select! {
            p = store.prune(before, now - keep_sends, r.batch, &open) => p,
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
        tokio::select! {
            _ = clock.sleep(r.every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_sends_key_outlives_a_shorter_keep() {
        let day = Duration::from_secs(86_400);
        assert_eq!(sends_kept(7 * day, 35 * day), 35 * day);
        assert_eq!(sends_kept(90 * day, 35 * day), 90 * day);
    }
}
