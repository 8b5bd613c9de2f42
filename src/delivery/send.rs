//! Sending one message: claim, call, classify, retry, record.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::recorder::Recorder;
use super::retry::RetryPolicy;
use crate::config::OnUnknown;
use crate::domain::Message;
use crate::domain::{Outcome, Status};
use crate::wechat::{Disposition, SendReply, TokenManager, WechatClient, classify_send};

/// Requests in a row, across a run's senders, that got no answer from WeChat
/// (refused connection, timeout, HTTP 5xx) before the run stops as an outage.
const OUTAGE_STREAK: u32 = 8;

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// Something an operator must fix: quota, account, template, secret.
    Fault,
    /// WeChat could not be reached; the run is resumed once it can.
    Outage,
    /// The database failed (down, restarted, locked, full); the run is resumed
    /// once it answers, and whatever this process could not record is written
    /// then.
    Database,
}

impl StopCause {
    /// True when the cause passes by itself, so the daemon resumes the run.
    pub fn passes(self) -> bool {
        matches!(self, Self::Outage | Self::Database)
    }

    /// The `reason` label of `wxpush_runs_stopped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fault => "fault",
            Self::Outage => "outage",
            Self::Database => "database",
        }
    }
}

/// A reason to stop the whole run; the first one wins.
#[derive(Clone, Default)]
pub(super) struct Halt {
    token: CancellationToken,
    reason: Arc<OnceLock<(String, StopCause)>>,
}

impl Halt {
    /// Stops the run for a cause someone must fix (quota, account, template).
    pub(super) fn stop(&self, reason: String) {
        self.halt(reason, StopCause::Fault);
    }

    /// Stops the run because WeChat cannot be reached; it is resumed once it can.
    pub(super) fn outage(&self, reason: String) {
        self.halt(reason, StopCause::Outage);
    }

    /// Stops the run because the database failed; it is resumed once it answers.
    pub(super) fn database(&self, e: &crate::storage::StorageError) {
        self.halt(format!("the database failed: {e}"), StopCause::Database);
    }

    fn halt(&self, reason: String, cause: StopCause) {
        if self.reason.set((reason.clone(), cause)).is_ok() {
            tracing::error!(reason = %reason, cause = cause.label(), "stopping the run");
        }
        self.token.cancel();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why the run stopped, if it did.
    pub(super) fn reason(&self) -> Option<(String, StopCause)> {
        self.reason.get().cloned()
    }

    pub(super) async fn stopped(&self) {
        self.token.cancelled().await
    }
}

/// Request latencies of one drain, in microseconds (bounded memory at any volume).
pub(super) struct Latency(std::sync::Mutex<hdrhistogram::Histogram<u64>>);

impl Latency {
    pub(super) fn new() -> Self {
        let h = hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        Self(std::sync::Mutex::new(h))
    }

    fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        self.0.lock().expect("poisoned").saturating_record(us);
    }

    /// The `q` quantile in milliseconds, and how many requests were timed.
    pub(super) fn quantile_ms(&self, q: f64) -> (f64, u64) {
        let h = self.0.lock().expect("poisoned");
        (h.value_at_quantile(q) as f64 / 1000.0, h.len())
    }
}

/// What one send task needs, shared by the tasks of a run.
pub(super) struct SendContext {
    pub client: WechatClient,
    pub tokens: Arc<TokenManager>,
    pub recorder: Recorder,
    pub policy: RetryPolicy,
    pub rate: Arc<super::rate::SharedRate>,
    pub on_unknown: OnUnknown,
    pub halt: Halt,
    pub shutdown: CancellationToken,
    pub latency: Latency,
    /// The job's name, for metrics.
    pub job: Arc<str>,
    /// Requests in a row that WeChat did not answer.
    pub unanswered: AtomicU32,
    /// `wxpush_sends_total{outcome="sent"}` for this job.
    pub sent: metrics::Counter,
}

struct Attempt {
    id: i64,
    attempts: u32,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

impl Attempt {
    fn outcome(self, status: Status, msgid: Option<u64>) -> Outcome {
        Outcome {
            id: self.id,
            status,
            errcode: self.errcode,
            errmsg: self.errmsg,
            msgid,
            attempts: self.attempts,
        }
    }
}

impl SendContext {
    /// Sends one delivery already committed as `sending` and records its outcome.
    pub(super) async fn send_claimed(&self, id: i64, message: Message) {
        if self.halt.is_stopped() || self.shutdown.is_cancelled() {
            self.recorder
                .record(Outcome::local(id, Status::Pending, None));
            return;
        }
        let Some(outcome) = self.attempt_all(id, &message).await else {
            return;
        };
        match outcome.status {
            Status::Sent => {
                tracing::debug!(openid.masked = %message.touser().masked(), delivery.id = id, "sent")
            }
            Status::Pending => {}
            s => tracing::info!(
                openid.masked = %message.touser().masked(),
                delivery.id = id,
                status = s.as_str(),
                errcode = outcome.errcode,
                errmsg = outcome.errmsg.as_deref().unwrap_or(""),
                "not sent"
            ),
        }
        match outcome.status {
            Status::Sent => self.sent.increment(1),
            s => crate::stats::delivery(&self.job, s, outcome.errcode),
        }
        self.recorder.record(outcome);
    }

