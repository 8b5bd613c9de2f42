//! Consent per template (acceptances and refusals of the last 7 days, credits
//! outstanding, the 43101 rate) and one person, found by exact openid: the
//! only page that shows an openid whole.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use maud::{Markup, html};
use serde::Serialize;

use super::ui::{self, Lang};
use super::{Problem, Status, html_answer, json_answer, params, prepare};
use crate::config::WechatSettings;
use crate::domain::OpenId;
use crate::storage::{ConsentRow, ConsentSummary, RecipientRow, SubscriberRow};

/// The consent page's window.
const WINDOW: chrono::Duration = chrono::Duration::days(7);

#[derive(Debug, Serialize)]
struct Consent {
    app: String,
    since: chrono::DateTime<Utc>,
    templates: Vec<ConsentSummary>,
}

/// As `recipients show --json` prints it.
#[derive(Debug, Serialize)]
struct Person {
    openid: String,
    jobs: Vec<RecipientRow>,
    subscriber: Option<SubscriberRow>,
    consents: Vec<ConsentRow>,
}

/// `app` (a name, or `default`) and its WeChat settings, or a 400.
fn app<'a>(
    status: &'a Status,
    p: &HashMap<String, String>,
) -> Result<(String, &'a WechatSettings), Problem> {
    let settings = &status.app.settings;
    match p.get("app").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        None | Some("default") => Ok(("default".to_owned(), &settings.wechat)),
        Some(name) => settings
            .apps
            .iter()
            .find(|a| a.name.as_ref() == name)
            .map(|a| (name.to_owned(), &a.wechat))
            .ok_or_else(|| Problem::BadRequest(format!("app: no app named {name:?}"))),
    }
}

async fn consent(status: &Status, p: &HashMap<String, String>) -> Result<Consent, Problem> {
    let (name, wechat) = app(status, p)?;
    let since = Utc::now() - WINDOW;
    let store = &status.app.store;
    let appid = wechat.appid.as_ref();
    let mut templates = store.consent_summary(appid, since).await?;
    // The runs' answers from their counts (kept for finished runs): a
    // refusal is WeChat's 43101; sent, failed and invalid were answers too
    // (unknown had none, and skipped, expired or held made no request).
    for (run, template) in store.runs_since(appid, since).await? {
        let Some(template) = template else { continue };
        let c = status.counts(&run).await?;
        let t = match templates.iter_mut().find(|t| t.template_id == template) {
            Some(t) => t,
            None => {
                templates.push(ConsentSummary {
                    template_id: template,
                    ..ConsentSummary::default()
                });
                templates.last_mut().expect("just pushed")
            }
        };
        t.errcode_43101 += c.refused as i64;
        t.answered += (c.sent + c.refused + c.failed + c.invalid) as i64;
    }
    templates.sort_by(|a, b| a.template_id.cmp(&b.template_id));
    Ok(Consent {
        app: name,
        since,
        templates,
    })
}

/// `None` when no openid was asked for (the search form alone).
async fn person(status: &Status, p: &HashMap<String, String>) -> Result<Option<Person>, Problem> {
    let (name, wechat) = app(status, p)?;
    let Some(given) = p.get("openid").map(|o| o.trim()).filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let openid = OpenId::parse(given).map_err(|e| Problem::BadRequest(format!("openid: {e}")))?;
    let store = &status.app.store;
    let jobs: Vec<RecipientRow> = store
        .listed_in(openid.as_ref())
        .await?
        .into_iter()
        // A job no longer configured counts as the default app's.
        .filter(|r| {
            status
                .app_of_job(&r.job)
                .map_or(name == "default", |a| a == name)
        })
        .collect();
    let subscriber = store.subscriber(&wechat.appid, &openid).await?;
    let consents = store.consents_of(&wechat.appid, &openid).await?;
    if jobs.is_empty() && subscriber.is_none() && consents.is_empty() {
        return Err(Problem::NotFound(format!(
            "nothing is known about {} in app {name}: not a recipient of any job and no consent on record",
            ui::mask(openid.as_ref())
        )));
    }
    Ok(Some(Person {
        openid: openid.as_ref().to_owned(),
        jobs,
        subscriber,
        consents,
    }))
}

/// Consent's and person's parameters.
const CONSENT_KEYS: [&str; 1] = ["app"];
const PERSON_KEYS: [&str; 2] = ["openid", "app"];

/// `GET /v1/status/consent`.
pub(super) async fn consent_json(State(status): State<Status>, RawQuery(q): RawQuery) -> Response {
    json_answer(async { consent(&status, &params(q.as_deref(), &CONSENT_KEYS)?).await }.await)
}

/// `GET /v1/status/person?openid=`.
pub(super) async fn person_json(State(status): State<Status>, RawQuery(q): RawQuery) -> Response {
    json_answer(
        async {
            person(&status, &params(q.as_deref(), &PERSON_KEYS)?)
                .await?
                .ok_or_else(|| Problem::BadRequest("openid: give the openid to look up".into()))
        }
        .await,
    )
}

/// `GET /status/consent`.
pub(super) async fn consent_page(
    State(status): State<Status>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, lang) = match prepare(q.as_deref(), &CONSENT_KEYS, &headers) {
        Ok(x) => x,
        Err(e) => return e.html(Lang::En),
    };
    let body = consent(&status, &p)
        .await
        .map(|c| render_consent(lang, &status, &c));
    let title = lang.pick("Consent", "订阅授权");
    html_answer(lang, "/status/consent", title, q.as_deref(), body)
}

