//! Runs newest first (by job, app and status), and one run's deliveries a page
//! at a time (by status and errcode), each errcode with its meaning in words.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Serialize;

use super::ui::{self, Lang};
use super::{PAGE, Problem, Status, html_answer, json_answer, params, parsed, prepare};
use crate::domain::{RunStatus, Status as DeliveryStatus};
use crate::storage::{DeliveryFilter, DeliveryRow, RunFilter, RunRow};

const LIST_KEYS: [&str; 4] = ["job", "app", "status", "before"];
const DETAIL_KEYS: [&str; 3] = ["status", "errcode", "after"];

/// A run as `runs --json` prints it, with its app.
#[derive(Debug, Serialize)]
struct RunView {
    #[serde(flatten)]
    run: RunRow,
    app: Option<String>,
}

#[derive(Debug, Serialize)]
struct Detail {
    run: RunView,
    deliveries: Vec<DeliveryView>,
    /// The `after` of the next page, if there may be one.
    next_after: Option<i64>,
}

/// A delivery as `runs show --json` prints it, its openid masked, its errcode explained.
#[derive(Debug, Serialize)]
struct DeliveryView {
    #[serde(flatten)]
    delivery: DeliveryRow,
    errcode_meaning: Option<&'static str>,
}

fn run_filter(status: &Status, p: &HashMap<String, String>) -> Result<RunFilter, Problem> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let mut jobs: Option<Vec<String>> = get("job")
        .filter(|j| !j.trim().is_empty())
        .map(|j| vec![j.trim().to_owned()]);
    if let Some(app) = get("app").map(str::trim).filter(|a| !a.is_empty()) {
        let settings = &status.app.settings;
        let known = app == "default" || settings.apps.iter().any(|a| a.name.as_ref() == app);
        if !known {
            return Err(Problem::BadRequest(format!("app: no app named {app:?}")));
        }
        let of_app: Vec<String> = settings
            .jobs
            .iter()
            .filter(|j| j.app.as_ref().map_or("default", |a| a.as_ref()) == app)
            .map(|j| j.name.to_string())
            .collect();
        jobs = Some(match jobs {
            Some(j) => j.into_iter().filter(|n| of_app.contains(n)).collect(),
            None => of_app,
        });
    }
    Ok(RunFilter {
        jobs,
        status: parsed("status", get("status"), |s| RunStatus::parse(s).ok())?,
        before: parsed("before", get("before"), |s| s.parse().ok())?,
        limit: PAGE,
    })
}

async fn list(status: &Status, p: &HashMap<String, String>) -> Result<Vec<RunView>, Problem> {
    let filter = run_filter(status, p)?;
    let runs = status
        .counted(status.app.store.run_heads(&filter).await?)
        .await?;
    Ok(runs
        .into_iter()
        .map(|run| RunView {
            app: status.app_of_job(&run.job),
            run,
        })
        .collect())
}

async fn detail(status: &Status, id: &str, p: &HashMap<String, String>) -> Result<Detail, Problem> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::NotFound(format!("no run with id {id:?}")))?;
    let store = &status.app.store;
    let mut run = store
        .run_head(id)
        .await?
        .ok_or_else(|| Problem::NotFound(format!("no run with id {id}")))?;
    run.counts = status.counts(&run).await?;
    let filter = DeliveryFilter {
        status: parsed("status", get("status"), |s| DeliveryStatus::parse(s).ok())?,
        errcode: parsed("errcode", get("errcode"), |s| s.parse().ok())?,
        after: parsed("after", get("after"), |s| s.parse().ok())?,
        limit: PAGE,
        done: (run.status == RunStatus::Done).then_some(run.counts),
    };
    let rows = store.deliveries_page(id, &filter).await?;
    let next_after = (rows.len() == PAGE as usize)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    Ok(Detail {
        run: RunView {
            app: status.app_of_job(&run.job),
            run,
        },
        deliveries: rows
            .into_iter()
            .map(|mut d| {
                d.openid = ui::mask(&d.openid);
                DeliveryView {
                    errcode_meaning: d.errcode.and_then(crate::wechat::meaning).map(|m| m.0),
                    delivery: d,
                }
            })
            .collect(),
        next_after,
    })
}

