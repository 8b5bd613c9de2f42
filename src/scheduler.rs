//! The daemon's clock: each job sleeps until its next slot, then fires it.
//! Slot state lives in the runs table (the cron parser keeps none), which is what
//! makes catch-up after downtime and resume after a crash possible.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Job;
use crate::runner::{FireError, fire};
use crate::storage::{StorageError, Trigger};

/// Sleep in steps of at most this, re-reading the wall clock, so that a clock
/// change (NTP, suspend) delays a slot by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs every job on its schedule until `shutdown`; in-flight runs finish first.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) -> Result<(), StorageError> {
    app.sync_recipients().await?;
    let mut jobs = JoinSet::new();
    for job in app.settings.jobs.clone() {
        match job.schedule.next_after(Utc::now()) {
            Some(next) => tracing::info!(
                job = %job.name,
                next_fire = %job.schedule.local(next),
                "scheduled"
            ),
            None => tracing::warn!(job = %job.name, "this schedule never fires again"),
        }
        jobs.spawn(job_loop(Arc::clone(&app), job, shutdown.clone()));
    }
    if jobs.is_empty() {
        tracing::warn!("no [[jobs]] configured; waiting for a shutdown signal");
    }
    shutdown.cancelled().await;
    while jobs.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// The slot to catch up on start: the latest one, if missed by less than `catch_up`
/// and not run yet.
async fn missed_slot(
    app: &App,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    let Some(slot) = job.schedule.latest_at_or_before(now) else {
        return Ok(None);
    };
    let late = (now - slot).to_std().unwrap_or_default();
    if late >= job.catch_up {
        return Ok(None);
    }
    let seen = app.store.run_for_slot(job.name.as_ref(), slot).await?;
    Ok(seen.is_none().then_some(slot))
}

async fn job_loop(app: Arc<App>, job: Job, shutdown: CancellationToken) {
    let busy = Arc::new(Mutex::new(()));
    let start = Utc::now();
    let catch_up = match missed_slot(&app, &job, start).await {
        Ok(slot) => slot,
        Err(e) => {
            tracing::error!(job = %job.name, error = %e, "cannot look for a missed slot");
            None
        }
    };
    if let Some(slot) = catch_up {
        tracing::info!(job = %job.name, %slot, "catching up on a missed slot");
    }
    let mut running = JoinSet::new();
    // Resume unfinished runs (and the missed slot); a slot that comes meanwhile is skipped.
    {
        let guard = Arc::clone(&busy).lock_owned().await;
        let (app, job, shutdown) = (Arc::clone(&app), job.clone(), shutdown.clone());
        let slot = catch_up.map(|s| (s, Trigger::CatchUp));
        running.spawn(async move { spawn_fire(&app, &job, slot, &shutdown, guard).await });
    }
    let mut after = start;
    while let Some(next) = job.schedule.next_after(after) {
        if !sleep_until(next, &shutdown).await {
            break;
        }
        after = next;
        match Arc::clone(&busy).try_lock_owned() {
            Ok(guard) => {
                let (app, job, shutdown) = (Arc::clone(&app), job.clone(), shutdown.clone());
                running.spawn(async move {
                    spawn_fire(
                        &app,
                        &job,
                        Some((next, Trigger::Schedule)),
                        &shutdown,
                        guard,
                    )
                    .await;
                });
            }
            Err(_) => {
                skip(
                    &app,
                    &job,
                    next,
                    "the previous run of this job was still going",
                )
                .await
            }
        }
        while running.try_join_next().is_some() {}
        if let Some(n) = job.schedule.next_after(after) {
            tracing::info!(job = %job.name, next_fire = %job.schedule.local(n), "next fire");
        }
    }
    while running.join_next().await.is_some() {}
}

async fn spawn_fire(
    app: &App,
    job: &Job,
    slot: Option<(DateTime<Utc>, Trigger)>,
    shutdown: &CancellationToken,
    _busy: tokio::sync::OwnedMutexGuard<()>,
) {
    match fire(&app.store, &app.deliverer, job, slot, shutdown).await {
        Ok(_) => {}
        Err(FireError::Locked(e)) => {
            if let Some((slot, _)) = slot {
                skip(app, job, slot, &e.to_string()).await;
            }
        }
        Err(e) => tracing::error!(job = %job.name, error = %e, "run failed"),
    }
}

async fn skip(app: &App, job: &Job, slot: DateTime<Utc>, why: &str) {
    tracing::warn!(job = %job.name, %slot, reason = why, "slot skipped");
    if let Err(e) = app.store.record_skipped(job.name.as_ref(), slot, why).await {
        tracing::error!(job = %job.name, error = %e, "cannot record a skipped slot");
    }
}

/// Sleeps until the wall clock reaches `t`; false if `shutdown` came first.
async fn sleep_until(t: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    loop {
        let Ok(left) = (t - Utc::now()).to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}
