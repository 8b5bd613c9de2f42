//! Draining one run: stream its pending deliveries in pages, render and check each
//! message, and send the valid ones with bounded concurrency.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;
use super::recorder::{RecordWriter, Recorder};
use super::retry::RetryPolicy;
use super::send::{Halt, Latency, SendContext, StopCause};
use crate::config::{Audience as JobAudience, ConsentCheck, DeliverySettings, Job, OnUnknown};
use crate::domain::{AppTemplate, Builtins, Message, OpenId, TemplateKind};
use crate::storage::{
    Audience, ConsentGate, Counts, Holder, Outcome, PendingDelivery, RunChanges, RunStatus, Status,
    StorageError, Store,
};
use crate::wechat::{TemplateCatalog, TokenManager, WechatClient};

/// Deliveries read from the database at a time: memory stays flat in the audience size.
const PAGE: u32 = 1024;

/// How a drained run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run.
    pub run_id: i64,
    /// The job.
    pub job: String,
    /// The slot (UTC).
    pub slot: DateTime<Utc>,
    /// Deliveries by status, after this drain.
    pub counts: Counts,
    /// Why the run stopped early, if it did (quota, fatal errcode, no token,
    /// WeChat or the database out of reach ...).
    pub stopped: Option<String>,
    /// What kind of cause stopped it: one that passes (WeChat or the database
    /// out of reach) is resumed by the daemon by itself.
    pub cause: Option<StopCause>,
    /// True when a shutdown interrupted it; the next start resumes it.
    pub interrupted: bool,
    /// Other instances that still held deliveries of this shared run when this
    /// drain stopped waiting for them (they made no progress for a lease).
    pub held_elsewhere: Vec<Holder>,
    /// Wall time of this drain, in milliseconds.
    pub duration_ms: u128,
    /// Requests made to `subscribeMessage.send` (retries included).
    pub requests: u64,
    /// Median request latency, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile request latency, in milliseconds.
    pub latency_p99_ms: f64,
}

impl RunReport {
    /// True when the run stopped for a cause that passes (WeChat or the
    /// database out of reach): the daemon resumes it by itself.
    pub fn resumes(&self) -> bool {
        self.cause.is_some_and(StopCause::passes)
    }
}

/// Who a job's runs send to, and what consent their claims need.
#[derive(Debug, Clone)]
pub struct Targeting {
    /// A credit held by each chunk's claim, or no rejection read with each page.
    pub gate: ConsentGate,
    /// Who a new run enqueues, and where names and variables come from.
    pub audience: Audience,
}

/// Starts the sends of claimed chunks, each under a concurrency permit.
struct Launch<'a> {
    ctx: &'a Arc<SendContext>,
    recorder: &'a Recorder,
    permits: &'a Arc<Semaphore>,
    inflight: &'a Arc<InFlight>,
    shutdown: &'a CancellationToken,
}

impl Launch<'_> {
    /// Waits for the chunk's claim, then spawns a send per taken delivery. False
    /// when the run must stop; the chunk's unsent deliveries are then put back.
    async fn chunk(
        &self,
        ready: Vec<(i64, Message)>,
        claim: impl Future<Output = Result<HashSet<i64>, Arc<StorageError>>>,
        tasks: &mut JoinSet<()>,
    ) -> bool {
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
                p = Arc::clone(self.permits).acquire_owned() => Some(p.expect("never closed")),
                _ = self.shutdown.cancelled() => None,
                _ = self.ctx.halt.stopped() => None,
            };
            let Some(permit) = permit else {
                for (id, _) in std::iter::once((id, message)).chain(ready) {
                    self.recorder
                        .record(Outcome::local(id, Status::Pending, None));
                }
                return false;
            };
            while tasks.try_join_next().is_some() {}
            let ctx = Arc::clone(self.ctx);
            let inflight = Arc::clone(self.inflight);
            tasks.spawn(async move {
                let _guard = inflight.acquire(message.touser().as_ref()).await;
                ctx.send_claimed(id, message).await;
                drop(permit);
            });
        }
        true
    }
}

/// Renders and checks one delivery's message.
fn build(job: &Job, d: &PendingDelivery, builtins: &Builtins) -> Result<Message, String> {
    let openid = OpenId::parse(&d.openid).map_err(|e| e.to_string())?;
    Message::build(&job.spec, openid, &d.vars, builtins).map_err(|e| e.to_string())
}

