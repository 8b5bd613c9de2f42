//! `wxpush runs`: run history as a table or JSON.

use chrono_tz::Tz;
use std::fmt::Write;

use crate::storage::{DeliveryRow, RunRow};

/// A table of runs, newest first; slots shown in `tz_of(job)`.
pub fn runs_table(runs: &[RunRow], tz_of: impl Fn(&str) -> Option<Tz>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<16} {:<25} {:<8} {:<9} {:>7} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "ID",
        "JOB",
        "SLOT",
        "TRIGGER",
        "STATUS",
        "TOTAL",
        "SENT",
        "FAILED",
        "REFUSED",
        "INVALID",
        "UNKNOWN",
        "SKIPPED",
        "PENDING",
        "EXPIRED"
    );
    for r in runs {
        let slot = match tz_of(&r.job) {
            Some(tz) => r
                .slot
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
            None => r.slot.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        };
        let c = &r.counts;
        let _ = writeln!(
            out,
            "{:>6}  {:<16} {:<25} {:<8} {:<9} {:>7} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            r.id,
            r.job,
            slot,
            r.trigger.as_str(),
            r.status.as_str(),
            c.total,
            c.sent,
            c.failed,
            c.refused,
            c.invalid,
            c.unknown,
            c.skipped,
            c.pending,
            c.expired
        );
    }
    out
}

/// One run's header and per-recipient outcomes.
pub fn run_detail(run: &RunRow, deliveries: &[DeliveryRow]) -> String {
    let mut out = runs_table(std::slice::from_ref(run), |_| None);
    if let Some(note) = &run.note {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34} {:<8} {:>8} {:>8} {:<20} {:<12} ERRMSG",
        "OPENID", "STATUS", "ERRCODE", "ATTEMPTS", "MSGID", "PUSH_EVENT"
    );
    for d in deliveries {
        let _ = writeln!(
            out,
            "{:<34} {:<8} {:>8} {:>8} {:<20} {:<12} {}",
            d.openid,
            d.status.as_str(),
            d.errcode.map(|c| c.to_string()).unwrap_or_default(),
            d.attempts,
            d.msgid.as_deref().unwrap_or(""),
            d.push_event.as_deref().unwrap_or(""),
            d.errmsg.as_deref().unwrap_or("")
        );
    }
    out
}