/// `GET /v1/status/runs`.
pub(super) async fn list_json(State(status): State<Status>, RawQuery(q): RawQuery) -> Response {
    json_answer(async { list(&status, &params(q.as_deref(), &LIST_KEYS)?).await }.await)
}

/// `GET /v1/status/runs/{id}`.
pub(super) async fn detail_json(
    State(status): State<Status>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    json_answer(async { detail(&status, &id, &params(q.as_deref(), &DETAIL_KEYS)?).await }.await)
}

/// `GET /status/runs`.
pub(super) async fn list_page(
    State(status): State<Status>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, lang) = match prepare(q.as_deref(), &LIST_KEYS, &headers) {
        Ok(x) => x,
        Err(e) => return e.html(Lang::En),
    };
    let body = list(&status, &p)
        .await
        .map(|runs| render_list(lang, &status, &p, &runs));
    html_answer(
        lang,
        "/status/runs",
        lang.pick("Runs", "运行"),
        q.as_deref(),
        body,
    )
}

/// `GET /status/runs/{id}`.
pub(super) async fn detail_page(
    State(status): State<Status>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, lang) = match prepare(q.as_deref(), &DETAIL_KEYS, &headers) {
        Ok(x) => x,
        Err(e) => return e.html(Lang::En),
    };
    let body = detail(&status, &id, &p)
        .await
        .map(|d| render_detail(lang, &status, &p, &d));
    let title = format!("{} #{id}", lang.pick("Run", "运行"));
    html_answer(
        lang,
        &format!("/status/runs/{id}"),
        &title,
        q.as_deref(),
        body,
    )
}

const RUN_STATUSES: [&str; 5] = ["running", "interrupted", "stopped", "done", "skipped"];

fn options(all: &[&str], chosen: Option<&String>, any: &str) -> Markup {
    html! {
        option value="" { (any) }
        @for s in all { option value=(s) selected[chosen.is_some_and(|c| c == s)] { (s) } }
    }
}

fn counts_cells(run: &RunRow) -> Markup {
    let c = &run.counts;
    html! {
        @for n in [c.total, c.sent, c.failed, c.refused, c.invalid, c.unknown, c.skipped, c.pending, c.expired, c.deferred, c.suppressed] {
            td.n { (n) }
        }
    }
}

fn counts_header(lang: Lang) -> Markup {
    let names = [
        ("total", "总数"),
        ("sent", "已发送"),
        ("failed", "失败"),
        ("refused", "拒收"),
        ("invalid", "无效"),
        ("unknown", "未知"),
        ("skipped", "跳过"),
        ("pending", "待发送"),
        ("expired", "过期"),
        ("deferred", "暂缓"),
        ("suppressed", "已抑制"),
    ];
    html! { @for (en, zh) in names { th.n { (lang.pick(en, zh)) } } }
}

