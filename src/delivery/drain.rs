//! Draining one run: stream its pending deliveries in pages, render and check each
//! message, and send the valid ones with bounded concurrency.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;
use super::pass::{Ending, Finish, Pass, Targeting, finish};
use super::recorder::{RecordWriter, Recorder};
use super::retry::RetryPolicy;
use super::send::{Halt, Latency, SendContext, StopCause};
use crate::config::{Audience as JobAudience, ConsentCheck, DeliverySettings, Job, OnUnknown};
use crate::domain::{AppId, AppTemplate, Builtins, JobName, TemplateKind};
use crate::domain::{ConsentGate, Counts, RunStatus, Status};
use crate::storage::{Audience, Holder, RunChanges, StorageError, Store, Topology};
use crate::wechat::{TemplateCatalog, TokenManager, WechatClient};

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
    /// Whether other instances drain the same runs.
    topology: Topology,
    client: WechatClient,
    tokens: Arc<TokenManager>,
    templates: TemplateCatalog,
    policy: RetryPolicy,
    rate: Arc<super::rate::SharedRate>,
    inflight: Arc<InFlight>,
    concurrency: usize,
    /// `concurrency` permits, one per request in flight: the app's runs and
    /// its sends on demand draw on the same ones.
    permits: Arc<tokio::sync::Semaphore>,
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
        topology: Topology,
        client: WechatClient,
        tokens: Arc<TokenManager>,
        d: &DeliverySettings,
        writer: RecordWriter,
    ) -> Self {
        Self {
            writer,
            templates: TemplateCatalog::new(client.clone(), Arc::clone(&tokens), store.clone()),
            store,
            topology,
            client,
            tokens,
            policy: RetryPolicy::from_settings(d),
            rate: Arc::new(super::rate::SharedRate::new(d.rate_limit_per_sec)),
            inflight: Arc::new(InFlight::default()),
            concurrency: d.concurrency,
            permits: Arc::new(tokio::sync::Semaphore::new(d.concurrency)),
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
    pub fn appid(&self) -> &AppId {
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

    /// The permits for requests in flight for this app (`[delivery] concurrency`).
    pub fn permits(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.permits
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

    /// Waits while other instances hold the rest of a shared run, for as long
    /// as they make progress, and at most a lease without any (a live
    /// instance whose database failed settles its rows once it answers again;
    /// a dead one is settled by a survivor after its lease).
    async fn wait_for_others(
        &self,
        job: &JobName,
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
        let template = &job.spec.template_id;
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
        Targeting {
            gate,
            audience,
            appid: self.client.appid().clone(),
        }
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
        self.recover(job, run_id).await?;
        let _progress = self
            .progress
            .watch(self.store.clone(), job.name.as_ref(), run_id);
        let recorder = self.writer.recorder(targeting.gate.clone());
        let ctx = Arc::new(self.send_context(job, &recorder, shutdown));
        let shared = self.topology == Topology::Shared;
        let mut pass = Pass::new(
            self.store.clone(),
            self.writer.clone(),
            job,
            targeting,
            run_id,
            slot,
            shutdown,
            Arc::clone(&ctx),
            recorder,
            Builtins::at(slot, job.schedule.tz()),
            Arc::clone(&self.inflight),
            Arc::clone(&self.permits),
            self.concurrency,
            shared,
        );
        // Listening before the others are told, so that their answers are heard:
        // idle instances join this run now rather than at their next join check.
        let mut changes = self.store.run_changes();
        if shared {
            self.store.signal_job(&job.name).await;
        }
        let ending = loop {
            let end = pass.read_pages().await;
            // Shared: the run is done only when the other instances' deliveries
            // are too. Wait for them (a sender that joined reports the whole
            // run), and take what comes back from a dead one.
            if !pass.finish_share(end).await || !shared {
                break Ending::Drained;
            }
            match self
                .wait_for_others(&job.name, run_id, &mut changes, shutdown)
                .await
            {
                Ok(Waited::Free) => {}
                Ok(Waited::Over) => break Ending::Drained,
                Ok(Waited::Held(holders)) => break Ending::HeldElsewhere(holders),
                Err(e) => {
                    ctx.halt.database(&e);
                    break Ending::Drained;
                }
            }
        };
        drop(pass);
        Ok(self
            .close(job, run_id, slot, &ctx, shutdown, ending, started)
            .await)
    }

    /// Before a drain sends: the answers of an earlier drain that the database
    /// could not take are written first (the recovery would take their rows
    /// for interrupted requests), then a crash's leftovers are settled (only a
    /// crash leaves `claimed` and `sending` rows, and the caller holds the
    /// job), and the run is reopened.
    async fn recover(&self, job: &Job, run_id: i64) -> Result<(), StorageError> {
        self.writer.settle().await?;
        let leftover_to = self.leftover();
        let recovered = self.store.recover_sending(run_id, leftover_to).await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                now = leftover_to.as_str(),
                "found deliveries interrupted mid-send"
            );
        }
        self.store.reopen_run(run_id, &job.spec.template_id).await
    }

    /// What every send of one drain shares.
    fn send_context(
        &self,
        job: &Job,
        recorder: &Recorder,
        shutdown: &CancellationToken,
    ) -> SendContext {
        SendContext {
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
        }
    }

    /// Closes a drain: reads the run's counts, finishes the run as `finish`
    /// says, and reports.
    #[allow(clippy::too_many_arguments)]
    async fn close(
        &self,
        job: &Job,
        run_id: i64,
        slot: DateTime<Utc>,
        ctx: &SendContext,
        shutdown: &CancellationToken,
        ending: Ending,
        started: Instant,
    ) -> RunReport {
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
        let held_elsewhere = match ending {
            Ending::Drained => Vec::new(),
            Ending::HeldElsewhere(holders) => holders,
        };
        let shared = self.topology == Topology::Shared;
        let status = match finish(
            stop.as_ref(),
            interrupted,
            !held_elsewhere.is_empty(),
            counts.pending,
            shared,
        ) {
            Finish::Leave => None,
            Finish::Mark(status, reason) => Some((status, reason)),
            Finish::InterruptedUnlessOthersHold => {
                (!self.others_hold(run_id).await).then_some((RunStatus::Interrupted, None))
            }
        };
        if let Some((status, reason)) = status
            && let Err(e) = self
                .store
                .finish_run(run_id, status, reason.as_deref())
                .await
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
        RunReport {
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
        }
    }
}
