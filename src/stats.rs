//! Prometheus metrics: names and labels in one place. Without an installed
//! recorder (every command but `run`), each call is a no-op.

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::Status;

/// Installs the global recorder; call once, in the daemon.
///
/// No series carries a `job` or `instance` label of wxpush's own: Prometheus
/// sets those to the scrape target's, and with its usual `honor_labels:
/// false` it renames clashing ones (`exported_job`), which rules then fail to
/// match. A wxpush job is `wxpush_job`; this process's id in the instances
/// table (new at each start) is on one series, `wxpush_instance_info`, so
/// that a restart starts no new series.
pub(crate) fn install(instance: &str) -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0])
        .ok()?
        // A send's lag is milliseconds when all is well: finer at the bottom.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(ON_DEMAND_LAG.to_owned()),
            &[
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
            ],
        )
        .ok()?
        .install_recorder()
        .ok()?;
    describe();
    gauge!(
        "wxpush_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("WXPUSH_COMMIT")
    )
    .set(1.0);
    gauge!("wxpush_config_last_reload_successful").set(1.0);
    gauge!("wxpush_instance_info", "wxpush_instance" => instance.to_owned()).set(1.0);
    metrics_process::Collector::default().describe();
    Some(handle)
}

/// The standard `process_*` series (CPU seconds, resident and virtual
/// memory, open and maximum file descriptors, start time), read now: called
/// at each scrape.
pub(crate) fn process() {
    metrics_process::Collector::default().collect();
}

