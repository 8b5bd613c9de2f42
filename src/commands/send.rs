//! `wxpush send JOB [--dry-run]`.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use serde::Serialize;

use super::{Console, Exit, Failure, Host, find_job, outln};
use crate::app::{App, config_recipients};
use crate::config::{Job, Settings};
use crate::delivery::RunReport;
use crate::domain::{Builtins, Message, OpenId, with_name};
use crate::domain::{Counts, Trigger};
use crate::runner::{FireError, Firing, SlotEnd, fire};
use crate::storage::Store;

pub(super) async fn run(
    settings: Settings,
    job: &str,
    again: bool,
    dry_run: bool,
    json: bool,
    host: &mut Host,
) -> Result<Exit, Failure> {
    let job = find_job(&settings, job)?.clone();
    if dry_run {
        return dry_run_job(&settings, &job, &mut host.console).await;
    }
    // The latest slot that has passed: sending it twice resumes or finishes its
    // run. Only --again makes a new round, as a slot of its own (now).
    let now = Utc::now();
    let slot = if again {
        now.trunc_subsecs(3)
    } else {
        job.schedule.latest_at_or_before(now).ok_or_else(|| {
            Failure::usage(format!(
                "{}: job {} has no slot yet (its cron line never fired); `wxpush send {} --again` sends a round now",
                settings.path.display(),
                job.name,
                job.name
            ))
        })?
    };
    let progress = crate::delivery::Progress::on(host.console.is_terminal());
    let app = App::build_as(settings, "send", progress).await?;
    app.sync_recipients().await?;
    let shutdown = host.shutdown();
    let alive = tokio_util::sync::CancellationToken::new();
    let heartbeat = app.keep_alive(alive.clone());
    let fired = fire(
        &app.store,
        &app.runtime(job.app.as_ref()).deliverer,
        &job,
        if again {
            Firing::NewRound(slot)
        } else {
            Firing::Slot(slot, Trigger::Manual)
        },
        &app.clock,
        &shutdown,
    )
    .await
    .map_err(|e| match e {
        FireError::Locked(e) => Failure::cannot_proceed(e),
        other => Failure::cannot_proceed(other),
    });
    alive.cancel();
    let _ = heartbeat.await;
    app.leave().await;
    let fired = fired?;
    app.store.close().await;
    let out = &mut host.console;
    if fired.reports.is_empty() && fired.slot == SlotEnd::Cancelled {
        outln!(
            out,
            "{}: stopped before the run started; nothing was sent",
            job.name
        );
        return Ok(Exit::CannotProceed);
    }
    let local = job.schedule.local(slot);
    if fired.slot == SlotEnd::TooLate && fired.reports.is_empty() {
        outln!(
            out,
            "{}: the latest slot ({local}) passed more than its send window ({}) ago and never ran; nothing was sent. \
             `wxpush send {} --again` sends a new round now",
            job.name,
            humantime::format_duration(job.send_window),
            job.name
        );
        return Ok(Exit::CannotProceed);
    }
    if fired.reports.is_empty() {
        let note = match fired.slot {
            SlotEnd::AlreadyDone(id) => format!(
                " (run {id} for the slot {local} is complete; `wxpush send {} --again` sends a new round)",
                job.name
            ),
            _ => String::new(),
        };
        outln!(out, "{}: nothing to send{note}", job.name);
        return Ok(Exit::Ok);
    }

    let summary = Summary::of(
        job.name.as_ref(),
        &fired.reports,
        app.runtime(job.app.as_ref()).tokens.fetches(),
    );
    if json {
        outln!(
            out,
            "{}",
            serde_json::to_string(&summary).expect("a summary serialises")
        );
    } else {
        outln!(out, "{}", summary.line(&job, again));
    }
    let c = &summary.counts;
    Ok(
        if summary.stopped.is_some() || summary.interrupted || !summary.held_elsewhere.is_empty() {
            Exit::CannotProceed
        } else if c.sent + c.skipped + c.deferred + c.suppressed < c.total {
            // What a policy held was decided, not failed: deferred ones go at
            // their time (`sends`), suppressed ones by rule.
            Exit::SomeFailed
        } else {
            Exit::Ok
        },
    )
}

/// `wxpush send JOB --to OPENID`: the job's message to one person, once, as a
/// test. The person's variables are theirs when the job lists them.
pub(super) async fn test_send(
    settings: Settings,
    job: &str,
    to: &str,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let job = find_job(&settings, job)?.clone();
    let openid = OpenId::parse(to).map_err(|e| Failure::usage(format!("--to {to}: {e}")))?;
    let path = settings.path.display().to_string();
    // One message: nothing to show progress of.
    let app = App::build_as(settings, "send", crate::delivery::Progress::Log).await?;
    let result = test_send_with(&app, &job, openid, &path).await;
    app.leave().await;
    app.store.close().await;
    let sent = result?;
    if json {
        outln!(
            out,
            "{}",
            serde_json::to_string(&sent).expect("a test send serialises")
        );
    } else {
        outln!(out, "{}", sent.line);
    }
    Ok(match sent.status {
        crate::domain::Status::Sent => Exit::Ok,
        _ => Exit::SomeFailed,
    })
}

