//! `wxpush send JOB [--dry-run]`.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};

use super::{Exit, Failure, find_job};
use crate::app::{App, config_recipients};
use crate::config::{Job, Settings};
use crate::domain::{Builtins, Message, OpenId};
use crate::runner::{FireError, fire};
use crate::shutdown;
use crate::storage::{Counts, Store, Trigger};

pub(super) async fn run(settings: Settings, job: &str, dry_run: bool) -> Result<Exit, Failure> {
    let job = find_job(&settings, job)?.clone();
    if dry_run {
        return dry_run_job(&settings, &job).await;
    }
    let app = App::build(settings).await?;
    app.sync_recipients().await?;
    let shutdown = shutdown::on_signals();
    // A manual send is its own slot, unless an unfinished run is resumed instead.
    let slot = Utc::now().trunc_subsecs(3);
    let fired = fire(
        &app.store,
        &app.deliverer,
        &job,
        Some((slot, Trigger::Manual)),
        &shutdown,
    )
    .await
    .map_err(|e| match e {
        FireError::Locked(e) => Failure::cannot_proceed(e),
        other => Failure::cannot_proceed(other),
    })?;
    app.store.close().await;
    if fired.reports.is_empty() {
        let note = fired
            .already_done
            .map_or_else(String::new, |id| format!(" (run {id} is complete)"));
        println!("{}: nothing to send{note}", job.name);
        return Ok(Exit::Ok);
    }

    let mut total = Counts::default();
    for r in &fired.reports {
        let c = &r.counts;
        total.total += c.total;
        total.sent += c.sent;
        total.failed += c.failed;
        total.refused += c.refused;
        total.invalid += c.invalid;
        total.unknown += c.unknown;
        total.pending += c.pending;
    }
    let ids: Vec<String> = fired.reports.iter().map(|r| r.run_id.to_string()).collect();
    let ms: u128 = fired.reports.iter().map(|r| r.duration_ms).sum();
    let stopped = fired.reports.iter().find_map(|r| r.stopped.clone());
    let interrupted = fired.reports.iter().any(|r| r.interrupted);
    let mut line = format!(
        "{}: run {}: {} sent, {} failed, {} refused, {} invalid, {} unknown, {} pending of {} in {:.1}s",
        job.name,
        ids.join(","),
        total.sent,
        total.failed,
        total.refused,
        total.invalid,
        total.unknown,
        total.pending,
        total.total,
        ms as f64 / 1000.0
    );
    if let Some(reason) = &stopped {
        line.push_str(&format!("; stopped: {reason}"));
    } else if interrupted {
        line.push_str("; interrupted: the next send or start resumes it");
    }
    println!("{line}");
    Ok(if stopped.is_some() || interrupted {
        Exit::CannotProceed
    } else if total.sent < total.total {
        Exit::SomeFailed
    } else {
        Exit::Ok
    })
}

/// Renders and checks every message of `job` and prints it; touches nothing.
async fn dry_run_job(settings: &Settings, job: &Job) -> Result<Exit, Failure> {
    let mut audience: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Recipients already in the database (without creating one), then the file's.
    if let Some(store) = Store::open_existing(&settings.database.url).await? {
        for r in store.recipients(Some(job.name.as_ref())).await? {
            if r.active {
                audience.insert(r.openid, r.vars);
            }
        }
        store.close().await;
    }
    for r in config_recipients(settings) {
        if r.job == job.name.as_ref() {
            let mut vars = r.vars;
            if let Some(name) = r.name {
                vars.entry("name".into()).or_insert(name);
            }
            audience.insert(r.openid, vars);
        }
    }
    let builtins = Builtins::at(Utc::now(), job.schedule.tz());
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
