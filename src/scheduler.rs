//! The daemon's clock: each job sleeps until its next slot, then fires it.
//! Slot state lives in the runs table (the cron parser keeps none), which is what
//! makes catch-up after downtime and resume after a crash possible.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::Clock;
use crate::config::{Job, Settings};
use crate::delivery::Deliverer;
use crate::domain::AppName;
use crate::domain::Trigger;
use crate::health::Faults;
use crate::runner::{FireError, Firing, SlotEnd, fire};
use crate::storage::{LeaseError, StorageError, Topology};

/// What the scheduler works with, handed to it by the daemon.
pub(crate) struct Parts {
    /// The database.
    store: crate::storage::Store,
    /// Whether other instances share the runs.
    topology: Topology,
    /// The clock slots and backoff are measured on.
    clock: Clock,
    /// Storage faults of firings, for `/readyz`.
    faults: Faults,
    /// Each app's sender, the default app's first.
    deliverers: Vec<(Option<AppName>, Arc<Deliverer>)>,
    /// The first wait before a run stopped by an outage is tried again.
    outage_retry: Duration,
    /// How long an instance may be silent before it is taken for dead.
    instance_lease: Duration,
}

impl Parts {
    /// The scheduler's parts of `app`.
    pub(crate) fn of(app: &App) -> Self {
        Self {
            store: app.store.clone(),
            topology: app.topology,
            clock: app.clock.clone(),
            faults: app.faults.clone(),
            deliverers: app
                .apps
                .iter()
                .map(|(name, runtime)| (name.clone(), Arc::clone(&runtime.deliverer)))
                .collect(),
            outage_retry: app.settings.outage_retry,
            instance_lease: app.settings.database.instance_lease,
        }
    }

    /// The sender of `app`'s jobs (`None`: the default app).
    fn deliverer(&self, app: Option<&AppName>) -> &Deliverer {
        self.deliverers
            .iter()
            .find(|(name, _)| name.as_ref() == app)
            .map_or(&self.deliverers[0].1, |(_, d)| d)
    }
}

/// One scheduled job: its definition and the token that stops its loop.
struct Running {
    job: Job,
    stop: CancellationToken,
}

/// Runs every job on its schedule until `shutdown`; in-flight runs finish first.
///
/// Each new configuration from `reloads` (SIGHUP) is applied at once: recipients
/// are synced, jobs whose definition changed or that were removed stop scheduling
/// (a run in progress finishes undisturbed), new and changed jobs start from
/// their next slot. `ready` is called once the schedule is loaded.
pub(crate) async fn run(
    parts: Arc<Parts>,
    jobs: Vec<Job>,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<Settings>,
    ready: impl FnOnce(),
) -> Result<(), StorageError> {
    let mut loops = JoinSet::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    crate::stats::job_apps(&jobs);
    for job in jobs {
        start(&parts, &mut loops, &mut running, job, true, &shutdown);
    }
    if running.is_empty() {
        tracing::warn!("no [[jobs]] configured; waiting for a shutdown signal");
    }
    ready();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(settings) = reloads.recv() => {
                let report = parts
                    .store
                    .sync_config_recipients(&crate::app::config_recipients(&settings))
                    .await?;
                let mut kept = 0;
                crate::stats::job_apps(&settings.jobs);
                let wanted: HashMap<String, Job> =
                    settings.jobs.into_iter().map(|j| (j.name.to_string(), j)).collect();
                running.retain(|name, r| {
                    let same = wanted.get(name).is_some_and(|j| *j == r.job);
                    if !same {
                        r.stop.cancel();
                    }
                    same
                });
                for (name, job) in wanted {
                    if running.contains_key(&name) {
                        kept += 1;
                    } else {
                        start(&parts, &mut loops, &mut running, job, false, &shutdown);
                    }
                }
                tracing::info!(
                    jobs = running.len(),
                    unchanged = kept,
                    recipients_added = report.added,
                    recipients_updated = report.updated,
                    recipients_deactivated = report.deactivated,
                    "configuration reloaded"
                );
            }
        }
        while loops.try_join_next().is_some() {}
    }
    while loops.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

