//! Firing a job: resume its unfinished runs, then enqueue and drain the slot.
//! Used by `wxpush send` and by the scheduler alike.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Job;
use crate::delivery::{Deliverer, RunReport};
use crate::domain::{RunStatus, Trigger};
use crate::source::SourceError;
use crate::storage::{Enqueued, LeaseError, NewRun, Snapshot, StorageError, Store};

/// Why a firing could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// Another process is sending this job.
    #[error(transparent)]
    Locked(#[from] LeaseError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The job's audience query failed: nobody was messaged, and the slot's run
    /// is recorded stopped with the reason.
    #[error("run {run_id} stopped before sending: {error}")]
    Audience {
        /// The stopped run.
        run_id: i64,
        /// Why the query gave no audience.
        error: SourceError,
    },
}

impl FireError {
    /// True when trying again later may work: the source could not be reached,
    /// or the database or a lock failed. A bad query is not retried.
    pub fn transient(&self) -> bool {
        match self {
            Self::Locked(_) => true,
            Self::Storage(_) => true,
            Self::Audience { error, .. } => error.unreachable(),
        }
    }
}

/// What a firing is asked to do once the job's unfinished runs are resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// Nothing more: only resume.
    Resume,
    /// Enqueue and drain this slot (a slot has one run: if it has one already,
    /// that run is resumed or finished instead).
    Slot(DateTime<Utc>, Trigger),
    /// A new round as a slot of its own (`send --again`), started only when
    /// there was nothing to resume, so that re-running an interrupted one
    /// finishes that round instead of messaging everyone once more.
    NewRound(DateTime<Utc>),
}

impl Firing {
    /// The slot it asks for, if any, and what triggered it.
    pub fn slot(self) -> Option<(DateTime<Utc>, Trigger)> {
        match self {
            Self::Resume => None,
            Self::Slot(slot, trigger) => Some((slot, trigger)),
            Self::NewRound(at) => Some((at, Trigger::Manual)),
        }
    }
}

/// What became of the slot a firing was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SlotEnd {
    /// Drained, left to a run resumed before it, or none was asked for.
    #[default]
    Handled,
    /// Its run was already complete, with nothing to retry: nothing was sent for it.
    AlreadyDone(i64),
    /// It had no run and its send window has closed: nothing was started.
    TooLate,
    /// A shutdown came before its run was started.
    Cancelled,
}

/// What a firing did.
#[derive(Debug, Default)]
pub struct Fired {
    /// Every run drained or expired, resumed ones first.
    pub reports: Vec<RunReport>,
    /// What became of the slot.
    pub slot: SlotEnd,
}

impl Fired {
    /// True when a run stopped for a cause that passes (WeChat or the
    /// database out of reach): worth resuming.
    pub fn outage(&self) -> bool {
        self.reports.iter().any(RunReport::resumes)
    }

    /// Why a run stopped because the database failed, if one did.
    pub fn database_fault(&self) -> Option<&str> {
        self.reports
            .iter()
            .find(|r| r.cause == Some(crate::delivery::StopCause::Database))
            .and_then(|r| r.stopped.as_deref())
    }
}

/// Whether a run for `slot` may no longer send at `now`.
pub fn window_closed(job: &Job, slot: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    (now - slot)
        .to_std()
        .is_ok_and(|late| late > job.send_window)
}

