//! The account's templates (`gettemplate`) and login codes (`jscode2session`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::send::SendQuery;
use crate::*;

pub(crate) async fn get_templates(
    State(s): State<Arc<Inner>>,
    Query(q): Query<SendQuery>,
) -> Response {
    if let Some(e) = s.check_token(q.access_token.as_deref()) {
        return e;
    }
    let data: Vec<Value> = s
        .opts
        .templates
        .iter()
        .map(|t| {
            json!({"priTmplId": t.id, "title": t.title, "content": t.content,
                   "example": "", "type": t.kind})
        })
        .collect();
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "data": data})).into_response()
}

/// The quota a fake account has for `subscribeMessage.send` each day, unless
/// `FakeOptions::daily_quota` sets one.
pub(crate) const SEND_DAILY_LIMIT: u64 = 1_000_000;

#[derive(Deserialize)]
pub(crate) struct QuotaBody {
    cgi_path: Option<String>,
}

/// `POST /cgi-bin/openapi/quota/get` (getApiQuota): the send path's daily
/// quota, its use counted from the messages accepted; 76021 for another path.
pub(crate) async fn api_quota(
    State(s): State<Arc<Inner>>,
    Query(q): Query<SendQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(e) = s.check_token(q.access_token.as_deref()) {
        return e;
    }
    let Ok(body) = serde_json::from_slice::<QuotaBody>(&body) else {
        return err(47001, "data format error");
    };
    if body.cgi_path.as_deref() != Some("/cgi-bin/message/subscribe/send") {
        return err(76021, "cgi_path not found, please check");
    }
    let limit = match s.opts.daily_quota {
        0 => SEND_DAILY_LIMIT,
        set => set,
    };
    let used = s.accepted_count.load(Ordering::SeqCst).min(limit);
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "quota": {
        "daily_limit": limit, "used": used, "remain": limit - used}}))
    .into_response()
}

#[derive(Deserialize)]
pub(crate) struct CodeQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

pub(crate) async fn jscode2session(
    State(s): State<Arc<Inner>>,
    Query(q): Query<CodeQuery>,
) -> Response {
    s.code_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(e) = s.check_credentials(q.appid.as_deref(), q.secret.as_deref()) {
        return e;
    }
    if q.grant_type.as_deref() != Some("authorization_code") {
        return err(40002, "invalid grant_type");
    }
    let code = q.js_code.unwrap_or_default();
    let mut u = s.users.lock().unwrap();
    if u.used.contains(&code) {
        return err(40163, "code been used");
    }
    let Some(openid) = u.codes.remove(&code) else {
        return err(40029, "invalid code");
    };
    u.used.insert(code);
    let session_key = format!("SESSIONKEY{:x}==", s.rng.fetch_add(7919, Ordering::Relaxed));
    axum::Json(json!({"openid": openid, "session_key": session_key})).into_response()
}