/// How a test send ended.
#[derive(Debug, Serialize)]
struct TestSent {
    job: String,
    openid: String,
    test_send: i64,
    status: crate::domain::Status,
    errcode: Option<i64>,
    errmsg: Option<String>,
    msgid: Option<String>,
    #[serde(skip)]
    line: String,
}

async fn test_send_with(
    app: &App,
    job: &Job,
    openid: OpenId,
    config: &str,
) -> Result<TestSent, Failure> {
    use crate::domain::Status;
    use crate::wechat::SendReply;
    app.sync_recipients().await?;
    let listed = app
        .store
        .recipients(Some(&job.name))
        .await?
        .into_iter()
        .find(|r| r.openid == openid.as_ref());
    let vars = listed.map(|r| r.vars).unwrap_or_default();
    let builtins = Builtins::at(Utc::now(), job.schedule.tz());
    let message = Message::build(&job.spec, openid.clone(), &vars, &builtins).map_err(|e| {
        Failure::usage(format!(
            "{config}: job {}: data.{e} (for --to {openid}, with {})",
            job.name,
            if vars.is_empty() {
                "no variables: the job does not list this person"
            } else {
                "this person's variables"
            }
        ))
    })?;
    let template = &job.spec.template_id;
    let id = app
        .store
        .start_test_send(&job.name, &openid, template)
        .await?;
    let runtime = app.runtime(job.app.as_ref());
    let (tokens, client) = (&runtime.tokens, &runtime.client);
    let mut token = tokens.get().await.map_err(Failure::cannot_proceed)?;
    let mut reply = client.send(token.expose(), &message).await;
    if let SendReply::Replied { errcode, .. } = &reply
        && crate::wechat::token_rejected(*errcode)
    {
        token = tokens
            .replace(&token)
            .await
            .map_err(Failure::cannot_proceed)?;
        reply = client.send(token.expose(), &message).await;
    }
    let (status, errcode, errmsg, msgid) = match reply {
        SendReply::Replied {
            errcode: 0, msgid, ..
        } => (Status::Sent, None, None, msgid),
        SendReply::Replied {
            errcode, errmsg, ..
        } => (Status::Failed, Some(errcode), Some(errmsg), None),
        SendReply::NotSent(why) => (Status::Failed, None, Some(why), None),
        SendReply::Http(code) => (Status::Unknown, None, Some(format!("HTTP {code}")), None),
        SendReply::NoAnswer(why) => (Status::Unknown, None, Some(why), None),
    };
    app.store
        .finish_test_send(id, status, errcode, errmsg.as_deref(), msgid)
        .await?;
    let template = crate::domain::AppTemplate::new(client.appid(), template);
    let one_time = app
        .store
        .template(&template.appid, &template.template_id)
        .await?
        .is_some_and(|(t, _)| t.kind == crate::domain::TemplateKind::OneTime);
    if one_time && matches!(status, Status::Sent | Status::Unknown) {
        // WeChat delivers one message per tap, a test's too.
        app.store.spend_credit(&openid, &template).await?;
    }
    let line = match status {
        Status::Sent => format!(
            "{}: test message sent to {openid} (test send {id}, msgid {}); no run was made",
            job.name,
            msgid.map_or_else(|| "-".into(), |m| m.to_string())
        ),
        Status::Unknown => format!(
            "{}: test message to {openid}: no answer from WeChat ({}); it may have arrived (test send {id})",
            job.name,
            errmsg.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "{}: test message to {openid} failed: {}{} (test send {id})",
            job.name,
            errcode.map_or_else(String::new, |c| format!("errcode {c}: ")),
            errmsg.as_deref().unwrap_or_default()
        ),
    };
    Ok(TestSent {
        job: job.name.to_string(),
        openid: openid.to_string(),
        test_send: id,
        status,
        errcode,
        errmsg,
        msgid: msgid.map(|m| m.to_string()),
        line,
    })
}