/// What a request that may have gone out, but whose outcome was lost (a crash,
/// a dead instance), is recorded as: unknown, or pending when unknown outcomes
/// are retried.
pub fn leftover_of(on_unknown: OnUnknown) -> Status {
    match on_unknown {
        OnUnknown::Record => Status::Unknown,
        OnUnknown::Retry => Status::Pending,
    }
}

/// Sends runs; one per process, shared by every job.
pub struct Deliverer {
    store: Store,
    client: WechatClient,
    tokens: Arc<TokenManager>,
    templates: TemplateCatalog,
    policy: RetryPolicy,
    rate: Arc<super::rate::SharedRate>,
    inflight: Arc<InFlight>,
    concurrency: usize,
    on_unknown: OnUnknown,
    progress: super::progress::Progress,
    writer: RecordWriter,
    /// How long a shared run's drain waits for other instances that make no
    /// progress: their lease, past which a live one would be declared dead.
    lease: std::time::Duration,
}

/// What waiting for the other instances of a shared run came to.
enum Waited {
    /// Deliveries nobody holds turned up (given back by a rescue or an
    /// instance that stopped): take them.
    Free,
    /// The run has nothing left, or a shutdown came.
    Over,
    /// They held deliveries and made no progress for a lease.
    Held(Vec<Holder>),
}

impl Deliverer {
    /// A deliverer with `[delivery]`'s limits, recording through `writer` (the
    /// process's one writer for `store`, shared by every app's deliverer).
    pub fn new(
        store: Store,
        client: WechatClient,
        tokens: Arc<TokenManager>,
        d: &DeliverySettings,
        writer: RecordWriter,
    ) -> Self {
        Self {
            writer,
            templates: TemplateCatalog::new(client.clone(), Arc::clone(&tokens), store.clone()),
            store,
            client,
            tokens,
            policy: RetryPolicy::from_settings(d),
            rate: Arc::new(super::rate::SharedRate::new(d.rate_limit_per_sec)),
            inflight: Arc::new(InFlight::default()),
            concurrency: d.concurrency,
            on_unknown: d.on_unknown,
            progress: super::progress::Progress::Log,
            lease: std::time::Duration::from_secs(30),
        }
    }

    /// Waits at most `lease` for other instances' deliveries of a shared run
    /// that make no progress (`[database] instance_lease`).
    pub fn with_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Writes the outcomes this process's writer kept when the database
    /// failed to take them (see `RecordWriter::settle`).
    pub async fn settle_kept(&self) -> Result<(), StorageError> {
        self.writer.settle().await
    }

    /// The AppID of the mini program this deliverer sends for.
    pub fn appid(&self) -> &str {
        self.client.appid()
    }

