//! One drain of a run, as named stages: read pages (the next one is read
//! while this one is sent), prepare each chunk's messages, claim the chunk,
//! launch its sends, finish this instance's share, and close the run. Each
//! stage hands the next what it needs; how the whole ended is an enum.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;
use super::recorder::RecordWriter;
use super::recorder::Recorder;
use super::send::{SendContext, StopCause};
use crate::config::Job;
use crate::domain::{Builtins, ConsentGate, Message, OpenId, Status};
use crate::domain::{Outcome, RunStatus};
use crate::storage::{Audience, Holder, PendingDelivery, StorageError, Store};

/// Deliveries read from the database at a time: memory stays flat in the audience size.
pub(super) const PAGE: u32 = 1024;

/// A chunk's claim, committing while the previous chunk is sent.
type Claim = Pin<Box<dyn Future<Output = Result<HashSet<i64>, Arc<StorageError>>> + Send>>;

/// A chunk of messages ready to send, and its claim.
type Queued = (Vec<(i64, Message)>, Claim);

/// How one pass over a run's pages ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassEnd {
    /// Every page was read and sent.
    Read,
    /// A shutdown, a halt or the database stopped it.
    Halted,
}

/// How a drain ended, as far as this instance can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// This instance sent all it could.
    Drained,
    /// Other instances still held deliveries and made no progress for a lease.
    HeldElsewhere(Vec<Holder>),
}

/// What closing a drain writes on the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Finish {
    /// Nothing: the run stays as it is (left `running` for a resume).
    Leave,
    /// The run ends, or stops, in this status.
    Mark(RunStatus, Option<String>),
    /// Interrupted, unless another instance still sends it (which finishes it).
    InterruptedUnlessOthersHold,
}

/// What closing a drain does to its run, from how it stopped (if it did),
/// whether a shutdown interrupted it, whether others still hold some of it,
/// and what is still pending.
pub(super) fn finish(
    stop: Option<&(String, StopCause)>,
    interrupted: bool,
    held_elsewhere: bool,
    pending: u64,
    shared: bool,
) -> Finish {
    match stop {
        // Left `running`: the database is what failed, and the run is resumed
        // (by this daemon, any instance, or `send`) once it answers.
        Some((_, StopCause::Database)) => Finish::Leave,
        Some((reason, _)) => Finish::Mark(RunStatus::Stopped, Some(reason.clone())),
        None if !interrupted && !held_elsewhere && pending == 0 => {
            Finish::Mark(RunStatus::Done, None)
        }
        // Said so on record, so that `runs` does not show a run nobody runs
        // as `running`; on a shared run, only once no other instance still
        // sends it (it finishes the run).
        None if interrupted && shared => Finish::InterruptedUnlessOthersHold,
        None if interrupted => Finish::Mark(RunStatus::Interrupted, None),
        None => Finish::Leave,
    }
}

/// Deliveries a drain reads at a time. Where instances share the run, each
/// takes a few chunks at a time, so that the work spreads and a dead instance
/// leaves little to give back. Alone, every drain in the process holds its
/// pages at once (one app's runs and every other app's): with many, each takes
/// a share of one page, so that memory stays near one run's (100 runs' full
/// pages were about a third of a 200 MB peak).
pub(super) fn page_size(concurrency: usize, runs: usize, shared: bool) -> u32 {
    let chunks = (concurrency as u32 * 4).clamp(16, 256);
    if shared {
        chunks
    } else {
        (PAGE / runs.max(1) as u32).clamp(chunks.min(PAGE), PAGE)
    }
}

/// Who a job's runs send to, and what consent their claims need.
#[derive(Debug, Clone)]
pub struct Targeting {
    /// A credit held by each chunk's claim, or no rejection read with each page.
    pub gate: ConsentGate,
    /// Who a new run enqueues, and where names and variables come from.
    pub audience: Audience,
    /// The app it sends for.
    pub appid: crate::domain::AppId,
}

/// Renders and checks one delivery's message.
fn build(job: &Job, d: &PendingDelivery, builtins: &Builtins) -> Result<Message, String> {
    let openid = OpenId::parse(&d.openid).map_err(|e| e.to_string())?;
    Message::build(&job.spec, openid, &d.vars, builtins).map_err(|e| e.to_string())
}