/// What `wxpush send` reports: every run it drained, added up.
#[derive(Debug, Serialize)]
struct Summary {
    job: String,
    runs: Vec<i64>,
    counts: Counts,
    stopped: Option<String>,
    /// The stop's cause passes (WeChat or the database out of reach).
    outage: bool,
    /// `fault`, `outage` or `database`, when it stopped.
    stop_cause: Option<crate::delivery::StopCause>,
    interrupted: bool,
    /// Other instances holding deliveries that made no progress for a lease.
    held_elsewhere: Vec<crate::storage::Holder>,
    duration_ms: u128,
    requests: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    token_requests: u64,
}

impl Summary {
    fn of(job: &str, reports: &[RunReport], token_requests: u64) -> Self {
        let mut counts = Counts::default();
        for r in reports {
            let c = &r.counts;
            counts.total += c.total;
            counts.sent += c.sent;
            counts.failed += c.failed;
            counts.refused += c.refused;
            counts.invalid += c.invalid;
            counts.unknown += c.unknown;
            counts.skipped += c.skipped;
            counts.pending += c.pending;
            counts.expired += c.expired;
            counts.deferred += c.deferred;
            counts.suppressed += c.suppressed;
        }
        // The run that did the most requests speaks for the latency.
        let busiest = reports.iter().max_by_key(|r| r.requests);
        Self {
            job: job.to_owned(),
            runs: reports.iter().map(|r| r.run_id).collect(),
            counts,
            stopped: reports.iter().find_map(|r| r.stopped.clone()),
            outage: reports.iter().any(RunReport::resumes),
            stop_cause: reports.iter().find_map(|r| r.cause),
            interrupted: reports.iter().any(|r| r.interrupted),
            held_elsewhere: reports
                .iter()
                .flat_map(|r| r.held_elsewhere.iter().cloned())
                .collect(),
            duration_ms: reports.iter().map(|r| r.duration_ms).sum(),
            requests: reports.iter().map(|r| r.requests).sum(),
            latency_p50_ms: busiest.map_or(0.0, |r| r.latency_p50_ms),
            latency_p99_ms: busiest.map_or(0.0, |r| r.latency_p99_ms),
            token_requests,
        }
    }

    /// One line: the counts, then what (if anything) is left for the operator to do.
    fn line(&self, job: &Job, again: bool) -> String {
        use crate::delivery::StopCause;
        let c = &self.counts;
        let ids: Vec<String> = self.runs.iter().map(i64::to_string).collect();
        let mut line = format!("{}: run {}", self.job, ids.join(","));
        // With the database gone the counts could not be read: none is better
        // than zeros.
        if !(self.stop_cause == Some(StopCause::Database) && c.total == 0) {
            line.push_str(&format!(
                ": {} sent, {} failed, {} refused, {} invalid, {} unknown, {} skipped, {} pending",
                c.sent, c.failed, c.refused, c.invalid, c.unknown, c.skipped, c.pending,
            ));
            if c.expired > 0 {
                line.push_str(&format!(", {} expired", c.expired));
            }
            if c.deferred + c.suppressed > 0 {
                line.push_str(&format!(
                    ", {} deferred, {} suppressed (policy)",
                    c.deferred, c.suppressed
                ));
            }
            line.push_str(&format!(
                " of {} in {:.1}s",
                c.total,
                self.duration_ms as f64 / 1000.0
            ));
        }
        if again {
            line.push_str("; a new round (--again)");
        }
        let rerun = format!("`wxpush send {}`", job.name);
        if let Some(reason) = &self.stopped {
            line.push_str(&format!("; stopped: {reason}"));
            if self.stop_cause == Some(StopCause::Database) {
                line.push_str(&format!(
                    "; nobody was failed for it: the daemon resumes the run once the database answers, or re-run {rerun}; \
                     requests that were in flight are recorded as WeChat answered, or `unknown` if this process could not write that before it exited"
                ));
            } else if self.outage {
                line.push_str(&format!(
                    "; nobody was failed for it: the daemon resumes the run once WeChat answers, or re-run {rerun}"
                ));
            } else {
                line.push_str(&format!("; fix the cause, then re-run {rerun} to resume"));
            }
        } else if !self.held_elsewhere.is_empty() {
            let held: Vec<String> = self
                .held_elsewhere
                .iter()
                .map(|h| {
                    let who = if h.instance.is_empty() {
                        "an unregistered process"
                    } else {
                        h.instance.as_str()
                    };
                    format!("{who}: {} sending, {} taken", h.sending, h.taken)
                })
                .collect();
            line.push_str(&format!(
                "; still held by other instances that made no progress for a lease ({}): \
                 each settles its own once its database answers, or a survivor does when its lease lapses; \
                 `wxpush instances` shows them; re-run {rerun} later to finish the run",
                held.join("; ")
            ));
        } else if self.interrupted {
            line.push_str("; interrupted: the next send or start resumes it");
        } else if c.failed > 0 {
            line.push_str(&format!(
                "; re-run {rerun} to retry those that failed for a passing cause"
            ));
        }
        if c.expired > 0 {
            line.push_str("; expired ones are never sent");
        }
        line
    }
}

