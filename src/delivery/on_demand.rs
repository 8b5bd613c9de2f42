//! Sends on demand, sent when due: what is past its `expires_at` ends
//! `expired`; each due send is claimed (committed `sending`, its one-time
//! credit held) before its request, sent with its app's token, and recorded as
//! WeChat answered. The daemon runs `serve` beside the scheduler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::retry::RetryPolicy;
use crate::app::App;
use crate::config::OnUnknown;
use crate::domain::policy::{Action, Policy};
use crate::domain::{
    Builtins, KeywordName, Lang, Message, MessageError, MessageSpec, MiniprogramState, OpenId,
    Overflow, Page, SendStatus, Status, TemplateId, ValueTemplate,
};
use crate::storage::{Claim, DueSend, SendRow, StorageError};
use crate::wechat::{Disposition, SendReply, classify_send};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// How often the daemon looks for sends another process added (`wxpush sends
/// add`) when none is due sooner: one indexed `MIN` query.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between looks after passes that were held back.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Due sends claimed per query.
const PAGE: u32 = 64;

/// A send's message as stored: rendered and checked when it was accepted, so
/// that what goes out is what the caller was told would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBody {
    /// The template.
    pub template_id: String,
    /// The page the card opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Which version of the mini program the card opens.
    #[serde(default)]
    pub miniprogram_state: MiniprogramState,
    /// The language of the card's link.
    #[serde(default)]
    pub lang: Lang,
    /// Every keyword's value, as sent.
    pub data: BTreeMap<String, String>,
}