/// `GET /status/person`.
pub(super) async fn person_page(
    State(status): State<Status>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, lang) = match prepare(q.as_deref(), &PERSON_KEYS, &headers) {
        Ok(x) => x,
        Err(e) => return e.html(Lang::En),
    };
    let title = lang.pick("Person", "用户");
    let found = person(&status, &p).await;
    let (code, body) = match &found {
        Ok(found) => (
            axum::http::StatusCode::OK,
            render_person(lang, &p, found.as_ref(), None),
        ),
        Err(e) => (
            e.status(),
            render_person(lang, &p, None, Some(&e.to_string())),
        ),
    };
    // The search keeps the openid out of the language switch's link.
    let q = q.as_deref().unwrap_or_default();
    let kept: Vec<&str> = q.split('&').filter(|p| !p.starts_with("openid=")).collect();
    let page = ui::page(lang, "/status/person", title, &kept.join("&"), body);
    (code, Html(page.into_string())).into_response()
}

fn render_consent(lang: Lang, status: &Status, c: &Consent) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    html! {
        (app_picker(lang, status, "/status/consent", &c.app))
        p.dim { (l("Since", "自")) " " (ui::moment(c.since, chrono_tz::UTC)) " (" (l("7 days", "7 天")) ")" }
        @if c.templates.is_empty() { p.dim { (l("No consent on record.", "暂无授权记录。")) } } @else {
            table {
                tr {
                    th { (l("Template", "模板")) } th.n { (l("Accepted", "接受")) } th.n { (l("Refused", "拒绝")) }
                    th.n { (l("One-time credits outstanding", "未使用的一次性次数")) }
                    th.n { (l("43101 answers", "43101 次数")) } th.n { (l("43101 rate", "43101 比例")) }
                }
                @for t in &c.templates {
                    tr {
                        td { (t.template_id) } td.n { (t.accepted) } td.n { (t.refused) } td.n { (t.credits) }
                        td.n { (t.errcode_43101) " / " (t.answered) }
                        td.n { @if t.answered > 0 { (format!("{:.1} %", 100.0 * t.errcode_43101 as f64 / t.answered as f64)) } @else { "-" } }
                    }
                }
            }
            p.dim { (l("Accepted and refused count people whose latest consent changed to that within the window.", "接受与拒绝统计的是窗口内最近一次授权变为该状态的用户数。")) }
        }
    }
}

fn app_picker(lang: Lang, status: &Status, action: &str, chosen: &str) -> Markup {
    let settings = &status.app.settings;
    let mut apps = vec!["default".to_owned()];
    apps.extend(settings.apps.iter().map(|a| a.name.to_string()));
    html! {
        @if apps.len() > 1 {
            form.filter method="get" action=(action) {
                input type="hidden" name="lang" value=(lang.code());
                select name="app" { @for a in &apps { option value=(a) selected[a == chosen] { (a) } } }
                button type="submit" { (lang.pick("Show", "显示")) }
            }
        }
    }
}

fn render_person(
    lang: Lang,
    p: &HashMap<String, String>,
    found: Option<&Person>,
    problem: Option<&str>,
) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    let tz = chrono_tz::UTC;
    html! {
        form.filter method="get" action="/status/person" {
            input type="hidden" name="lang" value=(lang.code());
            @if let Some(app) = p.get("app") { input type="hidden" name="app" value=(app); }
            input type="search" name="openid" placeholder=(l("exact openid", "完整 openid")) size="36" required;
            button type="submit" { (l("Search", "查询")) }
        }
        @if let Some(problem) = problem { p.bad { (problem) } }
        @if let Some(person) = found {
            h2 { "openid " code { (person.openid) } }
            @if let Some(s) = &person.subscriber {
                p { (l("Intake", "小程序上报")) ": " (s.name.as_deref().unwrap_or("-")) ", " (s.vars.len()) " " (l("variables", "个变量")) }
            }
            h2 { (l("Jobs", "任务")) }
            @if person.jobs.is_empty() { p.dim { (l("not a recipient of any job", "不是任何任务的接收人")) } } @else {
                table {
                    tr { th { (l("Job", "任务")) } th { (l("Active", "有效")) } th { (l("Added by", "来源")) } }
                    @for r in &person.jobs { tr { td { (r.job) } td { (if r.active { l("active", "有效") } else { l("inactive", "无效") }) } td { (r.source) } } }
                }
            }
            h2 { (l("Consent", "订阅授权")) }
            @if person.consents.is_empty() { p.dim { (l("none on record", "暂无记录")) } } @else {
                table {
                    tr { th { (l("Template", "模板")) } th { (l("Kind", "类型")) } th { (l("Status", "状态")) } th.n { (l("Credits", "剩余次数")) } th { (l("Source", "来源")) } th { (l("Updated", "更新时间")) } }
                    @for c in &person.consents {
                        tr {
                            td { (c.template_id) } td { (c.kind.map_or("unknown", |k| k.as_str())) }
                            td { (ui::status_word(&c.status)) } td.n { (c.credits) }
                            td { (c.source) } td { (ui::stored(&c.updated_at, tz)) }
                        }
                    }
                }
            }
        }
    }
}