/// Reads (on PostgreSQL, takes) the page of pending deliveries after `after`,
/// in a task of its own, so that it runs while the previous page is sent.
fn read_page(
    store: &Store,
    job: &Job,
    targeting: &Targeting,
    run_id: i64,
    after: i64,
    size: u32,
) -> tokio::task::JoinHandle<Result<Vec<PendingDelivery>, StorageError>> {
    let (store, job) = (store.clone(), job.name.clone());
    let audience = targeting.audience;
    // A long-term template's consent is read with the page (see `take_claims`).
    let refusals = match &targeting.gate {
        ConsentGate::NotRefused(t) => Some(t.clone()),
        ConsentGate::Unchecked | ConsentGate::Credit(_) => None,
    };
    tokio::spawn(async move {
        store
            .pending_page(&job, audience, refusals.as_ref(), run_id, after, size)
            .await
    })
}

/// Renders and checks a chunk's messages: the sendable ones are returned;
/// a person who refused on record is `skipped` and an invalid message
/// `invalid`, neither asked of WeChat.
fn prepare(
    job: &Job,
    chunk: &[PendingDelivery],
    builtins: &Builtins,
    ctx: &SendContext,
    recorder: &Recorder,
) -> Vec<(i64, Message)> {
    let mut ready = Vec::with_capacity(chunk.len());
    for d in chunk {
        if d.refused {
            crate::stats::skipped(&ctx.job, 1);
            recorder.record(Outcome::local(
                d.id,
                Status::Skipped,
                Some(crate::domain::NO_CONSENT.to_owned()),
            ));
            continue;
        }
        match build(job, d, builtins) {
            Ok(message) => ready.push((d.id, message)),
            // Caught here, so WeChat never answers 47003 for it.
            Err(reason) => {
                tracing::info!(delivery.id = d.id, %reason, "message is invalid; not sent");
                recorder.record(Outcome::local(d.id, Status::Invalid, Some(reason)));
            }
        }
    }
    ready
}

/// One drain's sending: what its stages share.
pub(super) struct Pass<'a> {
    store: Store,
    writer: RecordWriter,
    pub(super) job: &'a Job,
    pub(super) targeting: &'a Targeting,
    pub(super) run_id: i64,
    /// The run's slot: its send window (the policy's deadline) counts from it.
    pub(super) slot: chrono::DateTime<chrono::Utc>,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) ctx: Arc<SendContext>,
    pub(super) recorder: Recorder,
    pub(super) builtins: Builtins,
    pub(super) permits: Arc<Semaphore>,
    pub(super) inflight: Arc<InFlight>,
    pub(super) concurrency: usize,
    pub(super) shared: bool,
    /// Sends in flight.
    tasks: JoinSet<()>,
    /// Chunks whose claim is committing; the next one is claimed while the
    /// previous is sent, so sends never wait for a commit.
    queued: VecDeque<Queued>,
}