    /// Counts a request WeChat did not answer; enough in a row stop the run as an
    /// outage, so that the rest of the audience stays pending instead of failing.
    fn unanswered(&self, what: &str) {
        if self.unanswered.fetch_add(1, Ordering::Relaxed) + 1 >= OUTAGE_STREAK {
            self.halt
                .outage(format!("WeChat cannot be reached ({what})"));
        }
    }

    async fn attempt_all(&self, id: i64, message: &Message) -> Option<Outcome> {
        let mut a = Attempt {
            id,
            attempts: 0,
            errcode: None,
            errmsg: None,
        };
        let mut delays = self.policy.delays();
        let mut token_replaced = false;
        loop {
            {
                self.rate.until_ready().await;
            }
            // Fetching a token may wait out a retry ladder; shutdown must not wait with
            // it. Nothing of this attempt has been sent yet.
            let token = tokio::select! {
                t = self.tokens.get() => match t {
                    Ok(t) => t,
                    Err(e) if e.is_unreachable() => {
                        self.halt.outage(e.to_string());
                        return Some(a.outcome(Status::Pending, None));
                    }
                    Err(crate::wechat::TokenError::Storage(e)) => {
                        self.halt.database(&e);
                        return Some(a.outcome(Status::Pending, None));
                    }
                    Err(e) => {
                        self.halt.stop(e.to_string());
                        return Some(a.outcome(Status::Pending, None));
                    }
                },
                _ = self.shutdown.cancelled() => return Some(a.outcome(Status::Pending, None)),
            };
            // Record before the irreversible call: committed `sending`, so that a
            // crash from here on leaves it `unknown`, never sent twice.
            if a.attempts == 0 {
                match self.recorder.sending(id).await {
                    Ok(true) => {}
                    // Taken elsewhere since its claim: not ours to send or record.
                    Ok(false) => return None,
                    // Not marked, so not sent: back to pending, written
                    // once the database answers again.
                    Err(e) => {
                        self.halt.database(&e);
                        return Some(a.outcome(Status::Pending, None));
                    }
                }
            }
            a.attempts += 1;
            let started = std::time::Instant::now();
            let reply = self.client.send(token.expose(), message).await;
            self.latency.record(started.elapsed());
            let retry_after = match reply {
                SendReply::Replied {
                    errcode,
                    errmsg,
                    msgid,
                } => {
                    self.unanswered.store(0, Ordering::Relaxed);
                    a.errcode = (errcode != 0).then_some(errcode);
                    a.errmsg = (errcode != 0).then_some(errmsg);
                    match classify_send(errcode) {
                        Disposition::Sent => return Some(a.outcome(Status::Sent, msgid)),
                        Disposition::Final(status) => return Some(a.outcome(status, None)),
                        Disposition::StopRun { this } => {
                            self.halt.stop(format!(
                                "WeChat answered errcode {errcode}: {}",
                                a.errmsg.as_deref().unwrap_or("")
                            ));
                            return Some(a.outcome(this, None));
                        }
                        Disposition::RefreshToken if !token_replaced => {
                            token_replaced = true;
                            if let Err(e) = self.tokens.replace(&token).await {
                                match e {
                                    crate::wechat::TokenError::Storage(e) => self.halt.database(&e),
                                    e => self.halt.stop(e.to_string()),
                                }
                                return Some(a.outcome(Status::Pending, None));
                            }
                            continue;
                        }
                        Disposition::RefreshToken => {
                            self.halt.stop(format!(
                                "a fresh access_token was rejected too (errcode {errcode}); another party may be refreshing it"
                            ));
                            return Some(a.outcome(Status::Pending, None));
                        }
                        Disposition::Retry { after } => after,
                    }
                }
                SendReply::NotSent(reason) => {
                    self.unanswered(&reason);
                    a.errmsg = Some(reason);
                    Duration::ZERO
                }
                SendReply::Http(code) if code >= 500 => {
                    self.unanswered(&format!("HTTP {code}"));
                    a.errmsg = Some(format!("HTTP {code}"));
                    Duration::ZERO
                }
                SendReply::Http(code) => {
                    self.halt.stop(format!(
                        "WeChat answered HTTP {code}; check [wechat] api_base"
                    ));
                    a.errmsg = Some(format!("HTTP {code}"));
                    return Some(a.outcome(Status::Pending, None));
                }
                SendReply::NoAnswer(reason) => {
                    self.unanswered(&reason);
                    a.errmsg = Some(format!("no answer: {reason}"));
                    if self.on_unknown == OnUnknown::Record {
                        return Some(a.outcome(Status::Unknown, None));
                    }
                    Duration::ZERO
                }
            };
            let Some(backoff) = delays.next() else {
                if a.errcode.is_none() {
                    // Every try went unanswered: WeChat is away, not this person.
                    self.halt.outage(format!(
                        "WeChat cannot be reached ({})",
                        a.errmsg.as_deref().unwrap_or("no answer")
                    ));
                    return Some(a.outcome(Status::Pending, None));
                }
                return Some(a.outcome(Status::Failed, None));
            };
            crate::stats::retry(&self.job);
            tokio::select! {
                _ = tokio::time::sleep(backoff.max(retry_after)) => {}
                // The last request failed for sure, so the message was not used up.
                _ = self.shutdown.cancelled() => return Some(a.outcome(Status::Pending, None)),
                _ = self.halt.stopped() => return Some(a.outcome(Status::Pending, None)),
            }
        }
    }
}
