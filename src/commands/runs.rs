//! `wxpush runs [--job J] [--json]` and `wxpush runs show ID [--json]`.

use super::{Exit, Failure};
use crate::cli::{RunsArgs, RunsCommand};
use crate::config::Settings;
use crate::history;

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
                print!("{}", history::runs_table(&runs, tz_of));
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
                print!("{}", history::run_detail(&run, &deliveries));
            }
        }
    }
    store.close().await;
    Ok(Exit::Ok)
}
