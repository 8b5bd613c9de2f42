//! A run's deliveries under the job's delivery policy: each page's sendable
//! messages are decided before they are claimed (`Store::hold_deliveries`);
//! what the policy holds is left out of the claims.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::SendBody;
use super::pass::Targeting;
use crate::config::Job;
use crate::domain::{ConsentGate, Message};
use crate::storage::{PendingDelivery, PolicyDelivery, PolicyRun, StorageError, Store};

/// The recipient's zone: a `tz` variable (a query audience's `tz` column, a
/// recipient's `tz`), else the job's.
fn zone(job: &Job, d: &PendingDelivery) -> Tz {
    d.vars
        .get("tz")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| job.schedule.tz())
}

/// Decides a page's `ready` messages under `job`'s policy; returns those that
/// may be claimed (the others are deferred, suppressed or expired, on record).
pub(super) async fn apply(
    store: &Store,
    job: &Job,
    targeting: &Targeting,
    run_id: i64,
    slot: DateTime<Utc>,
    page: &[PendingDelivery],
    ready: Vec<(i64, Message)>,
) -> Result<Vec<(i64, Message)>, StorageError> {
    let policy = &job.effective_policy;
    if policy.is_off() || ready.is_empty() {
        return Ok(ready);
    }
    let zones: HashMap<i64, Tz> = page.iter().map(|d| (d.id, zone(job, d))).collect();
    let dedupes = policy.digests;
    let items: Vec<PolicyDelivery> = ready
        .iter()
        .map(|(id, m)| PolicyDelivery {
            id: *id,
            openid: m.touser().as_ref().to_owned(),
            tz: zones.get(id).copied().unwrap_or_else(|| job.schedule.tz()),
            // Only a dedupe compares digests: a run that no policy dedupes
            // saves rendering each body twice.
            digest: if dedupes {
                SendBody::of(m, &job.spec).digest()
            } else {
                String::new()
            },
        })
        .collect();
    let messages: HashMap<i64, &Message> = ready.iter().map(|(id, m)| (*id, m)).collect();
    let render = |id: i64| {
        let body = SendBody::of(messages[&id], &job.spec);
        serde_json::to_string(&body).expect("a body serialises")
    };
    let send_window = chrono::Duration::from_std(job.send_window).unwrap_or(chrono::Duration::MAX);
    let run = PolicyRun {
        run_id,
        appid: targeting.appid.as_ref(),
        job: job.name.as_ref(),
        template_id: job.spec.template_id.as_ref(),
        one_time: matches!(targeting.gate, ConsentGate::Credit(_)),
        deadline: slot + send_window,
    };
    let held = store.hold_deliveries(run, policy, &items, &render).await?;
    if held.is_empty() {
        return Ok(ready);
    }
    let app = job.app.as_ref().map_or("default", |a| a.as_ref());
    for h in &held {
        crate::stats::policy_held(app, h.rule, h.action, 1);
    }
    tracing::info!(
        job = %job.name,
        run.id = run_id,
        held = held.len(),
        "the delivery policy held deliveries (deferred, suppressed or expired; see `runs show`)"
    );
    let held: HashSet<i64> = held.iter().map(|h| h.id).collect();
    Ok(ready
        .into_iter()
        .filter(|(id, _)| !held.contains(id))
        .collect())
}