impl<'a> Pass<'a> {
    /// A pass with nothing read yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        store: Store,
        writer: RecordWriter,
        job: &'a Job,
        targeting: &'a Targeting,
        run_id: i64,
        slot: chrono::DateTime<chrono::Utc>,
        shutdown: &'a CancellationToken,
        ctx: Arc<SendContext>,
        recorder: Recorder,
        builtins: Builtins,
        inflight: Arc<InFlight>,
        permits: Arc<Semaphore>,
        concurrency: usize,
        shared: bool,
    ) -> Self {
        Self {
            store,
            writer,
            job,
            targeting,
            run_id,
            slot,
            shutdown,
            ctx,
            recorder,
            builtins,
            permits,
            inflight,
            concurrency,
            shared,
            tasks: JoinSet::new(),
            queued: VecDeque::new(),
        }
    }

    /// Reads the run's pages from the start and sends them: each page's chunks
    /// are prepared, claimed and launched, one chunk's claim committing while
    /// the previous chunk is sent. Where instances share the run, deliveries
    /// given back behind the cursor (by a rescue or an instance that stopped)
    /// are taken in one more pass from the start.
    pub(super) async fn read_pages(&mut self) -> PassEnd {
        let (store, writer) = (self.store.clone(), self.writer.clone());
        let (concurrency, shared) = (self.concurrency, self.shared);
        let size = || page_size(concurrency, writer.runs(), shared);
        let mut after = 0;
        let mut swept = false;
        let mut next = Some(read_page(
            &store,
            self.job,
            self.targeting,
            self.run_id,
            0,
            size(),
        ));
        let end = loop {
            let page = match next
                .take()
                .expect("a page is always on its way")
                .await
                .expect("the page task does not panic")
            {
                Ok(page) => page,
                // Not returned at once: the sends in flight finish and are
                // recorded first.
                Err(e) => {
                    self.ctx.halt.database(&e);
                    break PassEnd::Halted;
                }
            };
            let Some(last) = page.last() else {
                if shared && !swept && after > 0 {
                    swept = true;
                    after = 0;
                    next = Some(read_page(
                        &store,
                        self.job,
                        self.targeting,
                        self.run_id,
                        0,
                        size(),
                    ));
                    continue;
                }
                break PassEnd::Read;
            };
            after = last.id;
            next = Some(read_page(
                &store,
                self.job,
                self.targeting,
                self.run_id,
                after,
                size(),
            ));
            if self.send_page(&page).await == PassEnd::Halted {
                break PassEnd::Halted;
            }
        };
        // A page read ahead and not sent: on PostgreSQL its deliveries are
        // this instance's until they are given back (`finish_share`).
        if let Some(unsent) = next.take() {
            let _ = unsent.await;
        }
        end
    }

    /// Prepares, claims and launches a page, a chunk at a time; under a
    /// delivery policy, the page's messages are decided first, together.
    async fn send_page(&mut self, page: &[PendingDelivery]) -> PassEnd {
        let mut decided = None;
        if !self.job.effective_policy.is_off() {
            let ready = prepare(self.job, page, &self.builtins, &self.ctx, &self.recorder);
            let (job, targeting) = (self.job, self.targeting);
            let run = (self.run_id, self.slot);
            match super::policy::apply(&self.store, job, targeting, run.0, run.1, page, ready).await
            {
                Ok(ready) => decided = Some(ready.into_iter()),
                Err(e) => {
                    // Nothing was claimed: the page stays pending for the resume.
                    self.ctx.halt.database(&e);
                    return PassEnd::Halted;
                }
            }
        }
        for chunk in page.chunks(self.concurrency) {
            if self.shutdown.is_cancelled() || self.ctx.halt.is_stopped() {
                return PassEnd::Halted;
            }
            let ready = match decided.as_mut() {
                Some(left) => left.by_ref().take(self.concurrency).collect(),
                None => prepare(self.job, chunk, &self.builtins, &self.ctx, &self.recorder),
            };
            // Record before the irreversible calls: the chunk's claim commits
            // before any of its requests, and each request starts only once its
            // own `sending` mark is committed, so a crash can only make these
            // `unknown`, never resend.
            let ids: Vec<i64> = ready.iter().map(|(id, _)| *id).collect();
            self.queued
                .push_back((ready, Box::pin(self.recorder.claim(ids))));
            if self.queued.len() < 2 {
                continue;
            }
            let (ready, claim) = self.queued.pop_front().expect("two queued");
            if !self.launch(ready, claim).await {
                return PassEnd::Halted;
            }
        }
        PassEnd::Read
    }

    /// Waits for the chunk's claim, then spawns a send per taken delivery. False
    /// when the run must stop; the chunk's unsent deliveries are then put back.
    async fn launch(&mut self, ready: Vec<(i64, Message)>, claim: Claim) -> bool {
        let taken = match claim.await {
            Ok(taken) => taken,
            Err(e) => {
                self.ctx.halt.database(&e);
                return false;
            }
        };
        // Not taken: no consent on record (the claim marked them `skipped`), or,
        // rarely, no longer pending.
        let passed_over = ready.len() - taken.len();
        if passed_over > 0 {
            crate::stats::skipped(&self.ctx.job, passed_over as u64);
        }
        let mut ready = ready.into_iter().filter(|(id, _)| taken.contains(id));
        while let Some((id, message)) = ready.next() {
            let permit = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => Some(p.expect("never closed")),
                _ = self.shutdown.cancelled() => None,
                _ = self.ctx.halt.stopped() => None,
            };
            let Some(permit) = permit else {
                for (id, _) in std::iter::once((id, message)).chain(ready) {
                    self.recorder
                        .record(Outcome::local(id, crate::domain::Status::Pending, None));
                }
                return false;
            };
            while self.tasks.try_join_next().is_some() {}
            let ctx = Arc::clone(&self.ctx);
            let inflight = Arc::clone(&self.inflight);
            self.tasks.spawn(async move {
                let _guard = inflight.acquire(message.touser().as_ref()).await;
                ctx.send_claimed(id, message).await;
                drop(permit);
            });
        }
        true
    }

    /// Ends this instance's share of the pass: the chunks still queued are
    /// launched (or, after a halt, given back), the sends in flight finish,
    /// every outcome is committed, and, where the run is shared, what was
    /// taken and not sent is given back and the others are told. False when
    /// the run must stop here.
    pub(super) async fn finish_share(&mut self, end: PassEnd) -> bool {
        let mut go_on = end == PassEnd::Read;
        while let Some((ready, claim)) = self.queued.pop_front() {
            if go_on {
                go_on = self.launch(ready, claim).await;
            } else if let Ok(taken) = claim.await {
                // Claimed but never sent: back to pending for the resume.
                for id in taken {
                    self.recorder
                        .record(Outcome::local(id, crate::domain::Status::Pending, None));
                }
            }
        }
        while self.tasks.join_next().await.is_some() {}
        // An outcome the database did not take is kept and written once
        // it answers: this instance settles its own rows.
        if let Err(e) = self.recorder.flush().await {
            self.ctx.halt.database(&e);
            return false;
        }
        if self.shared {
            let store = &self.store;
            if let Err(e) = store.release_taken(self.run_id).await {
                self.ctx.halt.database(&e);
                return false;
            }
            // This share is done: a drain waiting for it looks again now.
            store.signal_job(&self.job.name).await;
        }
        go_on && !self.ctx.halt.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(cause: StopCause) -> (String, StopCause) {
        ("why".to_owned(), cause)
    }

    #[test]
    fn a_database_failure_leaves_the_run_running_for_a_resume() {
        let stop = stopped(StopCause::Database);
        for (interrupted, held, pending, shared) in
            [(false, false, 0, false), (true, true, 9, true)]
        {
            assert_eq!(
                finish(Some(&stop), interrupted, held, pending, shared),
                Finish::Leave
            );
        }
    }

    #[test]
    fn a_fault_or_an_outage_stops_the_run_with_its_reason() {
        for cause in [StopCause::Fault, StopCause::Outage] {
            assert_eq!(
                finish(Some(&stopped(cause)), false, false, 3, false),
                Finish::Mark(RunStatus::Stopped, Some("why".to_owned()))
            );
        }
    }

    #[test]
    fn a_run_is_done_only_with_nothing_pending_held_or_interrupted() {
        assert_eq!(
            finish(None, false, false, 0, true),
            Finish::Mark(RunStatus::Done, None)
        );
        assert_eq!(finish(None, false, false, 1, false), Finish::Leave);
        assert_eq!(finish(None, false, true, 0, true), Finish::Leave);
    }

    #[test]
    fn an_interrupted_run_says_so_unless_another_instance_may_still_send_it() {
        assert_eq!(
            finish(None, true, false, 0, false),
            Finish::Mark(RunStatus::Interrupted, None)
        );
        assert_eq!(
            finish(None, true, false, 5, true),
            Finish::InterruptedUnlessOthersHold
        );
    }

    #[test]
    fn a_shared_page_is_a_few_chunks_and_a_lone_one_is_shared_among_the_runs() {
        assert_eq!(page_size(8, 1, true), 32);
        assert_eq!(page_size(1, 1, true), 16);
        assert_eq!(page_size(100, 1, true), 256);
        assert_eq!(page_size(8, 1, false), PAGE);
        assert_eq!(page_size(8, 4, false), PAGE / 4);
        // Never under a few chunks, however many runs share the page.
        assert_eq!(page_size(8, 1000, false), 32);
    }
}
