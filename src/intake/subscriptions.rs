//! `POST /v1/subscriptions`: the mini program's backend forwards a `wx.login` code
//! and the `wx.requestSubscribeMessage` results; the code becomes an openid and
//! each result becomes consent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::{Intake, json_error};
use crate::domain::{ConsentResult, OpenId, TemplateId};
use crate::wechat::WechatError;

/// Most templates one report may carry (WeChat's popup takes at most 5).
const MAX_RESULTS: usize = 20;
/// Most `data` variables one report may carry.
const MAX_VARS: usize = 32;
/// Longest `name` or `data` value, in characters.
const MAX_TEXT: usize = 256;

/// A checked report.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    /// The mini program (`None`: the default app).
    appid: Option<String>,
    code: String,
    results: Vec<(TemplateId, ConsentResult)>,
    name: Option<String>,
    data: Option<BTreeMap<String, String>>,
}

/// A bad field and why.
#[derive(Debug, PartialEq, Eq)]
struct FieldError {
    field: String,
    message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn text(field: &str, v: &Value) -> Result<String, FieldError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad(field, "must be a string")),
    };
    if s.chars().count() > MAX_TEXT {
        return Err(bad(field, format!("is longer than {MAX_TEXT} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(field, "contains a control character"));
    }
    // Bidi controls and zero-width characters would reorder or hide text in the
    // message: stripped, not refused (they arrive with pasted names).
    Ok(crate::domain::strip_hidden(&s))
}

/// Checks the body field by field; the first problem names its field.
fn parse(body: &[u8]) -> Result<Report, FieldError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("body", "must be a JSON object"));
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "appid" | "code" | "results" | "name" | "data") {
            return Err(bad(
                key.as_str(),
                "is not a known field (appid, code, results, name, data)",
            ));
        }
    }
    let appid = match obj.remove("appid") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a),
        Some(_) => return Err(bad("appid", "must be a string")),
    };
    let code = match obj.remove("code") {
        Some(Value::String(c)) if !c.is_empty() => c,
        Some(Value::String(_)) | None => {
            return Err(bad("code", "is missing; send the code from wx.login"));
        }
        Some(_) => return Err(bad("code", "must be a string")),
    };
    if code.len() > 128 || !code.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad("code", "is not a wx.login code"));
    }
    let results = match obj.remove("results") {
        Some(Value::Object(r)) if !r.is_empty() => r,
        Some(Value::Object(_)) | None => {
            return Err(bad(
                "results",
                "is missing; send the wx.requestSubscribeMessage result per template id",
            ));
        }
        Some(_) => return Err(bad("results", "must be an object of template id to result")),
    };
    if results.len() > MAX_RESULTS {
        return Err(bad(
            "results",
            format!("has more than {MAX_RESULTS} templates"),
        ));
    }
    let results = results
        .into_iter()
        .map(|(id, v)| {
            let at = format!("results.{id}");
            let template = TemplateId::parse(&id).map_err(|e| bad(&at, e.to_string()))?;
            let Value::String(v) = v else {
                return Err(bad(&at, "must be accept, reject, ban or filter"));
            };
            let result = ConsentResult::parse(&v).map_err(|e| bad(&at, e.to_string()))?;
            Ok((template, result))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = match obj.remove("name") {
        None | Some(Value::Null) => None,
        Some(v) => Some(text("name", &v)?).filter(|n| !n.is_empty()),
    };
    let data = match obj.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => Some(vars(d)?),
        Some(_) => return Err(bad("data", "must be an object of variable to value")),
    };
    Ok(Report {
        appid,
        code,
        results,
        name,
        data,
    })
}

fn vars(d: Map<String, Value>) -> Result<BTreeMap<String, String>, FieldError> {
    if d.len() > MAX_VARS {
        return Err(bad("data", format!("has more than {MAX_VARS} variables")));
    }
    d.into_iter()
        .map(|(k, v)| {
            let at = format!("data.{k}");
            let key_ok = !k.is_empty()
                && k.len() <= 32
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(bad(
                    &at,
                    "variable names are 1 to 32 letters, digits or '_'",
                ));
            }
            Ok((k, text(&at, &v)?))
        })
        .collect()
}

/// What to tell the caller when the code exchange fails. The errmsg stays in the
/// log; the caller learns the errcode and what to do.
fn exchange_failed(e: &WechatError) -> Response {
    let errcode = match e {
        WechatError::Api { errcode, .. } => *errcode,
        _ => 0,
    };
    let message = match errcode {
        40029 => "WeChat rejected the login code (40029 invalid code); call wx.login again",
        40163 => "this login code was already used (40163); call wx.login again",
        45011 => "WeChat is limiting code exchanges (45011); retry in a minute",
        40226 => "WeChat blocked this user's login (40226 high-risk user)",
        -1 => "WeChat is busy (-1); retry shortly",
        0 => "cannot reach WeChat to exchange the login code",
        _ => "WeChat refused the code exchange",
    };
    let mut body = serde_json::json!({ "error": message });
    if errcode != 0 {
        body["errcode"] = errcode.into();
    }
    (StatusCode::BAD_GATEWAY, Json(body)).into_response()
}