/// `# HELP` for every series, so that a dashboard or an operator reading
/// `/metrics` learns what each one counts.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_policy();
    describe_gauge!(
        "wxpush_build_info",
        "Always 1; labels name the version and the commit built."
    );
    describe_counter!(
        "wxpush_sends_total",
        "Deliveries that reached an outcome, by job, outcome (sent, failed, unknown, refused, invalid, skipped, expired) and WeChat errcode."
    );
    describe_counter!(
        "wxpush_api_requests_total",
        "Requests to POST /v1/sends by outcome: accepted (202), replayed (200, the same key and body), idempotency_key_reused (422), or the refusal's code (invalid, not_found, malformed_json, missing_idempotency_key, bad_idempotency_key, too_large, unavailable); unauthorized counts a 401 on any /v1/sends route."
    );
    describe_counter!(
        "wxpush_on_demand_sends_total",
        "Sends on demand that ended, by app, outcome (sent, failed, refused, invalid, unknown, skipped, expired) and WeChat errcode."
    );
    describe_gauge!(
        "wxpush_on_demand_queue",
        "Sends on demand waiting, by state: scheduled (their send_at is ahead) or queued (due, not yet taken); read from the database at each scrape."
    );
    describe_histogram!(
        ON_DEMAND_LAG,
        Unit::Seconds,
        "From a send on demand's send_at to WeChat's answer."
    );
    describe_counter!(
        "wxpush_send_retries_total",
        "Transient send failures retried, by job."
    );
    describe_counter!(
        "wxpush_token_refreshes_total",
        "access_tokens fetched from WeChat."
    );
    describe_counter!(
        "wxpush_token_failures_total",
        "access_token fetches that failed for good."
    );
    describe_histogram!(
        "wxpush_run_duration_seconds",
        Unit::Seconds,
        "How long runs took, by job."
    );
    describe_gauge!(
        "wxpush_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the job's last run ended with every delivery final (unix time)."
    );
    describe_gauge!(
        "wxpush_previous_fire_timestamp_seconds",
        Unit::Seconds,
        "The job's most recent scheduled slot that has passed (unix time)."
    );
    describe_gauge!(
        "wxpush_instance_info",
        "Always 1; wxpush_instance is this process's id in `wxpush instances` (new at each start)."
    );
    describe_gauge!(
        "wxpush_job_info",
        "Always 1, for each job of the configuration: its app and time zone."
    );
    describe_gauge!(
        "wxpush_job_utc_offset_seconds",
        Unit::Seconds,
        "The job's time zone's offset from UTC, for alerts that show its times."
    );
    describe_gauge!(
        "wxpush_schedule_loaded_timestamp_seconds",
        Unit::Seconds,
        "When the job's cron line and time zone were first loaded by a daemon (unix time): slots before it were never due."
    );
    describe_gauge!(
        "wxpush_next_fire_timestamp_seconds",
        Unit::Seconds,
        "When the job fires next (unix time)."
    );
    describe_gauge!("wxpush_recipients", "Recipients of the job's latest run.");
    describe_counter!(
        "wxpush_runs_stopped_total",
        "Runs stopped early, by job and reason (outage: WeChat unreachable; database: the database failed, resumed once it answers; fault: token, quota, account; audience: the audience query failed)."
    );
    describe_gauge!(
        "wxpush_runs_unfinished",
        "Runs of the job not finished, by status: running (sending, or left so by a crash), interrupted (by a shutdown), stopped (by a fault or an outage); read from the database at each scrape. Each is resumed by the next start, send or another instance."
    );
    describe_counter!(
        "wxpush_runs_interrupted_total",
        "Runs a shutdown (SIGTERM, SIGINT) interrupted mid-send, by job: recorded `interrupted`, resumed by the next start, `send` or another instance."
    );
    describe_counter!(
        "wxpush_audience_query_failures_total",
        "Audience queries that gave no audience, by job and reason (unreachable, query, timeout, no_openid); nobody was messaged."
    );
    describe_counter!(
        "wxpush_intake_reports_total",
        "Subscription reports through POST /v1/subscriptions, by outcome (recorded, invalid, limited, wechat_error)."
    );
    describe_counter!(
        "wxpush_push_events_total",
        "Event pushes from WeChat applied, by event and whether it was a duplicate."
    );
    describe_gauge!(
        "wxpush_callback_served",
        "1 when /wechat/callback is served (the intake is on with a Token), so WeChat's event pushes are expected."
    );
    describe_counter!(
        "wxpush_callback_rejected_total",
        "Callback requests refused, by reason (signature, decrypt, body)."
    );
    describe_gauge!(
        "wxpush_instances_live",
        "wxpush instances heart-beating on the database."
    );
    describe_counter!(
        "wxpush_instances_rescued_total",
        "Dead instances whose deliveries this instance settled."
    );
    describe_gauge!(
        "wxpush_ready",
        "1 when /readyz answers ready (database, last firings, token), else 0."
    );
    describe_gauge!(
        "wxpush_config_last_reload_successful",
        "1 when the last configuration reload was applied, 0 when it was refused."
    );
    describe_counter!(
        "wxpush_reload_failures_total",
        "Configuration reloads refused (the running configuration stayed)."
    );
    describe_counter!(
        "wxpush_pruned_total",
        "Rows deleted by [retention], by table."
    );
}

/// A configuration reload was applied (`true`) or refused.
pub(crate) fn reload(applied: bool) {
    gauge!("wxpush_config_last_reload_successful").set(if applied { 1.0 } else { 0.0 });
    if !applied {
        counter!("wxpush_reload_failures_total").increment(1);
    }
}

/// What `/readyz` found.
pub(crate) fn ready(ready: bool) {
    gauge!("wxpush_ready").set(if ready { 1.0 } else { 0.0 });
}

/// A callback request was refused; `reason` is `signature`, `decrypt` or `body`.
pub(crate) fn callback_rejected(reason: &'static str) {
    counter!("wxpush_callback_rejected_total", "reason" => reason).increment(1);
}

/// Rows of `table` deleted by retention.
pub(crate) fn pruned(table: &'static str, n: u64) {
    counter!("wxpush_pruned_total", "table" => table).increment(n);
}