/// Prints one dry-run message (as the JSON that would be sent) or why it is
/// invalid; true when valid.
fn print_built(openid: &str, built: Result<Message, String>, out: &mut Console) -> bool {
    match built {
        Ok(m) => {
            outln!(
                out,
                "{}",
                serde_json::to_string(&m).expect("a message serialises")
            );
            true
        }
        Err(reason) => {
            outln!(out, "INVALID {openid}: {reason}");
            false
        }
    }
}

/// A dry run of a query job: the query runs as a firing would run it (read-only),
/// and each row is rendered and printed as it arrives.
async fn dry_run_query(
    job: &Job,
    query: &crate::config::JobQuery,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let now = Utc::now();
    let slot = job.schedule.latest_at_or_before(now).unwrap_or(now);
    let builtins = Builtins::at(slot, job.schedule.tz());
    let mut rows = crate::source::rows(query, job.schedule.tz());
    let mut seen = std::collections::HashSet::new();
    let (mut valid, mut invalid, mut folded) = (0u64, 0u64, 0u64);
    while let Some(row) = rows.recv().await {
        let row = row.map_err(Failure::cannot_proceed)?;
        // A row with no openid at all is nobody's duplicate (as in a run).
        let nameless = row.invalid.is_some() && row.openid.trim().is_empty();
        if !nameless && !seen.insert(row.openid.clone()) {
            folded += 1;
            continue;
        }
        let built = match (&row.invalid, OpenId::parse(&row.openid)) {
            (Some(why), _) => Err(why.clone()),
            (None, Err(e)) => Err(e.to_string()),
            (None, Ok(id)) => {
                Message::build(&job.spec, id, &row.vars, &builtins).map_err(|e| e.to_string())
            }
        };
        if print_built(&row.openid, built, out) {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    outln!(
        out,
        "{}: dry run: {valid} valid, {invalid} invalid of {} messages from source {} \
         ({folded} duplicate openids folded); nothing was sent or recorded",
        job.name,
        valid + invalid,
        query.source.name
    );
    Ok(if invalid > 0 {
        Exit::SomeFailed
    } else {
        Exit::Ok
    })
}

/// Renders and checks every message of `job` and prints it; touches nothing.
async fn dry_run_job(settings: &Settings, job: &Job, out: &mut Console) -> Result<Exit, Failure> {
    if let Some(query) = &job.query {
        return dry_run_query(job, query, out).await;
    }
    let mut audience: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let subscribed = job.audience == crate::config::Audience::Subscribed;
    // Recipients already in the database (without creating one), then the file's;
    // or, for a subscribed audience, everyone with consent on record.
    if let Some(store) =
        Store::open_existing_with(&settings.database.url, &settings.database.open_options()).await?
    {
        if subscribed {
            store.adopt_unkeyed(&settings.wechat.appid).await?;
            let template =
                crate::domain::AppTemplate::new(settings.appid_of_job(job), &job.spec.template_id);
            // The kind as last fetched; a dry run makes no API call.
            let one_time = store
                .template(&template.appid, &template.template_id)
                .await?
                .is_some_and(|(t, _)| t.kind == crate::domain::TemplateKind::OneTime);
            for (openid, vars) in store.subscribed(&template, one_time).await? {
                audience.insert(openid, vars);
            }
        } else {
            for r in store.recipients(Some(&job.name)).await? {
                if r.active {
                    audience.insert(r.openid, r.vars);
                }
            }
        }
        store.close().await;
    }
    for r in config_recipients(settings) {
        if r.job == job.name && !subscribed {
            audience.insert(r.openid.to_string(), with_name(r.vars, r.name.as_deref()));
        }
    }
    // As `send JOB` would: built-ins ({{today}}, ...) at the latest slot.
    let now = Utc::now();
    let slot = job.schedule.latest_at_or_before(now).unwrap_or(now);
    let builtins = Builtins::at(slot, job.schedule.tz());
    let (mut valid, mut invalid) = (0, 0);
    for (openid, vars) in &audience {
        let built = OpenId::parse(openid)
            .map_err(|e| e.to_string())
            .and_then(|id| {
                Message::build(&job.spec, id, vars, &builtins).map_err(|e| e.to_string())
            });
        if print_built(openid, built, out) {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    outln!(
        out,
        "{}: dry run: {valid} valid, {invalid} invalid of {} messages; nothing was sent or recorded",
        job.name,
        audience.len()
    );
    Ok(if invalid > 0 {
        Exit::SomeFailed
    } else {
        Exit::Ok
    })
}