/// The client's address: the peer's, or behind a reverse proxy the last address
/// in the header it sets (the one the proxy itself saw; earlier ones are the
/// client's word and could be forged).
fn client_ip(header: Option<&HeaderName>, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let Some(name) = header else { return peer };
    // Only the very last entry: if it is unreadable, the earlier ones are no better.
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

/// The handler.
pub(super) async fn post(
    State(intake): State<Intake>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let client = client_ip(
        intake.settings.client_ip_header.as_ref(),
        &headers,
        peer.ip(),
    );
    if intake.per_ip.check_key(&client).is_err() {
        crate::stats::intake_report("limited");
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            "too many requests from this address; retry in a minute",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            crate::stats::intake_report("invalid");
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body"),
                format!("is larger than {} bytes", intake.settings.max_body_bytes),
            );
        }
        Err(e) => return json_error(e.status(), Some("body"), e.body_text()),
    };
    let report = match parse(&body) {
        Ok(r) => r,
        Err(e) => {
            crate::stats::intake_report("invalid");
            return json_error(StatusCode::BAD_REQUEST, Some(&e.field), e.message);
        }
    };
    // Codes are exchanged with the mini program that issued them.
    let app = match report.appid.as_deref() {
        None => intake.default_app(),
        Some(appid) => match intake.app_with_appid(appid) {
            Some(app) => app,
            None => {
                crate::stats::intake_report("invalid");
                return json_error(
                    StatusCode::BAD_REQUEST,
                    Some("appid"),
                    format!("{appid:?} is not one of this server's mini programs"),
                );
            }
        },
    };
    let session = match app.client.code2session(&report.code).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
            crate::stats::intake_report("wechat_error");
            return exchange_failed(&e);
        }
    };
    let openid = match OpenId::parse(&session.openid) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "WeChat returned an openid wxpush cannot use");
            return json_error(
                StatusCode::BAD_GATEWAY,
                None,
                "WeChat returned an unusable openid",
            );
        }
    };
    if let Err(e) = intake
        .store
        .record_subscription(
            app.client.appid(),
            &openid,
            report.name.as_deref(),
            report.data.as_ref(),
            &report.results,
        )
        .await
    {
        tracing::error!(error = %e, "cannot record a subscription");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "cannot record the subscription; retry",
        );
    }
    let accepted: Vec<&str> = report
        .results
        .iter()
        .filter(|(_, r)| *r == ConsentResult::Accept)
        .map(|(t, _)| t.as_ref())
        .collect();
    crate::stats::intake_report("recorded");
    tracing::info!(
        openid.masked = %openid.masked(),
        templates = report.results.len(),
        accepted = accepted.len(),
        "subscription recorded"
    );
    Json(serde_json::json!({ "openid_hint": openid.masked(), "accepted": accepted }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn behind_a_proxy_the_last_forwarded_address_is_the_client() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let xff = HeaderName::from_static("x-forwarded-for");
        let mut h = HeaderMap::new();
        h.insert(&xff, "6.6.6.6, 203.0.113.9".parse().unwrap());
        assert_eq!(
            client_ip(Some(&xff), &h, peer),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(None, &h, peer), peer);
        assert_eq!(client_ip(Some(&xff), &HeaderMap::new(), peer), peer);
    }

    #[tokio::test]
    async fn failed_exchanges_are_502_with_wechats_errcode() {
        for (errcode, says) in [
            (40029, "wx.login"),
            (40163, "already used"),
            (45011, "retry in a minute"),
            (-1, "busy"),
        ] {
            let e = WechatError::Api {
                errcode,
                errmsg: "rid: 1".into(),
            };
            let r = exchange_failed(&e);
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
            let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["errcode"], errcode);
            assert!(v["error"].as_str().unwrap().contains(says), "{v}");
        }
        let r = exchange_failed(&WechatError::Transport("refused".into()));
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v.get("errcode").is_none() && v["error"].as_str().unwrap().contains("cannot reach")
        );
    }

    #[test]
    fn a_full_report_parses() {
        let r = parse(br#"{"code":"0a1b2c","results":{"T1":"accept","T2":"reject"},"name":"Li Lei","data":{"room":"3-101","floor":3}}"#).unwrap();
        assert_eq!(r.code, "0a1b2c");
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.name.as_deref(), Some("Li Lei"));
        assert_eq!(r.data.unwrap()["floor"], "3");
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(r#"{"results":{"T1":"accept"}}"#), "code");
        assert_eq!(field_of(r#"{"code":7,"results":{"T1":"accept"}}"#), "code");
        assert_eq!(
            field_of(r#"{"code":"c d","results":{"T1":"accept"}}"#),
            "code"
        );
        assert_eq!(field_of(r#"{"code":"c"}"#), "results");
        assert_eq!(field_of(r#"{"code":"c","results":{}}"#), "results");
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T 1":"accept"}}"#),
            "results.T 1"
        );
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T1":"yes"}}"#),
            "results.T1"
        );
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T1":"accept"},"name":{"a":1}}"#),
            "name"
        );
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T1":"accept"},"name":"a\nb"}"#),
            "name"
        );
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T1":"accept"},"data":{"bad key":"x"}}"#),
            "data.bad key"
        );
        assert_eq!(
            field_of(r#"{"code":"c","results":{"T1":"accept"},"session_key":"x"}"#),
            "session_key"
        );
    }
}
