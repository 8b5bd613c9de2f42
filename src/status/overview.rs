//! The overview: each app's token, each job's next fire and latest slot, the
//! instances and their heartbeats, and the sends due within the hour.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, TimeZone, Utc};
use maud::{Markup, html};
use serde::Serialize;

use super::ui::{self, Lang};
use super::{Problem, Status, html_answer, json_answer, params, prepare};
use crate::storage::{InstanceRow, RunRow};
use crate::wechat::ApiQuota;

/// Sends due within this long are listed.
const SOON: chrono::Duration = chrono::Duration::hours(1);

/// The most sends due soon listed.
const SOON_LIMIT: u32 = 50;

#[derive(Debug, Serialize)]
struct Overview {
    now: DateTime<Utc>,
    apps: Vec<AppView>,
    jobs: Vec<JobView>,
    instances: Vec<InstanceRow>,
    sends_due_within_an_hour: Vec<DueView>,
}

#[derive(Debug, Serialize)]
struct AppView {
    app: String,
    appid: String,
    /// Whether a token is cached, and until when WeChat said it lasts (never the token).
    token_cached: bool,
    token_fetched_at: Option<DateTime<Utc>>,
    token_expires_at: Option<DateTime<Utc>>,
    /// `subscribeMessage.send`'s daily quota, as WeChat's getApiQuota last answered.
    send_quota: Option<ApiQuota>,
    /// Why the quota is not shown, when WeChat did not give it.
    send_quota_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct JobView {
    job: String,
    app: String,
    schedule: String,
    next_fire: Option<String>,
    /// The latest run's slot, in the job's zone.
    latest_slot: Option<String>,
    latest_run: Option<RunRow>,
    /// Seconds since the job's last run that finished (`done`).
    last_complete_age_s: Option<i64>,
    /// Deliveries of the latest run not sent yet.
    pending: u64,
    /// Its messages a delivery policy holds for later.
    deferred: i64,
}

#[derive(Debug, Serialize)]
struct DueView {
    id: i64,
    appid: String,
    to: String,
    send_at: String,
    job: Option<String>,
}

async fn load(status: &Status) -> Result<Overview, Problem> {
    let app = &status.app;
    let settings = &app.settings;
    let store = &app.store;
    let now = Utc::now();
    let mut apps = Vec::new();
    let named = std::iter::once((None, &settings.wechat))
        .chain(settings.apps.iter().map(|a| (Some(&a.name), &a.wechat)));
    for (name, wechat) in named {
        let quota = status.quota(name).await;
        let token = store
            .load_token(&wechat.appid, wechat.token_source.as_str())
            .await?;
        let at = |s: i64| Utc.timestamp_opt(s, 0).single();
        apps.push(AppView {
            app: name.map_or("default".to_owned(), ToString::to_string),
            send_quota: quota.as_ref().ok().copied(),
            send_quota_error: quota.err(),
            appid: wechat.appid.to_string(),
            token_cached: token
                .as_ref()
                .is_some_and(|t| t.expires_at > now.timestamp()),
            token_fetched_at: token.as_ref().and_then(|t| at(t.fetched_at)),
            token_expires_at: token.as_ref().and_then(|t| at(t.expires_at)),
        });
    }
    let latest = status.counted(store.latest_runs().await?).await?;
    let finished = store.last_finished().await?;
    let deferred = store.deferred_by_job().await?;
    let jobs = settings
        .jobs
        .iter()
        .map(|j| {
            let name = j.name.as_ref();
            let run = latest.iter().find(|r| r.job == name).cloned();
            JobView {
                job: name.to_owned(),
                app: status.app_of_job(name).unwrap_or_default(),
                schedule: j.schedule.key(),
                next_fire: j.schedule.next_after(now).map(|t| j.schedule.local(t)),
                pending: run.as_ref().map_or(0, |r| r.counts.pending),
                latest_slot: run.as_ref().map(|r| j.schedule.local(r.slot)),
                latest_run: run,
                last_complete_age_s: finished
                    .iter()
                    .find(|(job, _)| job == name)
                    .and_then(|(_, at)| at.parse::<DateTime<Utc>>().ok())
                    .map(|at| (now - at).num_seconds()),
                deferred: deferred
                    .iter()
                    .find(|(job, _)| job.as_deref() == Some(name))
                    .map_or(0, |(_, n)| *n),
            }
        })
        .collect();
    let due = store.sends_due_before(now + SOON, SOON_LIMIT).await?;
    Ok(Overview {
        now,
        apps,
        jobs,
        instances: store.instances().await?,
        sends_due_within_an_hour: due
            .into_iter()
            .map(|(id, appid, openid, send_at, job)| DueView {
                id,
                appid,
                to: ui::mask(&openid),
                send_at,
                job,
            })
            .collect(),
    })
}

/// `GET /v1/status/overview`.
pub(super) async fn json(State(status): State<Status>, RawQuery(q): RawQuery) -> Response {
    json_answer(
        async {
            params(q.as_deref(), &[])?;
            load(&status).await
        }
        .await,
    )
}

/// `GET /status`.
pub(super) async fn page(
    State(status): State<Status>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let lang = match prepare(q.as_deref(), &[], &headers) {
        Ok((_, lang)) => lang,
        Err(e) => return e.html(Lang::En),
    };
    let body = load(&status).await.map(|o| render(lang, &o));
    html_answer(
        lang,
        "/status",
        lang.pick("Overview", "概览"),
        q.as_deref(),
        body,
    )
}

fn outcome(lang: Lang, run: &RunRow) -> Markup {
    let c = &run.counts;
    html! {
        a href=(format!("/status/runs/{}?lang={}", run.id, lang.code())) { "#" (run.id) }
        " " (ui::status_word(run.status.as_str())) " · "
        (c.sent) "/" (c.total) " " (lang.pick("sent", "已发送"))
        @if c.total > c.sent {
            " · " span.bad { (c.failed + c.refused + c.invalid + c.unknown + c.expired) " " (lang.pick("not sent", "未发送")) }
        }
        @if let Some(note) = &run.note { br; span.dim { (note) } }
    }
}

fn render(lang: Lang, o: &Overview) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    html! {
        p.dim { (l("As of", "截至")) " " (ui::moment(o.now, chrono_tz::UTC)) }
        h2 { (l("Apps", "小程序")) }
        table {
            tr { th { (l("App", "应用")) } th { "AppID" } th { "access_token" } th { (l("Send quota left today", "今日剩余发送额度")) } }
            @for a in &o.apps {
                tr {
                    td { (a.app) } td { (a.appid) }
                    td {
                        @if a.token_cached {
                            span.ok { (l("cached", "已缓存")) }
                            @if let Some(at) = a.token_expires_at { " · " (l("expires", "过期于")) " " (ui::moment(at, chrono_tz::UTC)) }
                        } @else {
                            span.warn { (l("none cached (fetched when needed)", "未缓存(需要时获取)")) }
                        }
                    }
                    td {
                        @if let Some(q) = a.send_quota { (q.remain) " / " (q.daily_limit) }
                        @if let Some(e) = &a.send_quota_error { span.dim { (l("not available: ", "无法获取:")) (e) } }
                    }
                }
            }
        }
        h2 { (l("Jobs", "任务")) }
        table {
            tr {
                th { (l("Job", "任务")) } th { (l("App", "应用")) } th { (l("Schedule", "计划")) }
                th { (l("Next fire", "下次触发")) } th { (l("Latest slot", "最近一次")) }
                th { (l("Outcome", "结果")) } th { (l("Last complete run", "上次完成")) }
                th.n { (l("Pending", "待发送")) } th.n { (l("Held by policy", "策略暂缓")) }
            }
            @for j in &o.jobs {
                tr {
                    td { (j.job) } td { (j.app) } td { code { (j.schedule) } }
                    td { (j.next_fire.as_deref().unwrap_or("-")) }
                    @match &j.latest_run {
                        Some(run) => {
                            td { (j.latest_slot.as_deref().unwrap_or("-")) }
                            td { (outcome(lang, run)) }
                        }
                        None => { td.dim { (l("never ran", "从未运行")) } td { } }
                    }
                    td { @match j.last_complete_age_s {
                        Some(s) => { (ui::age(o.now - chrono::Duration::seconds(s), o.now)) " " (l("ago", "前")) }
                        None => { span.dim { "-" } }
                    } }
                    td.n { (j.pending) } td.n { (j.deferred) }
                }
            }
        }
        h2 { (l("Instances", "实例")) }
        table {
            tr { th { "ID" } th { (l("Host", "主机")) } th { "PID" } th { (l("Version", "版本")) } th { (l("Role", "角色")) } th { (l("Heartbeat", "心跳")) } th { (l("Runs", "运行")) } }
            @for i in &o.instances {
                tr {
                    td { (i.id) } td { (i.host) } td.n { (i.pid) } td { (i.version) } td { (i.role) }
                    td { @if i.heartbeat_age_ms <= i.lease_ms { span.ok { (i.heartbeat_age_ms / 1000) " s" } } @else { span.bad { (i.heartbeat_age_ms / 1000) " s" } } }
                    td { (i.runs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) }
                }
            }
        }
        h2 { (l("Sends due within the hour", "一小时内到期的发送")) }
        @if o.sends_due_within_an_hour.is_empty() {
            p.dim { (l("none", "无")) }
        } @else {
            table {
                tr { th { "ID" } th { "AppID" } th { (l("To", "接收人")) } th { (l("Send at", "发送时间")) } th { (l("Job", "任务")) } }
                @for s in &o.sends_due_within_an_hour {
                    tr { td.n { (s.id) } td { (s.appid) } td { code { (s.to) } } td { (ui::stored(&s.send_at, chrono_tz::UTC)) } td { (s.job.as_deref().unwrap_or("-")) } }
                }
            }
        }
    }
}
