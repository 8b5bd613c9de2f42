//! `wxpush instances [--json]`: who is using the database, and what each holds.

use super::{Exit, Failure};
use crate::config::Settings;
use crate::storage::InstanceRow;

pub(super) async fn run(settings: Settings, json: bool) -> Result<Exit, Failure> {
    let store = super::open_for_reading(&settings).await?;
    let rows = store.instances().await?;
    store.close().await;
    if json {
        let doc: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("instances serialise");
                v["live"] = r.live().into();
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("instances serialise")
        );
    } else {
        print!("{}", table(&rows));
    }
    Ok(Exit::Ok)
}

fn table(rows: &[InstanceRow]) -> String {
    if rows.is_empty() {
        return "no wxpush instance is using this database\n".into();
    }
    let mut out = format!(
        "{:<32} {:<7} {:<8} {:<8} {:<24} {:>10} {:>6} {:>7}  {}\n",
        "INSTANCE", "PID", "ROLE", "VERSION", "STARTED", "HEARTBEAT", "TAKEN", "SENDING", "STATE"
    );
    for r in rows {
        let state = if r.live() {
            match r.runs.as_slice() {
                [] => "idle".to_owned(),
                runs => format!(
                    "sending run {}",
                    runs.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        } else {
            "dead (missed its lease; a live instance settles it)".to_owned()
        };
        out.push_str(&format!(
            "{:<32} {:<7} {:<8} {:<8} {:<24} {:>9.1}s {:>6} {:>7}  {state}\n",
            r.id,
            r.pid,
            r.role,
            r.version,
            r.started_at,
            r.heartbeat_age_ms as f64 / 1000.0,
            r.taken,
            r.sending,
        ));
    }
    out
}