/// The latest slot of `job` that has passed.
pub(crate) fn previous_fire(job: &str, at: DateTime<Utc>) {
    gauge!("wxpush_previous_fire_timestamp_seconds", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .set(at.timestamp() as f64);
}

/// Which app each job sends for, for the `app` label on job series.
static APPS: std::sync::RwLock<Option<std::collections::HashMap<String, String>>> =
    std::sync::RwLock::new(None);

/// Records which app each job of `jobs` sends for (`default` for `[wechat]`);
/// called when the schedule is loaded and on reload. Each job gets
/// `wxpush_job_info` (a dashboard lists the jobs of the configuration from
/// it, before any has run) and its counters at 0: a counter that first
/// appears at 1 hides that first step from `increase()` and `rate()`.
pub(crate) fn job_apps(jobs: &[crate::config::Job]) {
    let map = jobs
        .iter()
        .map(|j| {
            let app = j.app.as_ref().map_or("default", |a| a.as_ref());
            (j.name.to_string(), app.to_owned())
        })
        .collect();
    *APPS.write().expect("never poisoned") = Some(map);
    for j in jobs {
        let (job, app) = (j.name.to_string(), app_of(j.name.as_ref()));
        let tz = j.schedule.tz();
        gauge!("wxpush_job_info", "wxpush_job" => job.clone(), "app" => app.clone(),
            "timezone" => tz.name().to_owned())
        .set(1.0);
        // Alerts show times in the job's zone with it (Prometheus templates
        // know only UTC). China keeps no daylight saving time; elsewhere this
        // is the offset at the last load.
        use chrono::Offset;
        let offset = Utc::now()
            .with_timezone(&tz)
            .offset()
            .fix()
            .local_minus_utc();
        gauge!("wxpush_job_utc_offset_seconds", "wxpush_job" => job.clone(), "app" => app.clone())
            .set(f64::from(offset));
        for outcome in [
            Status::Sent,
            Status::Failed,
            Status::Refused,
            Status::Invalid,
            Status::Unknown,
            Status::Skipped,
            Status::Expired,
        ] {
            counter!("wxpush_sends_total", "wxpush_job" => job.clone(), "app" => app.clone(),
                "outcome" => outcome.as_str(), "errcode" => "0")
            .increment(0);
        }
        for reason in ["outage", "database", "fault", "audience"] {
            counter!("wxpush_runs_stopped_total", "wxpush_job" => job.clone(),
                "app" => app.clone(), "reason" => reason)
            .increment(0);
        }
        counter!("wxpush_runs_interrupted_total", "wxpush_job" => job.clone(), "app" => app.clone())
            .increment(0);
        counter!("wxpush_send_retries_total", "wxpush_job" => job.clone(), "app" => app.clone())
            .increment(0);
        if j.query.is_some() {
            for reason in ["unreachable", "query", "timeout", "no_openid"] {
                counter!("wxpush_audience_query_failures_total", "wxpush_job" => job.clone(),
                    "app" => app.clone(), "reason" => reason)
                .increment(0);
            }
        }
    }
}

/// When `job`'s cron line and zone were first loaded by a daemon: a slot
/// before it was never due (a new install, a new or changed job).
pub(crate) fn schedule_loaded(job: &str, since: DateTime<Utc>) {
    gauge!("wxpush_schedule_loaded_timestamp_seconds", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .set(since.timestamp() as f64);
}

/// The `app` label of `job`'s series.
fn app_of(job: &str) -> String {
    APPS.read()
        .expect("never poisoned")
        .as_ref()
        .and_then(|m| m.get(job).cloned())
        .unwrap_or_else(|| "default".to_owned())
}

/// One delivery reached a final (or put-back) status.
pub(crate) fn delivery(job: &str, status: Status, errcode: Option<i64>) {
    counter!(
        "wxpush_sends_total",
        "wxpush_job" => job.to_owned(),
        "app" => app_of(job),
        "outcome" => status.as_str(),
        "errcode" => errcode.unwrap_or(0).to_string()
    )
    .increment(1);
}

/// The counter of `job`'s accepted sends, registered once per run: the send path
/// counts most deliveries here without building labels each time.
pub(crate) fn sent_counter(job: &str) -> metrics::Counter {
    counter!(
        "wxpush_sends_total",
        "wxpush_job" => job.to_owned(),
        "app" => app_of(job),
        "outcome" => Status::Sent.as_str(),
        "errcode" => "0"
    )
}

/// Dead instances whose deliveries this one settled.
pub(crate) fn instances_rescued(n: u64) {
    counter!("wxpush_instances_rescued_total").increment(n);
}

/// Instances heart-beating within their lease, this one included.
pub(crate) fn live_instances(n: u64) {
    gauge!("wxpush_instances_live").set(n as f64);
}

/// A transient failure is being retried.
pub(crate) fn retry(job: &str) {
    counter!("wxpush_send_retries_total", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .increment(1);
}

/// A token was fetched from WeChat.
pub(crate) fn token_refresh() {
    counter!("wxpush_token_refreshes_total").increment(1);
}

/// A token request failed for good.
pub(crate) fn token_failure() {
    counter!("wxpush_token_failures_total").increment(1);
}

/// A run of `job` ended after `took`; `done` when every delivery is final.
pub(crate) fn run_ended(job: &str, took: Duration, done: bool) {
    histogram!("wxpush_run_duration_seconds", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .record(took.as_secs_f64());
    if done {
        gauge!("wxpush_last_success_timestamp_seconds", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
        .set(Utc::now().timestamp() as f64);
    }
}

/// How many recipients the latest run of `job` had.
pub(crate) fn recipients(job: &str, n: u64) {
    gauge!("wxpush_recipients", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .set(n as f64);
}

/// When `job` fires next.
pub(crate) fn next_fire(job: &str, at: DateTime<Utc>) {
    gauge!("wxpush_next_fire_timestamp_seconds", "wxpush_job" => job.to_owned(),
        "app" => app_of(job))
    .set(at.timestamp() as f64);
}

/// Deliveries that expired unsent when their run's send window closed.
pub(crate) fn expired(job: &str, n: u64) {
    counter!(
        "wxpush_sends_total",
        "wxpush_job" => job.to_owned(),
        "app" => app_of(job),
        "outcome" => Status::Expired.as_str(),
        "errcode" => "0"
    )
    .increment(n);
}

/// A job's audience query failed (`reason`: unreachable, query, timeout, no_openid).
pub(crate) fn audience_query_failed(job: &str, reason: &'static str) {
    counter!("wxpush_audience_query_failures_total", "wxpush_job" => job.to_owned(),
        "app" => app_of(job), "reason" => reason)
    .increment(1);
}

/// A run of `job` stopped early, and why (`outage`, `database`, `fault`, `audience`).
pub(crate) fn run_stopped(job: &str, reason: &'static str) {
    counter!("wxpush_runs_stopped_total", "wxpush_job" => job.to_owned(),
        "app" => app_of(job), "reason" => reason)
    .increment(1);
}

/// Unfinished runs by job and status, as `Store::unfinished_by_status` reads
/// them: every configured job gets each status, 0 when it has none.
pub(crate) fn unfinished_runs(counts: &[(String, String, i64)]) {
    let jobs: Vec<String> = APPS
        .read()
        .expect("never poisoned")
        .as_ref()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for job in &jobs {
        for status in ["running", "interrupted", "stopped"] {
            let n = counts
                .iter()
                .find(|(j, s, _)| j == job && s == status)
                .map_or(0, |(_, _, n)| *n);
            gauge!("wxpush_runs_unfinished", "wxpush_job" => job.clone(), "app" => app_of(job),
                "status" => status)
            .set(n as f64);
        }
    }
}

/// A run of `job` was interrupted by a shutdown.
pub(crate) fn run_interrupted(job: &str) {
    counter!("wxpush_runs_interrupted_total", "wxpush_job" => job.to_owned(), "app" => app_of(job))
        .increment(1);
}

/// Deliveries of `job` skipped at their claim for lack of consent, in one batch.
pub(crate) fn skipped(job: &str, n: u64) {
    counter!(
        "wxpush_sends_total",
        "wxpush_job" => job.to_owned(),
        "app" => app_of(job),
        "outcome" => Status::Skipped.as_str(),
        "errcode" => "0"
    )
    .increment(n);
}

/// A subscription report through the intake API: `outcome` is `recorded`,
/// `invalid` (400/413), `limited` (429) or `wechat_error` (502).
pub(crate) fn intake_report(outcome: &'static str) {
    counter!("wxpush_intake_reports_total", "outcome" => outcome).increment(1);
}

/// Whether `/wechat/callback` is served (the intake is on and has a Token):
/// WeChat's event pushes are then expected.
pub(crate) fn callback_served(served: bool) {
    gauge!("wxpush_callback_served").set(if served { 1.0 } else { 0.0 });
    if served {
        // At 0 from the start, so that pushes that never come after a
        // restart are seen as none, not as no series.
        for event in [
            "subscribe_msg_popup_event",
            "subscribe_msg_change_event",
            "subscribe_msg_sent_event",
        ] {
            for duplicate in ["false", "true"] {
                counter!("wxpush_push_events_total", "event" => event, "duplicate" => duplicate)
                    .increment(0);
            }
        }
    }
}

/// A consent or sent event from WeChat's push; `duplicate` when already applied.
pub(crate) fn push_event(event: &str, duplicate: bool) {
    counter!(
        "wxpush_push_events_total",
        "event" => event.to_owned(),
        "duplicate" => if duplicate { "true" } else { "false" }
    )
    .increment(1);
}

/// The lag histogram's name (its buckets are its own).
const ON_DEMAND_LAG: &str = "wxpush_on_demand_lag_seconds";

/// A `POST /v1/sends` answered: `outcome` as `wxpush_api_requests_total` lists.
pub(crate) fn api_request(outcome: &'static str) {
    counter!("wxpush_api_requests_total", "outcome" => outcome).increment(1);
}

/// `n` sends on demand of the app labelled `app` ended in `status`.
pub(crate) fn on_demand_outcome(
    app: &str,
    status: crate::domain::SendStatus,
    errcode: Option<i64>,
    n: u64,
) {
    counter!(
        "wxpush_on_demand_sends_total",
        "app" => app.to_owned(),
        "outcome" => status.as_str(),
        "errcode" => errcode.unwrap_or(0).to_string()
    )
    .increment(n);
}

/// A send on demand answered `lag` after its `send_at`.
pub(crate) fn on_demand_lag(lag: chrono::Duration) {
    histogram!(ON_DEMAND_LAG).record(lag.as_seconds_f64().max(0.0));
}

/// The sends on demand waiting: `scheduled` for later, `queued` due now.
pub(crate) fn on_demand_queue(scheduled: i64, queued: i64) {
    gauge!("wxpush_on_demand_queue", "state" => "scheduled").set(scheduled as f64);
    gauge!("wxpush_on_demand_queue", "state" => "queued").set(queued as f64);
}

/// The delivery policy's series.
fn describe_policy() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "wxpush_policy_held_total",
        "Deliveries and sends a delivery policy held, by app, reason (quiet_hours, cap, dedupe) and action (defer, drop, or expired when the time it could go was past its deadline)."
    );
    describe_gauge!(
        "wxpush_policy_deferred",
        "Deliveries and sends waiting deferred by a policy (quiet hours, a cap); read from the database at each scrape."
    );
}

/// `n` deliveries or sends of the app labelled `app` held by `rule`: deferred,
/// dropped, or (`None`) expired, their time past their deadline.
pub(crate) fn policy_held(
    app: &str,
    rule: crate::domain::policy::Rule,
    action: Option<crate::domain::policy::Action>,
    n: u64,
) {
    counter!(
        "wxpush_policy_held_total",
        "app" => app.to_owned(),
        "reason" => rule.as_str(),
        "action" => action.map_or("expired", |a| a.as_str())
    )
    .increment(n);
}

/// The deliveries and sends waiting deferred by a policy.
pub(crate) fn policy_deferred(n: i64) {
    gauge!("wxpush_policy_deferred").set(n as f64);
}