impl SendBody {
    /// The body of a built message (a job's, rendered for one person).
    pub fn of(message: &Message, spec: &MessageSpec) -> Self {
        Self {
            template_id: spec.template_id.as_ref().to_owned(),
            page: spec.page.as_ref().map(|p| p.as_ref().to_owned()),
            miniprogram_state: spec.state,
            lang: spec.lang,
            data: message
                .values()
                .map(|(k, v)| (k.as_ref().to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The message to `touser`, every value checked against its keyword's rule
    /// (as `check` checks a job's): the error names the field or keyword.
    pub fn digest(&self) -> String {
        let data = serde_json::to_string(&self.data).expect("keywords serialise");
        crate::domain::policy::digest(&self.template_id, &data)
    }

    /// The message for `touser`, checked again (as it was when accepted).
    pub fn message(&self, touser: OpenId) -> Result<Message, String> {
        let template_id =
            TemplateId::parse(&self.template_id).map_err(|e| format!("template_id: {e}"))?;
        let page = self
            .page
            .as_deref()
            .map(Page::parse)
            .transpose()
            .map_err(|e| format!("page: {e}"))?;
        let mut data = Vec::with_capacity(self.data.len());
        for key in self.data.keys() {
            let name = KeywordName::parse(key).map_err(|e| format!("data.{key}: {e}"))?;
            let literal = ValueTemplate::parse("").map_err(|e| format!("data.{key}: {e}"))?;
            data.push((name, literal));
        }
        if data.is_empty() {
            return Err("data: names no keyword".into());
        }
        let spec = Arc::new(MessageSpec {
            template_id,
            page,
            state: self.miniprogram_state,
            lang: self.lang,
            overflow: Overflow::Fail,
            data,
        });
        // Each value is a variable named like its keyword: literal text.
        let builtins = Builtins::at(chrono::Utc::now(), chrono_tz::UTC);
        Message::build(&spec, touser, &self.data, &builtins).map_err(|e| match e {
            MessageError::Keyword(k) => format!("data.{k}"),
            other => other.to_string(),
        })
    }
}

/// What one pass over the due sends did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Sends requested (each once, retries aside).
    pub requests: usize,
    /// A send went back to pending without an answer (no token, WeChat out of
    /// reach, a fault such as the quota): the next pass waits longer.
    pub held_back: bool,
}

/// Sends what is due now: each due send claimed once a permit of its app's
/// `[delivery] concurrency` (shared with the app's runs) is free, then
/// requested at the app's shared rate while the next is claimed. The
/// requests go on in `tasks` after it returns: one slow send (a retry's
/// wait) holds up neither the next pass nor what falls due meanwhile.
async fn send_due(
    app: &Arc<App>,
    stop: &CancellationToken,
    tasks: &mut Deliveries,
) -> Result<Pass, StorageError> {
    let owner: Arc<str> = Arc::from(app.instance.id.as_str());
    let now = app.clock.now();
    let expired = app.store.expire_sends(now).await?;
    if !expired.is_empty() {
        tracing::warn!(
            expired = expired.len(),
            "sends on demand expired unsent (past their expires_at)"
        );
        for appid in &expired {
            crate::stats::on_demand_outcome(&app_label(app, appid), SendStatus::Expired, None, 1);
        }
    }
    let mut pass = Pass::default();
    claim_and_launch(app, &owner, now, stop, &mut pass, tasks).await?;
    Ok(pass)
}

/// Notes how a finished delivery task ended: `true` when it was held back.
fn ended(done: Result<Result<Delivered, StorageError>, tokio::task::JoinError>) -> bool {
    match done.expect("a delivery task panicked") {
        Ok(Delivered::Recorded) => false,
        Ok(Delivered::HeldBack) => true,
        Err(e) => {
            tracing::error!(error = %e, "a send on demand could not be recorded; it is settled at the next start");
            true
        }
    }
}

/// The requests in flight of the on-demand sender.
type Deliveries = JoinSet<Result<Delivered, StorageError>>;

/// Claims the due sends page by page, launching each claimed one, until none
/// is left or one was held back (what held it back holds the rest too).
async fn claim_and_launch(
    app: &Arc<App>,
    owner: &Arc<str>,
    now: DateTime<Utc>,
    stop: &CancellationToken,
    pass: &mut Pass,
    tasks: &mut Deliveries,
) -> Result<(), StorageError> {
    // Instances sharing the database read the same page of due sends: each
    // starts claiming at its own point in it, so they rarely race for one.
    let start = owner.bytes().map(usize::from).sum::<usize>();
    loop {
        let mut due = app.store.due_sends(now, PAGE).await?;
        if !due.is_empty() {
            let at = start % due.len();
            due.rotate_left(at);
        }
        let mut took = false;
        for candidate in &due {
            let appid = &candidate.appid;
            while let Some(done) = tasks.try_join_next() {
                pass.held_back |= ended(done);
            }
            if pass.held_back {
                return Ok(());
            }
            let runtime = app_of(app, appid).map(|(_, r)| r);
            // A shutdown takes nothing more: what was claimed finishes, the
            // rest stays pending for the next start (or another instance).
            let permit = match runtime {
                Some(r) => tokio::select! {
                    p = Arc::clone(r.deliverer.permits()).acquire_owned() => {
                        Some(p.expect("never closed"))
                    }
                    () = stop.cancelled() => return Ok(()),
                },
                None => None,
            };
            if stop.is_cancelled() {
                return Ok(());
            }
            // Claimed as of now, not of the pass's start: a pass that waited
            // for permits must not take a send that expired meanwhile.
            let policy = policy_of(app, candidate);
            let policy = policy.as_ref().map(|(p, tz)| (p, *tz));
            match app
                .store
                .claim_send(candidate, owner, app.clock.now(), policy)
                .await?
            {
                Claim::Claimed(send) => {
                    took = true;
                    pass.requests += 1;
                    let (app, owner, stop) = (Arc::clone(app), Arc::clone(owner), stop.clone());
                    tasks.spawn(async move {
                        let _permit = permit;
                        deliver(&app, &owner, &send, &stop).await
                    });
                }
                Claim::Skipped => {
                    took = true;
                    crate::stats::on_demand_outcome(
                        &app_label(app, appid),
                        SendStatus::Skipped,
                        None,
                        1,
                    );
                }
                Claim::Held(rule, action) => {
                    took = true;
                    crate::stats::policy_held(&app_label(app, appid), rule, action, 1);
                    if action != Some(Action::Defer) {
                        let status = match action {
                            Some(_) => SendStatus::Suppressed,
                            None => SendStatus::Expired,
                        };
                        crate::stats::on_demand_outcome(&app_label(app, appid), status, None, 1);
                    }
                }
                Claim::Lost => {}
            }
        }
        // A short page is the last; one of which nothing was ours, another's.
        if due.len() < PAGE as usize || !took {
            return Ok(());
        }
    }
}

/// The policy a due send is claimed under, and the zone its recipient is in
/// unless it gives its own: its app's, its job's and its own layers.
fn policy_of(app: &App, due: &DueSend) -> Option<(Policy, chrono_tz::Tz)> {
    let appid = crate::domain::AppId::parse(&due.appid).ok()?;
    let settings = &app.settings;
    let job = due.job.as_deref().and_then(|j| settings.job(j));
    // Checked when it was accepted.
    let own = due
        .policy
        .as_deref()
        .and_then(|p| serde_json::from_str::<crate::domain::policy::RawPolicy>(p).ok())
        .and_then(|raw| raw.check().ok());
    let policy = settings.policy_of(&appid, job, own.as_ref());
    let tz = job.map_or(crate::domain::policy::DEFAULT_TZ, |j| j.schedule.tz());
    Some((policy, tz))
}

/// The configured app of AppID `appid` (its `[apps.NAME]`, none for `[wechat]`).
fn app_of<'a>(
    app: &'a App,
    appid: &str,
) -> Option<&'a (Option<crate::domain::AppName>, crate::app::AppRuntime)> {
    app.apps
        .iter()
        .find(|(_, r)| r.client.appid().as_ref() == appid)
}

/// The `app` label of AppID `appid`'s series: its `[apps.NAME]`, or `default`.
fn app_label(app: &App, appid: &str) -> String {
    app_of(app, appid)
        .and_then(|(name, _)| name.as_ref().map(|n| n.as_ref().to_owned()))
        .unwrap_or_else(|| "default".to_owned())
}

/// How one claimed send ended here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    /// Recorded as WeChat answered (or as unknown).
    Recorded,
    /// Given back to pending: no request reached WeChat.
    HeldBack,
}