    /// Shows run progress as `progress` says.
    pub fn with_progress(mut self, progress: super::progress::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The rate limit all instances share, divided among the live ones.
    pub fn rate(&self) -> &super::rate::SharedRate {
        &self.rate
    }

    /// What a dead instance's `sending` deliveries become: unknown, or pending
    /// when unknown outcomes are retried.
    pub fn leftover(&self) -> Status {
        leftover_of(self.on_unknown)
    }

    /// True when `on_unknown = "retry"`: a re-run resends `unknown` deliveries too.
    pub fn retries_unknown(&self) -> bool {
        self.on_unknown == OnUnknown::Retry
    }

    /// Closes a run whose send window has passed: a crash's leftovers are settled
    /// as on a resume, and what is still pending is recorded `expired`, never sent.
    pub async fn expire(
        &self,
        job: &Job,
        run_id: i64,
        slot: DateTime<Utc>,
    ) -> Result<RunReport, StorageError> {
        let Some(_entered) = self.writer.enter(run_id) else {
            return self.drained_here(job, run_id, slot).await;
        };
        self.writer.settle().await?;
        self.store.recover_sending(run_id, self.leftover()).await?;
        let note = format!(
            "the send window ({}) closed before these were sent",
            humantime::format_duration(job.send_window)
        );
        let expired = self.store.expire_run(run_id, &note).await?;
        if expired > 0 {
            tracing::warn!(run.id = run_id, job = %job.name, %slot, count = expired, "send window closed: not sent, and never will be");
            crate::stats::expired(job.name.as_ref(), expired);
        }
        let counts = self.counts(run_id).await?;
        Ok(RunReport {
            run_id,
            job: job.name.to_string(),
            slot,
            counts,
            stopped: None,
            cause: None,
            interrupted: false,
            held_elsewhere: Vec::new(),
            duration_ms: 0,
            requests: 0,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
        })
    }

    /// The report of a drain that did not start because another drain of
    /// this process is on the run: it finishes the run, so this one reports
    /// it as held (by this instance).
    async fn drained_here(
        &self,
        job: &Job,
        run_id: i64,
        slot: DateTime<Utc>,
    ) -> Result<RunReport, StorageError> {
        tracing::info!(run.id = run_id, job = %job.name, "another drain of this process is on this run; it finishes it");
        let me = self.store.instance().unwrap_or_default().to_owned();
        let mut held: Vec<Holder> = self
            .store
            .holders(run_id)
            .await?
            .into_iter()
            .filter(|h| h.instance == me)
            .collect();
        if held.is_empty() {
            held.push(Holder {
                instance: me,
                taken: 0,
                sending: 0,
            });
        }
        Ok(RunReport {
            run_id,
            job: job.name.to_string(),
            slot,
            counts: self.counts(run_id).await?,
            stopped: None,
            cause: None,
            interrupted: false,
            held_elsewhere: held,
            duration_ms: 0,
            requests: 0,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
        })
    }

    /// A run's deliveries by status, as recorded now.
    async fn counts(&self, run_id: i64) -> Result<Counts, StorageError> {
        Ok(self
            .store
            .run(run_id)
            .await?
            .map(|r| r.counts)
            .unwrap_or_default())
    }

    /// Reads (on PostgreSQL, takes) the page of pending deliveries after `after`,
    /// in a task of its own, so that it runs while the previous page is sent.
    fn read_page(
        &self,
        job: &Job,
        targeting: &Targeting,
        run_id: i64,
        after: i64,
        size: u32,
    ) -> tokio::task::JoinHandle<Result<Vec<PendingDelivery>, StorageError>> {
        let (store, job) = (self.store.clone(), job.name.to_string());
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

    /// Waits while other instances hold the rest of a shared run, for as long
    /// as they make progress, and at most a lease without any (a live
    /// instance whose database failed settles its rows once it answers again;
    /// a dead one is settled by a survivor after its lease).
    async fn wait_for_others(
        &self,
        job: &str,
        run_id: i64,
        changes: &mut RunChanges,
        shutdown: &CancellationToken,
    ) -> Result<Waited, StorageError> {
        let mut least = i64::MAX;
        let mut since = tokio::time::Instant::now();
        loop {
            changes.clear();
            let (free, held) = self.store.run_progress(run_id).await?;
            if free > 0 {
                return Ok(Waited::Free);
            }
            if held == 0 {
                return Ok(Waited::Over);
            }
            if held < least {
                least = held;
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= self.lease {
                return Ok(Waited::Held(self.store.holders(run_id).await?));
            }
            // Woken at once when another instance finishes its share or a
            // rescue gives deliveries back; the timer covers a lost signal.
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = changes.changed(job) => {}
                _ = shutdown.cancelled() => return Ok(Waited::Over),
            }
        }
    }

    /// Whether an instance other than this one holds deliveries of `run_id`
    /// (taken or in flight); true when that cannot be read.
    async fn others_hold(&self, run_id: i64) -> bool {
        let me = self.store.instance().unwrap_or_default();
        self.store
            .holders(run_id)
            .await
            .map_or(true, |h| h.iter().any(|h| h.instance != me))
    }

    /// Who `job`'s runs send to and what consent they need: a credit, held by
    /// each claim, for a one-time template; no rejection on record, read with
    /// each page, otherwise (and when the kind cannot be known now). Worked out
    /// once per firing: it may ask WeChat.
    pub async fn targeting(&self, job: &Job) -> Targeting {
        let template = job.spec.template_id.as_ref();
        let kind = match job.consent {
            ConsentCheck::Unchecked => None,
            ConsentCheck::Required => self.templates.kind(template).await,
        };
        let gate = match (job.consent, kind) {
            (ConsentCheck::Unchecked, _) => ConsentGate::Unchecked,
            (_, Some(TemplateKind::OneTime)) => {
                ConsentGate::Credit(AppTemplate::new(self.client.appid(), template))
            }
            _ => ConsentGate::NotRefused(AppTemplate::new(self.client.appid(), template)),
        };
        let audience = match job.audience {
            JobAudience::Listed => Audience::Listed,
            JobAudience::Subscribed => Audience::Subscribed {
                one_time: kind == Some(TemplateKind::OneTime),
            },
            JobAudience::Query => Audience::Query,
        };
        Targeting { gate, audience }
    }

    /// Sends every pending delivery of `run_id`. The caller holds the job's lock.
    ///
    /// Stops early when WeChat says every further send would fail (the rest stay
    /// pending), when WeChat or the database is out of reach (the run stays
    /// resumable), or when `shutdown` fires (in-flight sends finish and are
    /// recorded). An error only when the run could not be started.
    #[tracing::instrument(skip_all, fields(run.id = run_id, job = %job.name))]
    pub async fn drain(
        &self,
        job: &Job,
        targeting: &Targeting,
        run_id: i64,
        slot: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) -> Result<RunReport, StorageError> {
        let started = Instant::now();
        let Some(_entered) = self.writer.enter(run_id) else {
            return self.drained_here(job, run_id, slot).await;
        };
        // Answers of an earlier drain that the database could not take are
        // written first: the recovery below would take their rows for
        // interrupted requests.
        self.writer.settle().await?;
        // Only a crash leaves `claimed` and `sending` rows, and we hold the job's lock.
        let leftover_to = self.leftover();
        let recovered = self.store.recover_sending(run_id, leftover_to).await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                now = leftover_to.as_str(),
                "found deliveries interrupted mid-send"
            );
        }
        self.store
            .reopen_run(run_id, job.spec.template_id.as_ref())
            .await?;
        let _progress = self
            .progress
            .watch(self.store.clone(), job.name.as_ref(), run_id);
        let recorder = self.writer.recorder(targeting.gate.clone());
        let ctx = Arc::new(SendContext {
            client: self.client.clone(),
            tokens: Arc::clone(&self.tokens),
            recorder: recorder.clone(),
            policy: self.policy,
            rate: Arc::clone(&self.rate),
            on_unknown: self.on_unknown,
            halt: Halt::default(),
            shutdown: shutdown.clone(),
            latency: Latency::new(),
            job: Arc::from(job.name.as_ref()),
            unanswered: Default::default(),
            sent: crate::stats::sent_counter(job.name.as_ref()),
        });
        let builtins = Builtins::at(slot, job.schedule.tz());
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        let mut after = 0;
        let launch = Launch {
            ctx: &ctx,
            recorder: &recorder,
            permits: &permits,
            inflight: &self.inflight,
            shutdown,
        };
        // Chunks whose claim is committing; the next one is claimed while the
        // previous is sent, so sends never wait for a commit.
        let mut queued = VecDeque::new();
        let mut go_on = true;
        // Where instances share the run, each takes a few chunks at a time, so
        // that the work spreads and a dead instance leaves little to give back.
        let shared = self.store.shares_runs();
        // Listening before the others are told, so that their answers are heard:
        // idle instances join this run now rather than at their next join check.
        let mut changes = self.store.run_changes();
        if shared {
            self.store.signal_job(job.name.as_ref()).await;
        }
        // Every drain in the process holds its pages at once (one app's runs
        // and every other app's): with many, each takes a share of one page, so
        // that memory stays near one run's (100 runs' full pages were about a
        // third of a 200 MB peak).
        let page_size = || {
            let chunks = (self.concurrency as u32 * 4).clamp(16, 256);
            if shared {
                chunks
            } else {
                (PAGE / self.writer.runs().max(1) as u32).clamp(chunks.min(PAGE), PAGE)
            }
        };
        let mut swept = false;
        let mut held_elsewhere = Vec::new();
        loop {
            // The next page is read (on PostgreSQL, taken) while this one is sent.
            let mut next = Some(self.read_page(job, targeting, run_id, after, page_size()));
            'pages: loop {
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
                        ctx.halt.database(&e);
                        go_on = false;
                        break 'pages;
                    }
                };
                let Some(last) = page.last() else {
                    // Shared: deliveries given back behind the cursor (by a rescue or
                    // an instance that stopped) are taken in one more pass from the start.
                    if shared && !swept && after > 0 {
                        swept = true;
                        after = 0;
                        next = Some(self.read_page(job, targeting, run_id, 0, page_size()));
                        continue;
                    }
                    break;
                };
                after = last.id;
                next = Some(self.read_page(job, targeting, run_id, after, page_size()));
                for chunk in page.chunks(self.concurrency) {
                    if shutdown.is_cancelled() || ctx.halt.is_stopped() {
                        go_on = false;
                        break 'pages;
                    }
                    let ready = self.prepare(job, chunk, &builtins, &ctx, &recorder);
                    // Record before the irreversible calls: one commit marks the chunk
                    // `sending`, so a crash can only make these `unknown`, never resend.
                    let ids: Vec<i64> = ready.iter().map(|(id, _)| *id).collect();
                    queued.push_back((ready, recorder.claim(ids)));
                    if queued.len() < 2 {
                        continue;
                    }
                    let (ready, claim) = queued.pop_front().expect("two queued");
                    if !launch.chunk(ready, claim, &mut tasks).await {
                        go_on = false;
                        break 'pages;
                    }
                }
            }
            // A page read ahead and not sent: on PostgreSQL its deliveries are
            // this instance's until they are given back below.
            if let Some(unsent) = next.take() {
                let _ = unsent.await;
            }
            while let Some((ready, claim)) = queued.pop_front() {
                if go_on {
                    go_on = launch.chunk(ready, claim, &mut tasks).await;
                } else if let Ok(taken) = claim.await {
                    // Claimed but never sent: back to pending for the resume.
                    for id in taken {
                        recorder.record(Outcome::local(id, Status::Pending, None));
                    }
                }
            }
            while tasks.join_next().await.is_some() {}
            // An outcome the database did not take is kept and written once
            // it answers: this instance settles its own rows.
            if let Err(e) = recorder.flush().await {
                ctx.halt.database(&e);
                break;
            }
            if shared {
                if let Err(e) = self.store.release_taken(run_id).await {
                    ctx.halt.database(&e);
                    break;
                }
                // This share is done: a drain waiting for it looks again now.
                self.store.signal_job(job.name.as_ref()).await;
            }
            // Shared: the run is done only when the other instances' deliveries
            // are too. Wait for them (a sender that joined reports the whole
            // run), and take what comes back from a dead one.
            if !shared || !go_on || ctx.halt.is_stopped() {
                break;
            }
            match self
                .wait_for_others(job.name.as_ref(), run_id, &mut changes, shutdown)
                .await
            {
                Ok(Waited::Free) => {}
                Ok(Waited::Over) => break,
                Ok(Waited::Held(holders)) => {
                    held_elsewhere = holders;
                    break;
                }
                Err(e) => {
                    ctx.halt.database(&e);
                    break;
                }
            }
            after = 0;
            swept = false;
        }
        // With the database failing, the counts would only fail too (after
        // the pool's acquire timeout): the report goes without them.
        let counts = if matches!(ctx.halt.reason(), Some((_, StopCause::Database))) {
            Counts::default()
        } else {
            match self.counts(run_id).await {
                Ok(counts) => counts,
                Err(e) => {
                    ctx.halt.database(&e);
                    Counts::default()
                }
            }
        };
        let stop = ctx.halt.reason();
        let interrupted = stop.is_none() && shutdown.is_cancelled();
        let finish = match &stop {
            // Left `running`: the database is what failed, and the run is
            // resumed (by this daemon, any instance, or `send`) once it answers.
            Some((_, StopCause::Database)) => None,
            Some((reason, _)) => Some((RunStatus::Stopped, Some(reason.as_str()))),
            None if !interrupted && held_elsewhere.is_empty() && counts.pending == 0 => {
                Some((RunStatus::Done, None))
            }
            // Said so on record, so that `runs` does not show a run nobody
            // runs as `running`; on a shared run, only once no other instance
            // still sends it (it finishes the run).
            None if interrupted && !(shared && self.others_hold(run_id).await) => {
                Some((RunStatus::Interrupted, None))
            }
            None => None,
        };
        if let Some((status, reason)) = finish
            && let Err(e) = self.store.finish_run(run_id, status, reason).await
        {
            // Unfinished on record, so resumed and finished by the next firing.
            ctx.halt.database(&e);
        }
        let (stopped, cause) = match ctx.halt.reason() {
            Some((_, StopCause::Database)) if let Some(e) = self.store.diagnose() => (
                Some(format!("the database failed: {e}")),
                Some(StopCause::Database),
            ),
            Some((reason, cause)) => (Some(reason), Some(cause)),
            None => (None, None),
        };
        Ok(RunReport {
            run_id,
            job: job.name.to_string(),
            slot,
            counts,
            stopped,
            cause,
            interrupted,
            held_elsewhere,
            duration_ms: started.elapsed().as_millis(),
            requests: ctx.latency.quantile_ms(0.5).1,
            latency_p50_ms: ctx.latency.quantile_ms(0.5).0,
            latency_p99_ms: ctx.latency.quantile_ms(0.99).0,
        })
    }

    /// Renders and checks a chunk's messages: the sendable ones are returned;
    /// a person who refused on record is `skipped` and an invalid message
    /// `invalid`, neither asked of WeChat.
    fn prepare(
        &self,
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
}
