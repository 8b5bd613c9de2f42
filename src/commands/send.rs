//! `wxpush send JOB [--dry-run]`.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use serde::Serialize;

use super::{Exit, Failure, find_job};
use crate::app::{App, config_recipients};
use crate::config::{Job, Settings};
use crate::delivery::RunReport;
use crate::domain::{Builtins, Message, OpenId, with_name};
use crate::runner::{FireError, fire};
use crate::shutdown;
use crate::storage::{Counts, Store, Trigger};

pub(super) async fn run(
    settings: Settings,
    job: &str,
    again: bool,
    dry_run: bool,
    json: bool,
) -> Result<Exit, Failure> {
    let job = find_job(&settings, job)?.clone();
    if dry_run {
        return dry_run_job(&settings, &job).await;
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
    let app = App::build_as(settings, "send").await?;
    app.sync_recipients().await?;
    let shutdown = shutdown::on_signals();
    let alive = tokio_util::sync::CancellationToken::new();
    let heartbeat = app.keep_alive(alive.clone());
    let fired = fire(
        &app.store,
        &app.deliverer,
        &job,
        Some((slot, Trigger::Manual)),
        again,
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
    if fired.reports.is_empty() && fired.cancelled {
        println!(
            "{}: stopped before the run started; nothing was sent",
            job.name
        );
        return Ok(Exit::CannotProceed);
    }
    let local = job.schedule.local(slot);
    if fired.too_late && fired.reports.is_empty() {
        println!(
            "{}: the latest slot ({local}) passed more than its send window ({}) ago and never ran; nothing was sent. \
             `wxpush send {} --again` sends a new round now",
            job.name,
            humantime::format_duration(job.send_window),
            job.name
        );
        return Ok(Exit::CannotProceed);
    }
    if fired.reports.is_empty() {
        let note = fired.already_done.map_or_else(String::new, |id| {
            format!(
                " (run {id} for the slot {local} is complete; `wxpush send {} --again` sends a new round)",
                job.name
            )
        });
        println!("{}: nothing to send{note}", job.name);
        return Ok(Exit::Ok);
    }

    let summary = Summary::of(job.name.as_ref(), &fired.reports, app.tokens.fetches());
    if json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("a summary serialises")
        );
    } else {
        println!("{}", summary.line(&job, again));
    }
    let c = &summary.counts;
    Ok(if summary.stopped.is_some() || summary.interrupted {
        Exit::CannotProceed
    } else if c.sent + c.skipped < c.total {
        Exit::SomeFailed
    } else {
        Exit::Ok
    })
}

/// What `wxpush send` reports: every run it drained, added up.
#[derive(Debug, Serialize)]
struct Summary {
    job: String,
    runs: Vec<i64>,
    counts: Counts,
    stopped: Option<String>,
    outage: bool,
    interrupted: bool,
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
        }
        // The run that did the most requests speaks for the latency.
        let busiest = reports.iter().max_by_key(|r| r.requests);
        Self {
            job: job.to_owned(),
            runs: reports.iter().map(|r| r.run_id).collect(),
            counts,
            stopped: reports.iter().find_map(|r| r.stopped.clone()),
            outage: reports.iter().any(|r| r.outage),
            interrupted: reports.iter().any(|r| r.interrupted),
            duration_ms: reports.iter().map(|r| r.duration_ms).sum(),
            requests: reports.iter().map(|r| r.requests).sum(),
            latency_p50_ms: busiest.map_or(0.0, |r| r.latency_p50_ms),
            latency_p99_ms: busiest.map_or(0.0, |r| r.latency_p99_ms),
            token_requests,
        }
    }

    /// One line: the counts, then what (if anything) is left for the operator to do.
    fn line(&self, job: &Job, again: bool) -> String {
        let c = &self.counts;
        let ids: Vec<String> = self.runs.iter().map(i64::to_string).collect();
        let mut line = format!(
            "{}: run {}: {} sent, {} failed, {} refused, {} invalid, {} unknown, {} skipped, {} pending",
            self.job,
            ids.join(","),
            c.sent,
            c.failed,
            c.refused,
            c.invalid,
            c.unknown,
            c.skipped,
            c.pending,
        );
        if c.expired > 0 {
            line.push_str(&format!(", {} expired", c.expired));
        }
        line.push_str(&format!(
            " of {} in {:.1}s",
            c.total,
            self.duration_ms as f64 / 1000.0
        ));
        if again {
            line.push_str("; a new round (--again)");
        }
        let rerun = format!("`wxpush send {}`", job.name);
        if let Some(reason) = &self.stopped {
            line.push_str(&format!("; stopped: {reason}"));
            if self.outage {
                line.push_str(&format!(
                    "; nobody was failed for it: the daemon resumes the run once WeChat answers, or re-run {rerun}"
                ));
            } else {
                line.push_str(&format!("; fix the cause, then re-run {rerun} to resume"));
            }
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

/// Renders and checks every message of `job` and prints it; touches nothing.
async fn dry_run_job(settings: &Settings, job: &Job) -> Result<Exit, Failure> {
    let mut audience: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let subscribed = job.audience == crate::config::Audience::Subscribed;
    // Recipients already in the database (without creating one), then the file's;
    // or, for a subscribed audience, everyone with consent on record.
    if let Some(store) =
        Store::open_existing_with(&settings.database.url, settings.database.max_connections).await?
    {
        if subscribed {
            let template = job.spec.template_id.as_ref();
            // The kind as last fetched; a dry run makes no API call.
            let one_time = store
                .template(template)
                .await?
                .is_some_and(|(t, _)| t.kind == crate::domain::TemplateKind::OneTime);
            for (openid, vars) in store.subscribed(template, one_time).await? {
                audience.insert(openid, vars);
            }
        } else {
            for r in store.recipients(Some(job.name.as_ref())).await? {
                if r.active {
                    audience.insert(r.openid, r.vars);
                }
            }
        }
        store.close().await;
    }
    for r in config_recipients(settings) {
        if r.job == job.name.as_ref() && !subscribed {
            audience.insert(r.openid, with_name(r.vars, r.name.as_deref()));
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
        match built {
            Ok(m) => {
                valid += 1;
                println!(
                    "{}",
                    serde_json::to_string(&m).expect("a message serialises")
                );
            }
            Err(reason) => {
                invalid += 1;
                println!("INVALID {openid}: {reason}");
            }
        }
    }
    println!(
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