/// Requests one claimed send (retrying what passes, as a run's deliveries
/// are) and records how it ended.
async fn deliver(
    app: &App,
    owner: &str,
    send: &SendRow,
    stop: &CancellationToken,
) -> Result<Delivered, StorageError> {
    let finish = |status: SendStatus, errcode: Option<i64>, errmsg: Option<String>, msgid| async move {
        let mine = app
            .store
            .finish_send(send.id, owner, status, errcode, errmsg.as_deref(), msgid)
            .await?;
        if mine {
            crate::stats::on_demand_outcome(&app_label(app, &send.appid), status, errcode, 1);
            if let Ok(due) = send.send_at.parse::<DateTime<Utc>>() {
                crate::stats::on_demand_lag(app.clock.now() - due);
            }
        }
        Ok(Delivered::Recorded)
    };
    let hold_back = |why: String| async move {
        tracing::warn!(send = send.id, reason = %why, "a send on demand waits: no request was made");
        app.store
            .release_send(send.id, owner)
            .await
            .map(|()| Delivered::HeldBack)
    };
    let Some((_, runtime)) = app_of(app, &send.appid) else {
        let why = format!("AppID {} is no longer in the config", send.appid);
        return finish(SendStatus::Failed, None, Some(why), None).await;
    };
    let message = serde_json::from_str::<SendBody>(&send.message)
        .map_err(|e| e.to_string())
        .and_then(|body| {
            let to = OpenId::parse(&send.openid).map_err(|e| e.to_string())?;
            body.message(to)
        });
    let message = match message {
        Ok(m) => m,
        Err(why) => return finish(SendStatus::Invalid, None, Some(why), None).await,
    };
    let mut delays = RetryPolicy::from_settings(&app.settings.delivery).delays();
    let expires = send.expires_at.parse::<DateTime<Utc>>().ok();
    let mut refreshed = false;
    loop {
        let token = match runtime.tokens.get().await {
            Ok(t) => t,
            Err(e) => return hold_back(format!("no access_token: {e}")).await,
        };
        runtime.deliverer.rate().until_ready().await;
        // Never late: the rate limit or a retry's wait may have outlasted it.
        if expires.is_some_and(|at| app.clock.now() >= at) {
            let why = "not sent before its expires_at".to_owned();
            return finish(SendStatus::Expired, None, Some(why), None).await;
        }
        let (errcode, errmsg) = match runtime.client.send(token.expose(), &message).await {
            SendReply::Replied {
                errcode: 0, msgid, ..
            } => return finish(SendStatus::Sent, Some(0), None, msgid).await,
            SendReply::Replied {
                errcode, errmsg, ..
            } => (errcode, errmsg),
            // Not taken (refused before it left, or a gateway's 5xx): retried
            // as a run's delivery is, then given back, never failed for it.
            SendReply::NotSent(why) => {
                if !again(app, stop, &mut delays, Duration::ZERO).await {
                    return hold_back(why).await;
                }
                continue;
            }
            SendReply::Http(code) if code >= 500 => {
                if !again(app, stop, &mut delays, Duration::ZERO).await {
                    return hold_back(format!("HTTP {code}")).await;
                }
                continue;
            }
            SendReply::Http(code) => {
                return hold_back(format!(
                    "WeChat answered HTTP {code}; check [wechat] api_base"
                ))
                .await;
            }
            SendReply::NoAnswer(why) if app.settings.delivery.on_unknown == OnUnknown::Retry => {
                if !again(app, stop, &mut delays, Duration::ZERO).await {
                    let why = format!("no answer: {why}");
                    return finish(SendStatus::Unknown, None, Some(why), None).await;
                }
                continue;
            }
            // It may have arrived: recorded so, never sent again.
            SendReply::NoAnswer(why) => {
                let why = format!("no answer: {why}");
                return finish(SendStatus::Unknown, None, Some(why), None).await;
            }
        };
        let status = match classify_send(errcode) {
            Disposition::RefreshToken if !refreshed => {
                refreshed = true;
                if let Err(e) = runtime.tokens.replace(&token).await {
                    return hold_back(format!("no access_token: {e}")).await;
                }
                continue;
            }
            // Passing errcodes (busy, the per-minute quota): retried, then
            // given back for a later pass rather than failed (a run's delivery
            // would be retried when its run is re-run; a send has no re-run).
            Disposition::Retry { after } => {
                if !again(app, stop, &mut delays, after).await {
                    return hold_back(format!("errcode {errcode}: {errmsg}")).await;
                }
                continue;
            }
            // A fault of the account (quota, template): this one was not used up.
            Disposition::StopRun {
                this: Status::Pending,
            } => return hold_back(format!("errcode {errcode}: {errmsg}")).await,
            Disposition::Final(s) | Disposition::StopRun { this: s } => SendStatus::from(s),
            Disposition::Sent | Disposition::RefreshToken => SendStatus::Failed,
        };
        return finish(status, Some(errcode), Some(errmsg), None).await;
    }
}

