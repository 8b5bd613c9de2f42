//! `wxpush runs [--job J] [--json]` and `wxpush runs show ID [--json]`.

use chrono_tz::Tz;

use super::table::{self, Align::Left, Align::Right};
use super::{Exit, Failure};
use crate::cli::{RunsArgs, RunsCommand};
use crate::config::Settings;
use crate::storage::{DeliveryRow, RunRow};

pub(super) async fn run(settings: Settings, args: RunsArgs) -> Result<Exit, Failure> {
    let store = super::open_for_reading(&settings).await?;
    let tz_of = |job: &str| settings.job(job).map(|j| j.schedule.tz());
    match args.show {
        None => {
            let runs = store.runs(args.job.as_deref(), args.limit).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).expect("runs serialise")
                );
            } else {
                print!("{}", runs_table(&runs, tz_of));
            }
        }
        Some(RunsCommand::Show { id, json }) => {
            let run = store.run(id).await?.ok_or_else(|| {
                Failure::usage(format!("no run with id {id} (see `wxpush runs`)"))
            })?;
            let deliveries = store.deliveries(id).await?;
            if json {
                let doc = serde_json::json!({ "run": run, "deliveries": deliveries });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("runs serialise")
                );
            } else {
                print!("{}", run_detail(&run, &deliveries));
            }
        }
    }
    store.close().await;
    Ok(Exit::Ok)
}

/// A table of runs, newest first; slots shown in `tz_of(job)`, else in UTC.
fn runs_table(runs: &[RunRow], tz_of: impl Fn(&str) -> Option<Tz>) -> String {
    let rows = runs.iter().map(|r| {
        let slot = match tz_of(&r.job) {
            Some(tz) => r
                .slot
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
            None => r.slot.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        };
        let c = &r.counts;
        let mut row = vec![
            r.id.to_string(),
            r.job.clone(),
            slot,
            r.trigger.as_str().to_owned(),
            r.status.as_str().to_owned(),
        ];
        row.extend(
            [
                c.total, c.sent, c.failed, c.refused, c.invalid, c.unknown, c.skipped, c.pending,
                c.expired,
            ]
            .map(|n| n.to_string()),
        );
        row
    });
    table::render(
        &[
            ("ID", Right),
            ("JOB", Left),
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
        ],
        rows,
    )
}

/// One run's header and per-recipient outcomes.
fn run_detail(run: &RunRow, deliveries: &[DeliveryRow]) -> String {
    let mut out = runs_table(std::slice::from_ref(run), |_| None);
    if let Some(note) = &run.note {
        out.push_str(&format!("note: {note}\n"));
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