fn start(
    parts: &Arc<Parts>,
    loops: &mut JoinSet<()>,
    running: &mut HashMap<String, Running>,
    job: Job,
    catch_up: bool,
    shutdown: &CancellationToken,
) {
    match job.schedule.next_after(parts.clock.now()) {
        Some(next) => {
            crate::stats::next_fire(job.name.as_ref(), next);
            if let Some(prev) = job.schedule.latest_at_or_before(parts.clock.now()) {
                crate::stats::previous_fire(job.name.as_ref(), prev);
            }
            tracing::info!(job = %job.name, next_fire = %job.schedule.local(next), "scheduled");
        }
        None => tracing::warn!(job = %job.name, "this schedule never fires again"),
    }
    let stop = CancellationToken::new();
    loops.spawn(job_loop(
        Arc::clone(parts),
        job.clone(),
        catch_up,
        shutdown.clone(),
        stop.clone(),
    ));
    running.insert(job.name.to_string(), Running { job, stop });
}

/// The slot to catch up on start: the latest one, if it came after `since` (when a
/// daemon first loaded this schedule), was missed by less than `catch_up`, and has
/// not run yet.
async fn missed_slot(
    parts: &Parts,
    job: &Job,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    let Some(slot) = job.schedule.latest_at_or_before(now) else {
        return Ok(None);
    };
    // A new install, a new job or a changed cron line was never due before now.
    if slot < since {
        return Ok(None);
    }
    let late = (now - slot).to_std().unwrap_or_default();
    if late >= job.catch_up {
        return Ok(None);
    }
    let seen = parts.store.run_for_slot(&job.name, slot).await?;
    Ok(seen.is_none().then_some(slot))
}

async fn job_loop(
    parts: Arc<Parts>,
    job: Job,
    catch_up_on_start: bool,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let busy = Arc::new(Mutex::new(()));
    let start = parts.clock.now();
    // Recorded on every load, reloads too, so that a later restart knows.
    let since = parts
        .store
        .schedule_since(&job.name, &job.schedule.key(), start)
        .await;
    if let Ok(since) = &since {
        crate::stats::schedule_loaded(job.name.as_ref(), *since);
    }
    let catch_up = match since {
        // After a reload, the new cron's past slots were never due.
        Ok(_) if !catch_up_on_start => Ok(None),
        Ok(since) => missed_slot(&parts, &job, start, since).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| {
        tracing::error!(job = %job.name, error = %e, "cannot look for a missed slot");
        None
    });
    if let Some(slot) = catch_up {
        tracing::info!(job = %job.name, %slot, "catching up on a missed slot");
    }
    let mut running = JoinSet::new();
    // Resume unfinished runs (and the missed slot); a slot that comes meanwhile is
    // skipped. With nothing to resume nothing holds `busy`, so a slot right after
    // start is not skipped for a run that does not exist.
    let unfinished = match parts.store.unfinished_runs(&job.name).await {
        Ok(runs) => !runs.is_empty(),
        Err(e) => {
            tracing::error!(job = %job.name, error = %e, "cannot look for unfinished runs");
            false
        }
    };
    if unfinished || catch_up.is_some() {
        let guard = Arc::clone(&busy).lock_owned().await;
        let (parts, job, shutdown) = (Arc::clone(&parts), job.clone(), shutdown.clone());
        let slot = catch_up.map(|s| (s, Trigger::CatchUp));
        running.spawn(async move { spawn_fire(&parts, &job, slot, &shutdown, guard).await });
    }
    let mut after = start;
    // Where instances share the database, a run another instance (or a manual
    // `send`) is draining, or one a dead instance left, is joined between slots.
    let mut join_tick = (parts.topology == Topology::Shared).then(|| {
        // A tenth of the lease (3 s by default): a manual send's run is joined
        // soon, for one cheap indexed query per job.
        let mut t = tokio::time::interval(parts.instance_lease / 10);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    // Another instance's drain of this job (a manual `send`, a slot) says so
    // when it begins: joined at once, the tick being the fallback.
    let mut changes = parts.store.run_changes();
    while let Some(next) = job.schedule.next_after(after) {
        let reached = loop {
            tokio::select! {
                r = sleep_until(&parts.clock, next, &shutdown, &stop) => break r,
                _ = tick(&mut join_tick) => {
                    join(&parts, &job, &busy, &shutdown, &mut running).await;
                }
                _ = changes.changed(&job.name) => {
                    join(&parts, &job, &busy, &shutdown, &mut running).await;
                }
            }
        };
        if !reached {
            break;
        }
        after = next;
        let going = (parts.topology == Topology::Shared)
            && parts
                .store
                .has_running_run(&job.name)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(job = %job.name, error = %e, "cannot look for a running run");
                    false
                });
        let turn = slot_turn(going, parts.topology, &busy);
        if let SlotTurn::Skip = turn {
            skip(
                &parts,
                &job,
                next,
                "the previous run of this job was still going",
            )
            .await
        } else {
            let (parts, job, shutdown) = (Arc::clone(&parts), job.clone(), shutdown.clone());
            running.spawn(async move {
                let guard = match turn {
                    SlotTurn::Fire(guard) => guard,
                    SlotTurn::After(busy) => busy.lock_owned().await,
                    SlotTurn::Skip => unreachable!("a skipped slot is not fired"),
                };
                let slot = Some((next, Trigger::Schedule));
                spawn_fire(&parts, &job, slot, &shutdown, guard).await;
            });
        }
        while running.try_join_next().is_some() {}
        crate::stats::previous_fire(job.name.as_ref(), next);
        if let Some(n) = job.schedule.next_after(after) {
            crate::stats::next_fire(job.name.as_ref(), n);
            tracing::info!(job = %job.name, next_fire = %job.schedule.local(n), "next fire");
        }
    }
    while running.join_next().await.is_some() {}
}