/// Waits out the next retry delay (at least `at_least`, as WeChat asked);
/// false when the retries are used up, or when a shutdown came meanwhile
/// (no request is in flight between two tries: the send is given back).
async fn again(
    app: &App,
    stop: &CancellationToken,
    delays: &mut impl Iterator<Item = Duration>,
    at_least: Duration,
) -> bool {
    let Some(d) = delays.next() else {
        return false;
    };
    tokio::select! {
        () = app.clock.sleep(d.max(at_least)) => !stop.is_cancelled(),
        () = stop.cancelled() => false,
    }
}

/// The daemon's sender of sends on demand: settles what a crash left in
/// flight, then sends each send when it is due, until `stop`.
pub async fn serve(app: Arc<App>, stop: CancellationToken) {
    let me = app.instance.id.clone();
    match app.store.recover_sends(Some(&me)).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            n,
            "sends on demand left in flight by a crash recorded unknown"
        ),
        Err(e) => tracing::error!(error = %e, "cannot settle sends on demand left in flight"),
    }
    // After a pass that was held back (or a database failure), each next
    // look waits twice as long, up to a minute: a quota or an outage is not
    // asked about every second.
    let mut backoff = LOOK_EVERY;
    let mut wakes = app.store.send_wakes();
    let mut tasks = Deliveries::new();
    let mut held_back = false;
    'passes: loop {
        let failed = match send_due(&app, &stop, &mut tasks).await {
            Ok(pass) => pass.held_back,
            Err(e) => {
                tracing::error!(error = %e, "sends on demand: the database failed; retrying");
                true
            }
        };
        let backing = std::mem::take(&mut held_back) || failed;
        let wait = if backing {
            longer(&mut backoff)
        } else {
            backoff = LOOK_EVERY;
            LOOK_EVERY
        };
        // What others signalled during the pass, the pass has seen.
        wakes.clear();
        let now = app.clock.now();
        let look = now + chrono::Duration::from_std(wait).expect("at most a minute");
        // A send that fell due during the pass goes now: under a steady
        // stream, waiting for the next look would send in one-second batches.
        let wake = match app.store.next_send_at().await {
            Ok(Some(next)) if !backing => next.max(now).min(look),
            _ => look,
        };
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break 'passes,
                // Finished requests are noted while waiting; they start no pass.
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    held_back |= ended(done);
                }
                () = app.clock.sleep_until(wake) => break,
                // A send accepted for now (by the API here, or another instance)
                // goes without waiting for the next look; not while backing off.
                () = wakes.added(), if !backing => break,
            }
        }
    }
    // A shutdown: the requests in flight end and are recorded.
    while let Some(done) = tasks.join_next().await {
        ended(done);
    }
}

