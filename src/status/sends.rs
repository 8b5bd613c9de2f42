//! The sends on demand (the API's and `wxpush sends add`'s): scheduled,
//! recent and cancelled, by status, newest first, a page at a time.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};
use serde_json::Value;

use super::ui::{self, Lang};
use super::{PAGE, Problem, Status, html_answer, json_answer, params, parsed, prepare};
use crate::domain::SendStatus;
use crate::storage::SendShown;

const KEYS: [&str; 2] = ["status", "before"];

/// The statuses the filter offers (`scheduled` is a pending send not due yet).
const STATUSES: [&str; 12] = [
    "scheduled",
    "queued",
    "deferred",
    "pending",
    "sending",
    "sent",
    "failed",
    "refused",
    "invalid",
    "unknown",
    "cancelled",
    "expired",
];

async fn load(status: &Status, p: &HashMap<String, String>) -> Result<Vec<Value>, Problem> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let shown = parsed("status", get("status"), |s| match s {
        "scheduled" => Some(SendShown::Scheduled),
        "queued" => Some(SendShown::Queued),
        "deferred" => Some(SendShown::Deferred),
        s => SendStatus::parse(s).ok().map(SendShown::Status),
    })?;
    let before = parsed("before", get("before"), |s| s.parse().ok())?;
    let now = Utc::now();
    Ok(status
        .app
        .store
        .sends_newest(shown, before, PAGE, now)
        .await?
        .iter()
        .map(|s| {
            let mut v = crate::delivery::send_view(s, now);
            v["to"] = ui::mask(&s.openid).into();
            v
        })
        .collect())
}

/// `GET /v1/status/sends`.
pub(super) async fn json(State(status): State<Status>, RawQuery(q): RawQuery) -> Response {
    json_answer(async { load(&status, &params(q.as_deref(), &KEYS)?).await }.await)
}

/// `GET /status/sends`.
pub(super) async fn page(
    State(status): State<Status>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, lang) = match prepare(q.as_deref(), &KEYS, &headers) {
        Ok(x) => x,
        Err(e) => return e.html(Lang::En),
    };
    let body = load(&status, &p)
        .await
        .map(|sends| render(lang, &p, &sends));
    html_answer(
        lang,
        "/status/sends",
        lang.pick("Sends", "API 发送"),
        q.as_deref(),
        body,
    )
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn render(lang: Lang, p: &HashMap<String, String>, sends: &[Value]) -> Markup {
    let l = |en, zh| lang.pick(en, zh);
    let next = sends
        .last()
        .filter(|_| sends.len() == PAGE as usize)
        .and_then(|s| s["id"].as_i64())
        .map(|id| {
            let status = p
                .get("status")
                .map_or(String::new(), |s| format!("status={s}&"));
            format!("/status/sends?{status}before={id}&lang={}", lang.code())
        });
    html! {
        form.filter method="get" action="/status/sends" {
            input type="hidden" name="lang" value=(lang.code());
            select name="status" {
                option value="" { (l("every status", "全部状态")) }
                @for s in STATUSES { option value=(s) selected[p.get("status").is_some_and(|c| c == s)] { (s) } }
            }
            button type="submit" { (l("Filter", "筛选")) }
        }
        @if sends.is_empty() { p.dim { (l("No sends.", "没有发送记录。")) } } @else {
            table {
                tr { th { "ID" } th { (l("Status", "状态")) } th { (l("To", "接收人")) } th { "AppID" } th { (l("Template", "模板")) } th { (l("Job", "任务")) } th { (l("Send at", "发送时间")) } th { "errcode" } th { (l("Held by", "暂缓原因")) } th { "errmsg" } }
                @for s in sends {
                    tr {
                        td.n { (s["id"]) } td { (ui::status_word(text(s, "status"))) } td { code { (text(s, "to")) } }
                        td { (text(s, "appid")) } td { (text(s, "template_id")) } td { (text(s, "job")) }
                        td { (ui::stored(text(s, "send_at"), chrono_tz::UTC)) }
                        td.n { (s["errcode"].as_i64().map(|c| c.to_string()).unwrap_or_default()) }
                        td { (text(s, "held_by")) } td.dim { (text(s, "errmsg")) }
                    }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(next) { (l("Older sends →", "更早的发送 →")) } } }
    }
}