/// What a job loop does with a slot that came.
enum SlotTurn {
    /// Nothing of the job runs here: fire now.
    Fire(OwnedMutexGuard<()>),
    /// This instance is resuming a run that no instance is sending (a stopped
    /// one): the slot waits for it rather than be skipped.
    After(Arc<Mutex<()>>),
    /// The previous run of the job is still going: the slot is skipped.
    Skip,
}

/// Decides a slot's turn from whether the job's previous run is still going
/// (where instances share runs, the database's to say, so that they all
/// decide alike: an idle instance would otherwise run the slot that a busy
/// one skips) and whether this process is busy with the job.
fn slot_turn(going: bool, topology: Topology, busy: &Arc<Mutex<()>>) -> SlotTurn {
    if going {
        return SlotTurn::Skip;
    }
    match Arc::clone(busy).try_lock_owned() {
        Ok(guard) => SlotTurn::Fire(guard),
        Err(_) if topology == Topology::Shared => SlotTurn::After(Arc::clone(busy)),
        Err(_) => SlotTurn::Skip,
    }
}

/// Waits for the next join check; forever when there are none.
async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Joins `job`'s shared runs that have work nobody took, unless this process is
/// already firing the job.
async fn join(
    parts: &Arc<Parts>,
    job: &Job,
    busy: &Arc<Mutex<()>>,
    shutdown: &CancellationToken,
    running: &mut JoinSet<()>,
) {
    let Ok(guard) = Arc::clone(busy).try_lock_owned() else {
        return;
    };
    match parts.store.joinable(&job.name).await {
        Ok(true) => {
            tracing::info!(job = %job.name, "joining a run with deliveries nobody has taken");
            let (parts, job, shutdown) = (Arc::clone(parts), job.clone(), shutdown.clone());
            running.spawn(async move { spawn_fire(&parts, &job, None, &shutdown, guard).await });
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot look for runs to join"),
    }
}

/// The longest wait between two tries to resume a run after an outage.
const MAX_OUTAGE_RETRY: Duration = Duration::from_secs(600);

/// Fires `slot` (or only resumes, with `None`). When WeChat could not be reached,
/// or the database failed, tries again with backoff until it works or the send
/// window closes (then what is unsent expires; see `runner::fire`). A storage
/// failure keeps `/readyz` at 503 until a firing of this job works again, and
/// is tried again as soon as the database answers (within the backoff's wait).
async fn spawn_fire(
    parts: &Parts,
    job: &Job,
    slot: Option<(DateTime<Utc>, Trigger)>,
    shutdown: &CancellationToken,
    _busy: tokio::sync::OwnedMutexGuard<()>,
) {
    let mut wait = parts.outage_retry;
    let give_up = parts.clock.now() + job.send_window;
    loop {
        let (again, database) = match fire(
            &parts.store,
            parts.deliverer(job.app.as_ref()),
            job,
            slot.map_or(Firing::Resume, |(s, t)| Firing::Slot(s, t)),
            &parts.clock,
            shutdown,
        )
        .await
        {
            Ok(fired) => {
                // A run the database stopped is a storage fault like a firing
                // that failed: /readyz says so until a try works.
                let database = fired.database_fault().map(str::to_owned);
                match &database {
                    Some(reason) => parts.faults.set(job.name.as_ref(), reason.clone()),
                    None => parts.faults.clear(job.name.as_ref()),
                }
                if fired.slot == SlotEnd::TooLate {
                    tracing::error!(job = %job.name, slot = ?slot.map(|s| s.0), "the slot's send window closed before its run could start: nobody was sent this slot");
                }
                (fired.outage(), database.is_some())
            }
            Err(FireError::Locked(busy @ LeaseError::Busy(_))) => {
                if let Some((slot, _)) = slot {
                    skip(parts, job, slot, &busy.to_string()).await;
                }
                (false, false)
            }
            Err(e) => {
                let database = matches!(e, FireError::Storage(_));
                // A file that is gone is the cause to name, whatever the
                // statement that met it said.
                let said = match parts.store.diagnose() {
                    Some(cause) if database => cause.to_string(),
                    _ => e.to_string(),
                };
                tracing::error!(job = %job.name, error = %said, "run failed");
                parts.faults.set(job.name.as_ref(), said);
                (e.transient(), database)
            }
        };
        if !again || shutdown.is_cancelled() || parts.clock.now() >= give_up {
            return;
        }
        tracing::warn!(job = %job.name, retry_in = %humantime::format_duration(wait), "will try the run again");
        let waited = async {
            if database {
                until_database_answers(parts, wait).await
            } else {
                parts.clock.sleep(wait).await
            }
        };
        tokio::select! {
            _ = waited => {}
            _ = shutdown.cancelled() => return,
        }
        wait = (wait * 2).min(MAX_OUTAGE_RETRY);
    }
}

/// How often a run the database stopped looks whether it answers again.
const DATABASE_PROBE: Duration = Duration::from_secs(1);

/// Waits `at_most`, or less: until the database answers a probe (one a
/// second), so that a restart of a second holds a run up for about that long.
async fn until_database_answers(parts: &Parts, at_most: Duration) {
    let deadline = parts.clock.now() + at_most;
    loop {
        let left = (deadline - parts.clock.now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        parts.clock.sleep(left.min(DATABASE_PROBE)).await;
        if parts.store.ping().await.is_ok() {
            tracing::info!("the database answers again");
            return;
        }
    }
}

async fn skip(parts: &Parts, job: &Job, slot: DateTime<Utc>, why: &str) {
    tracing::warn!(job = %job.name, %slot, reason = why, "slot skipped");
    if let Err(e) = parts.store.record_skipped(&job.name, slot, why).await {
        tracing::error!(job = %job.name, error = %e, "cannot record a skipped slot");
    }
}

/// Sleeps until the clock reaches `t`; false if `shutdown` or `stop` came first.
async fn sleep_until(
    clock: &Clock,
    t: DateTime<Utc>,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = clock.sleep_until(t) => true,
        _ = shutdown.cancelled() => false,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_fires_at_once_when_nothing_of_its_job_runs() {
        let busy = Arc::new(Mutex::new(()));
        for topology in [Topology::Alone, Topology::Shared] {
            assert!(matches!(
                slot_turn(false, topology, &busy),
                SlotTurn::Fire(_)
            ));
        }
    }

    #[test]
    fn a_slot_is_skipped_while_the_previous_run_is_still_going_anywhere() {
        let busy = Arc::new(Mutex::new(()));
        for topology in [Topology::Alone, Topology::Shared] {
            assert!(matches!(slot_turn(true, topology, &busy), SlotTurn::Skip));
        }
        // Skipping took nothing: the job is free for the next slot.
        assert!(busy.try_lock().is_ok());
    }

    #[test]
    fn busy_here_a_lone_instance_skips_and_a_shared_one_fires_after() {
        let busy = Arc::new(Mutex::new(()));
        let _held = busy.try_lock().unwrap();
        assert!(matches!(
            slot_turn(false, Topology::Alone, &busy),
            SlotTurn::Skip
        ));
        assert!(matches!(
            slot_turn(false, Topology::Shared, &busy),
            SlotTurn::After(_)
        ));
    }
}