/// The wait `backoff` says, doubling it (up to `MAX_BACKOFF`) for next time.
fn longer(backoff: &mut Duration) -> Duration {
    let now = *backoff;
    *backoff = (now * 2).min(MAX_BACKOFF);
    now
}

/// What callers see of a send's status at `now` (`scheduled` or `queued` for a pending one).
pub fn shown_status(send: &SendRow, now: DateTime<Utc>) -> &'static str {
    let due = send
        .send_at
        .parse::<DateTime<Utc>>()
        .is_ok_and(|t| t <= now);
    if send.status == SendStatus::Pending && send.held.is_some() {
        return "deferred";
    }
    send.status.shown(due)
}

/// One send as `sends --json` and `GET /v1/sends/ID` show it.
pub fn send_view(send: &SendRow, now: DateTime<Utc>) -> Value {
    json!({
        "id": send.id,
        "status": shown_status(send, now),
        "to": send.openid,
        "appid": send.appid,
        "template_id": send.template_id,
        "job": send.job,
        "send_at": send.send_at,
        "expires_at": send.expires_at,
        "cancel_key": send.cancel_key,
        "tz": send.tz,
        "held_by": send.held,
        "metadata": send.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "attempts": send.attempts,
        "errcode": send.errcode,
        "errmsg": send.errmsg,
        "msgid": send.msgid,
        "created_at": send.created_at,
        "updated_at": send.updated_at,
        "event": send.event.as_ref().map(|e| json!({
            "error_code": e.error_code,
            "error_status": e.error_status,
            "received_at": e.received_at,
        })),
    })
}
