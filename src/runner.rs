//! Firing a job: resume its unfinished runs, then enqueue and drain the slot.
//! Used by `wxpush send` and by the scheduler alike.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Job;
use crate::delivery::{Deliverer, DeliveryError, RunReport};
use crate::joblock::{JobLock, LockError};
use crate::storage::{NewRun, RunStatus, StorageError, Store, Trigger};

/// Why a firing could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// Another process is sending this job.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Draining failed.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// What a firing did.
#[derive(Debug, Default)]
pub struct Fired {
    /// Every run drained, resumed ones first.
    pub reports: Vec<RunReport>,
    /// The slot's run was already complete: nothing was sent for it.
    pub already_done: Option<i64>,
    /// A shutdown came before the slot's run was started.
    pub cancelled: bool,
}

/// Resumes `job`'s unfinished runs, then (unless one of them stopped or a shutdown
/// came) enqueues `slot` and drains it. Takes the job's lock for the whole time.
///
/// A manual send passes `Trigger::Manual`: when it resumed something, it starts no
/// new run, so that re-running a crashed `wxpush send` finishes the old run instead
/// of sending everyone a second message.
pub async fn fire(
    store: &Store,
    deliverer: &Deliverer,
    job: &Job,
    slot: Option<(DateTime<Utc>, Trigger)>,
    shutdown: &CancellationToken,
) -> Result<Fired, FireError> {
    let _lock = JobLock::try_acquire(store.path(), &job.name)?;
    let mut fired = Fired::default();
    // Looking up the template may wait on WeChat; a shutdown does not wait with it.
    let targeting = tokio::select! {
        t = deliverer.targeting(job) => t,
        _ = shutdown.cancelled() => {
            fired.cancelled = true;
            return Ok(fired);
        }
    };
    for run_id in store.unfinished_runs(job.name.as_ref()).await? {
        let Some(run) = store.run(run_id).await? else {
            continue;
        };
        tracing::info!(run.id = run_id, slot = %run.slot, "resuming an unfinished run");
        let report = deliverer
            .drain(job, &targeting, run_id, run.slot, shutdown)
            .await?;
        let halted = report.stopped.is_some() || report.interrupted;
        log_end(&report);
        fired.reports.push(report);
        if halted {
            return Ok(fired);
        }
    }
    let Some((slot, trigger)) = slot else {
        return Ok(fired);
    };
    if trigger == Trigger::Manual && !fired.reports.is_empty() {
        return Ok(fired);
    }
    if shutdown.is_cancelled() {
        fired.cancelled = true;
        return Ok(fired);
    }
    let enqueued = store
        .enqueue(NewRun {
            job: job.name.as_ref(),
            template_id: job.spec.template_id.as_ref(),
            audience: targeting.audience,
            slot,
            trigger,
        })
        .await?;
    if !enqueued.created && matches!(enqueued.status, RunStatus::Done | RunStatus::Skipped) {
        if !fired.reports.iter().any(|r| r.run_id == enqueued.run_id) {
            fired.already_done = Some(enqueued.run_id);
        }
        return Ok(fired);
    }
    tracing::info!(run.id = enqueued.run_id, %slot, trigger = ?trigger, "run started");
    let report = deliverer
        .drain(job, &targeting, enqueued.run_id, slot, shutdown)
        .await?;
    log_end(&report);
    fired.reports.push(report);
    Ok(fired)
}

fn log_end(r: &RunReport) {
    let c = &r.counts;
    let done = r.stopped.is_none() && !r.interrupted && c.pending == 0;
    crate::stats::run_ended(
        &r.job,
        std::time::Duration::from_millis(r.duration_ms as u64),
        done,
    );
    crate::stats::recipients(&r.job, c.total);
    tracing::info!(
        run.id = r.run_id,
        job = %r.job,
        total = c.total,
        sent = c.sent,
        failed = c.failed,
        refused = c.refused,
        invalid = c.invalid,
        unknown = c.unknown,
        skipped = c.skipped,
        pending = c.pending,
        duration_ms = r.duration_ms as u64,
        stopped = r.stopped.as_deref().unwrap_or(""),
        interrupted = r.interrupted,
        "run ended"
    );
}
