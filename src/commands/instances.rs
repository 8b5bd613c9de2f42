//! `wxpush instances [--json]`: who is using the database, and what each holds.

use super::table::{self, Align::Left, Align::Right};
use super::{Console, Exit, Failure, out, outln};
use crate::config::Settings;
use crate::storage::InstanceRow;

pub(super) async fn run(
    settings: Settings,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
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
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).expect("instances serialise")
        );
    } else {
        out!(out, "{}", table(&rows, table::settings_zone(&settings)));
    }
    Ok(Exit::Ok)
}

fn table(rows: &[InstanceRow], tz: Option<chrono_tz::Tz>) -> String {
    if rows.is_empty() {
        return "no wxpush instance is using this database\n".into();
    }
    let rows = rows.iter().map(|r| {
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
        vec![
            r.id.clone(),
            r.pid.to_string(),
            r.role.clone(),
            r.version.clone(),
            table::stored_moment(&r.started_at, tz),
            format!("{:.1}s", r.heartbeat_age_ms as f64 / 1000.0),
            r.taken.to_string(),
            r.sending.to_string(),
            state,
        ]
    });
    table::render(
        &[
            ("INSTANCE", Left),
            ("PID", Left),
            ("ROLE", Left),
            ("VERSION", Left),
            ("STARTED", Left),
            ("HEARTBEAT", Right),
            ("TAKEN", Right),
            ("SENDING", Right),
            ("STATE", Left),
        ],
        rows,
    )
}