/// Resumes `job`'s unfinished runs (expiring those whose send window has closed),
/// then (unless one of them stopped or a shutdown came) enqueues `slot` and drains
/// it. Takes the job's lock for the whole time.
///
/// A run is one slot: firing a slot that already has a run resumes or finishes
/// that run, never starts a second one. A manual send (`Trigger::Manual`) of a
/// complete run also retries its deliveries that failed for a passing cause.
/// `new_round` (`send --again`) starts its slot only when there was nothing to
/// resume, so that re-running an interrupted `send --again` finishes that round
/// instead of messaging everyone once more.
pub async fn fire(
    store: &Store,
    deliverer: &Deliverer,
    job: &Job,
    firing: Firing,
    clock: &Clock,
    shutdown: &CancellationToken,
) -> Result<Fired, FireError> {
    let _lease = store.lease(&job.name).await?;
    let mut fired = Fired::default();
    // Looking up the template may wait on WeChat; a shutdown does not wait with it.
    let targeting = tokio::select! {
        t = deliverer.targeting(job) => t,
        _ = shutdown.cancelled() => {
            fired.slot = SlotEnd::Cancelled;
            return Ok(fired);
        }
    };
    let now = clock.now();
    let mut resumed = false;
    for run_id in store.unfinished_runs(&job.name).await? {
        let Some(run) = store.run(run_id).await? else {
            continue;
        };
        if window_closed(job, run.slot, now) {
            fired
                .reports
                .push(deliverer.expire(job, run_id, run.slot).await?);
            continue;
        }
        tracing::info!(run.id = run_id, job = %job.name, slot = %run.slot, "resuming an unfinished run");
        resumed = true;
        let report = deliverer
            .drain(job, &targeting, run_id, run.slot, shutdown)
            .await?;
        let halted =
            report.stopped.is_some() || report.interrupted || !report.held_elsewhere.is_empty();
        log_end(&report);
        fired.reports.push(report);
        if halted {
            return Ok(fired);
        }
    }
    let new_round = matches!(firing, Firing::NewRound(_));
    let Some((slot, trigger)) = firing.slot() else {
        return Ok(fired);
    };
    // An expired run is closed, not finished: it does not stand for the new round.
    if new_round && resumed {
        return Ok(fired);
    }
    if shutdown.is_cancelled() {
        fired.slot = SlotEnd::Cancelled;
        return Ok(fired);
    }
    // A new round's slot is the moment it was asked for: never too late.
    if !new_round
        && window_closed(job, slot, now)
        && store.run_for_slot(&job.name, slot).await?.is_none()
    {
        fired.slot = SlotEnd::TooLate;
        return Ok(fired);
    }
    let new = NewRun {
        job: &job.name,
        appid: deliverer.appid(),
        template_id: &job.spec.template_id,
        audience: targeting.audience,
        slot,
        trigger,
    };
    let enqueued = match &job.query {
        None => store.enqueue(new).await?,
        Some(query) => snapshot(store, job, new, query).await?,
    };
    if !enqueued.created && matches!(enqueued.status, RunStatus::Done | RunStatus::Skipped) {
        let retried = if trigger == Trigger::Manual
            && enqueued.status == RunStatus::Done
            && !window_closed(job, slot, now)
        {
            store
                .retry_failed(
                    enqueued.run_id,
                    crate::wechat::TRANSIENT_SEND_ERRCODES,
                    deliverer.retries_unknown(),
                )
                .await?
        } else {
            0
        };
        if retried == 0 {
            if !fired.reports.iter().any(|r| r.run_id == enqueued.run_id) {
                fired.slot = SlotEnd::AlreadyDone(enqueued.run_id);
            }
            return Ok(fired);
        }
        tracing::info!(
            run.id = enqueued.run_id,
            count = retried,
            "retrying deliveries that failed for a passing cause"
        );
    } else if !enqueued.created && fired.reports.iter().any(|r| r.run_id == enqueued.run_id) {
        // Resumed above and left unfinished (a shutdown): nothing more to do now.
        return Ok(fired);
    } else {
        tracing::info!(run.id = enqueued.run_id, job = %job.name, %slot, trigger = ?trigger, "run started");
    }
    let report = deliverer
        .drain(job, &targeting, enqueued.run_id, slot, shutdown)
        .await?;
    log_end(&report);
    fired.reports.push(report);
    Ok(fired)
}

/// Creates the slot's run from the job's audience query (or finds it made).
async fn snapshot(
    store: &Store,
    job: &Job,
    new: NewRun<'_>,
    query: &crate::config::JobQuery,
) -> Result<Enqueued, FireError> {
    let mut rows = crate::source::rows(query, job.schedule.tz());
    let started = std::time::Instant::now();
    match store.enqueue_snapshot(new, &mut rows).await? {
        Snapshot::Existing(e) => Ok(e),
        Snapshot::Taken {
            run_id,
            rows,
            folded,
            invalid,
        } => {
            tracing::info!(
                run.id = run_id,
                source = %query.source.name,
                rows,
                folded,
                invalid,
                took_ms = started.elapsed().as_millis() as u64,
                "audience query read"
            );
            Ok(Enqueued {
                run_id,
                created: true,
                status: RunStatus::Running,
            })
        }
        Snapshot::Failed { run_id, error } => {
            crate::stats::audience_query_failed(job.name.as_ref(), error.kind());
            crate::stats::run_stopped(job.name.as_ref(), "audience");
            tracing::error!(run.id = run_id, job = %job.name, error = %error, "audience query failed; nobody was messaged");
            Err(FireError::Audience { run_id, error })
        }
    }
}

fn log_end(r: &RunReport) {
    let c = &r.counts;
    let done =
        r.stopped.is_none() && !r.interrupted && r.held_elsewhere.is_empty() && c.pending == 0;
    if let Some(cause) = r.cause {
        crate::stats::run_stopped(&r.job, cause.label());
    }
    if r.interrupted {
        crate::stats::run_interrupted(&r.job);
    }
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
        expired = c.expired,
        duration_ms = r.duration_ms as u64,
        stopped = r.stopped.as_deref().unwrap_or(""),
        interrupted = r.interrupted,
        "run ended"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_round_is_its_moment_with_a_manual_trigger_and_a_resume_asks_no_slot() {
        let at: DateTime<Utc> = "2026-12-04T01:00:00Z".parse().unwrap();
        assert_eq!(Firing::Resume.slot(), None);
        assert_eq!(
            Firing::Slot(at, Trigger::CatchUp).slot(),
            Some((at, Trigger::CatchUp))
        );
        assert_eq!(Firing::NewRound(at).slot(), Some((at, Trigger::Manual)));
    }
}