fn render_list(
    lang: Lang,
    status: &Status,
    p: &HashMap<String, String>,
    runs: &[RunView],
) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    let settings = &status.app.settings;
    let mut apps = vec!["default".to_owned()];
    apps.extend(settings.apps.iter().map(|a| a.name.to_string()));
    let next = runs
        .last()
        .filter(|_| runs.len() == PAGE as usize)
        .map(|r| {
            let mut q: Vec<String> = p
                .iter()
                .filter(|(k, _)| *k != "before")
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    )
                })
                .collect();
            q.push(format!("before={}", r.run.id));
            q.sort();
            format!("/status/runs?{}", q.join("&"))
        });
    html! {
        form.filter method="get" action="/status/runs" {
            input type="hidden" name="lang" value=(lang.code());
            select name="job" {
                option value="" { (l("every job", "全部任务")) }
                @for j in &settings.jobs { option value=(j.name) selected[p.get("job").is_some_and(|c| c == j.name.as_ref())] { (j.name) } }
            }
            select name="app" { option value="" { (l("every app", "全部应用")) } @for a in &apps { option value=(a) selected[p.get("app") == Some(a)] { (a) } } }
            select name="status" { (options(&RUN_STATUSES, p.get("status"), l("every status", "全部状态"))) }
            button type="submit" { (l("Filter", "筛选")) }
        }
        @if runs.is_empty() { p.dim { (l("No runs.", "没有运行记录。")) } } @else {
            table {
                tr { th { "ID" } th { (l("Job", "任务")) } th { (l("App", "应用")) } th { (l("Slot", "时段")) } th { (l("Trigger", "触发")) } th { (l("Status", "状态")) } (counts_header(lang)) }
                @for r in runs {
                    tr {
                        td { a href=(format!("/status/runs/{}?lang={}", r.run.id, lang.code())) { "#" (r.run.id) } }
                        td { (r.run.job) } td { (r.app.as_deref().unwrap_or("?")) }
                        td { (ui::moment(r.run.slot, status.tz_of_job(&r.run.job))) }
                        td { (r.run.trigger.as_str()) } td { (ui::status_word(r.run.status.as_str())) }
                        (counts_cells(&r.run))
                    }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(format!("{next}&lang={}", lang.code())) { (l("Older runs →", "更早的运行 →")) } } }
    }
}

fn render_detail(lang: Lang, status: &Status, p: &HashMap<String, String>, d: &Detail) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    let run = &d.run.run;
    let tz = status.tz_of_job(&run.job);
    let next = d.next_after.map(|after| {
        let mut q: Vec<String> = p
            .iter()
            .filter(|(k, _)| *k != "after" && *k != "lang")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
            .collect();
        q.push(format!("after={after}"));
        q.push(format!("lang={}", lang.code()));
        q.sort();
        format!("/status/runs/{}?{}", run.id, q.join("&"))
    });
    html! {
        table {
            tr { th { (l("Job", "任务")) } th { (l("App", "应用")) } th { (l("Slot", "时段")) } th { (l("Trigger", "触发")) } th { (l("Status", "状态")) } (counts_header(lang)) }
            tr {
                td { (run.job) } td { (d.run.app.as_deref().unwrap_or("?")) } td { (ui::moment(run.slot, tz)) }
                td { (run.trigger.as_str()) } td { (ui::status_word(run.status.as_str())) } (counts_cells(run))
            }
        }
        @if let Some(note) = &run.note { p { (l("Note", "说明")) ": " (note) } }
        form.filter method="get" action=(format!("/status/runs/{}", run.id)) {
            input type="hidden" name="lang" value=(lang.code());
            select name="status" { (options(&DeliveryStatus::ALL.map(DeliveryStatus::as_str), p.get("status"), l("every status", "全部状态"))) }
            input type="text" name="errcode" placeholder="errcode" value=[p.get("errcode")] size="8";
            button type="submit" { (l("Filter", "筛选")) }
        }
        @if d.deliveries.is_empty() { p.dim { (l("No deliveries here.", "没有符合条件的投递。")) } } @else {
            table {
                tr { th { "ID" } th { "openid" } th { (l("Status", "状态")) } th { "errcode" } th { (l("Meaning", "含义")) } th { "msgid" } th.n { (l("Attempts", "尝试")) } th { (l("WeChat's later result", "微信回执")) } th { "errmsg" } }
                @for v in &d.deliveries {
                    @let x = &v.delivery;
                    tr {
                        td.n { (x.id) } td { code { (x.openid) } } td { (ui::status_word(x.status.as_str())) }
                        td.n { (x.errcode.map(|c| c.to_string()).unwrap_or_default()) }
                        td { (x.errcode.and_then(crate::wechat::meaning).map(|m| lang.pick(m.0, m.1)).unwrap_or_default()) }
                        td { (x.msgid.as_deref().unwrap_or("")) } td.n { (x.attempts) }
                        td { (x.push_event.as_deref().unwrap_or("")) } td.dim { (x.errmsg.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(next) { (l("Next page →", "下一页 →")) } } }
    }
}
