//! `wxpush runs [--job J] [--json]` and `wxpush runs show ID [--json]`.

use chrono_tz::Tz;

use super::table::{self, Align::Left, Align::Right};
use super::{Console, Exit, Failure, out, outln};
use crate::cli::{RunsArgs, RunsCommand};
use crate::config::Settings;
use crate::domain::JobName;
use crate::storage::{DeliveryRow, RunRow};

pub(super) async fn run(
    settings: Settings,
    args: RunsArgs,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let store = super::open_for_reading(&settings).await?;
    let tz_of = |job: &str| settings.job(job).map(|j| j.schedule.tz());
    // The app column appears once there is more than one app to tell apart.
    let app_of = |job: &str| {
        settings.job(job).map(|j| {
            j.app
                .as_ref()
                .map_or("default".to_owned(), |a| a.to_string())
        })
    };
    let apps = !settings.apps.is_empty();
    let with_app = |run: &RunRow| {
        let mut v = serde_json::to_value(run).expect("runs serialise");
        v["app"] = app_of(&run.job).map_or(serde_json::Value::Null, Into::into);
        v
    };
    match args.show {
        None => {
            // Any name, configured or not (a job's runs outlive it in the file);
            // what is no job name has no runs.
            let runs = match args.job.as_deref().map(JobName::parse) {
                None => store.runs(None, args.limit).await?,
                Some(Ok(job)) => store.runs(Some(&job), args.limit).await?,
                Some(Err(_)) => Vec::new(),
            };
            if args.json {
                let runs: Vec<serde_json::Value> = runs.iter().map(with_app).collect();
                outln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&runs).expect("runs serialise")
                );
            } else {
                out!(out, "{}", runs_table(&runs, tz_of, apps.then_some(&app_of)));
            }
        }
        Some(RunsCommand::Show { id, json }) => {
            let run = store.run(id).await?.ok_or_else(|| {
                Failure::usage(format!("no run with id {id} (see `wxpush runs`)"))
            })?;
            let deliveries = store.deliveries(id).await?;
            if json {
                let doc = serde_json::json!({ "run": with_app(&run), "deliveries": deliveries });
                outln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("runs serialise")
                );
            } else {
                out!(
                    out,
                    "{}",
                    run_detail(&run, &deliveries, tz_of, apps.then_some(&app_of))
                );
            }
        }
    }
    store.close().await;
    Ok(Exit::Ok)
}

/// A job's app, for the APP column.
type AppOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A table of runs, newest first; slots shown in `tz_of(job)`, else in UTC; an
/// APP column when `app_of` is given.
fn runs_table(
    runs: &[RunRow],
    tz_of: impl Fn(&str) -> Option<Tz>,
    app_of: Option<AppOf<'_>>,
) -> String {
    let rows = runs.iter().map(|r| {
        let slot = table::moment(r.slot, tz_of(&r.job));
        let c = &r.counts;
        let mut row = vec![r.id.to_string(), r.job.clone()];
        if let Some(app_of) = app_of {
            row.push(app_of(&r.job).unwrap_or_else(|| "?".into()));
        }
        row.extend([
            slot,
            r.trigger.as_str().to_owned(),
            r.status.as_str().to_owned(),
        ]);
        row.extend(
            [
                c.total,
                c.sent,
                c.failed,
                c.refused,
                c.invalid,
                c.unknown,
                c.skipped,
                c.pending,
                c.expired,
                c.deferred,
                c.suppressed,
            ]
            .map(|n| n.to_string()),
        );
        row
    });
    let mut columns = vec![("ID", Right), ("JOB", Left)];
    if app_of.is_some() {
        columns.push(("APP", Left));
    }
    columns.extend([
        ("SLOT", Left),
        ("TRIGGER", Left),
        ("STATUS", Left),
        ("TOTAL", Right),
        ("SENT", Right),
        ("FAILED", Right),
        ("REFUSED", Right),
        ("INVALID", Right),
        ("UNKNOWN", Right),
        ("SKIPPED", Right),
        ("PENDING", Right),
        ("EXPIRED", Right),
        ("DEFERRED", Right),
        ("SUPPRESSED", Right),
    ]);
    table::render(&columns, rows)
}

/// One run's header and per-recipient outcomes.
fn run_detail(
    run: &RunRow,
    deliveries: &[DeliveryRow],
    tz_of: impl Fn(&str) -> Option<Tz>,
    app_of: Option<AppOf<'_>>,
) -> String {
    let mut out = runs_table(std::slice::from_ref(run), tz_of, app_of);
    if let Some(note) = &run.note {
        out.push_str(&format!("note: {note}\n"));
    }
    if run.folded > 0 {
        out.push_str(&format!(
            "folded: {} rows of the audience query repeated an earlier row's openid (one message each)\n",
            run.folded
        ));
    }
    out.push('\n');
    let rows = deliveries.iter().map(|d| {
        vec![
            d.openid.clone(),
            d.status.as_str().to_owned(),
            d.errcode.map(|c| c.to_string()).unwrap_or_default(),
            d.attempts.to_string(),
            d.msgid.clone().unwrap_or_default(),
            d.push_event.clone().unwrap_or_default(),
            d.errmsg.clone().unwrap_or_default(),
        ]
    });
    out.push_str(&table::render(
        &[
            ("OPENID", Left),
            ("STATUS", Left),
            ("ERRCODE", Right),
            ("ATTEMPTS", Right),
            ("MSGID", Left),
            ("PUSH_EVENT", Left),
            ("ERRMSG", Left),
        ],
        rows,
    ));
    out
}
