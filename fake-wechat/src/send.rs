//! `subscribeMessage.send`: checks, scripts, latency, quotas, subscriptions;
//! and the gateway that answers 503 while WeChat is down.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::*;

#[derive(Deserialize)]
pub(crate) struct SendBody<'a> {
    #[serde(borrow)]
    touser: Option<Cow<'a, str>>,
    #[serde(borrow)]
    template_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<HashMap<Cow<'a, str>, DataValue<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct DataValue<'a> {
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct SendQuery {
    pub(crate) access_token: Option<String>,
}

/// While the fake is down, answers 503 as a gateway would, before any handler.
pub(crate) async fn gateway(
    State(s): State<Arc<Inner>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        if request.uri().path().ends_with("/send") {
            s.send_requests.fetch_add(1, Ordering::SeqCst);
        }
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    next.run(request).await
}

pub(crate) async fn send(
    State(s): State<Arc<Inner>>,
    Query(q): Query<SendQuery>,
    body: axum::body::Bytes,
) -> Response {
    s.send_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(e) = s.check_token(q.access_token.as_deref()) {
        return e;
    }
    // Borrowed, typed parsing: the fake must stay far cheaper than the sender.
    let Ok(b) = serde_json::from_slice::<SendBody>(&body) else {
        return err(47001, "data format error");
    };
    let Some(touser) = b.touser.map(Cow::into_owned) else {
        return err(40003, "invalid openid");
    };
    let template = b.template_id.map(Cow::into_owned).unwrap_or_default();
    if template.is_empty() {
        return err(40037, "invalid template_id");
    }
    match b.data {
        Some(d) if !d.is_empty() => {
            for (k, val) in d {
                if val.value.as_deref().is_none_or(str::is_empty) {
                    return err(47003, &format!("argument invalid! data.{k}.value is empty"));
                }
            }
        }
        _ => return err(47003, "argument invalid! data is empty"),
    }
    if !s.in_flight.lock().unwrap().insert(touser.clone()) {
        s.concurrent_same_user.fetch_add(1, Ordering::SeqCst);
        return err(43108, "concurrent sends to the same user");
    }
    // Released even when the client hangs up and the handler is dropped.
    let _release = Release(&s, &touser);
    answer(&s, &touser, &template, &body).await
}

pub(crate) struct Release<'a>(&'a Arc<Inner>, &'a str);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().remove(self.1);
    }
}

pub(crate) async fn answer(s: &Arc<Inner>, touser: &str, template: &str, v: &[u8]) -> Response {
    if !s.opts.latency.is_zero() {
        // tokio's timer fires on a 1 ms tick after the deadline, and the task then
        // waits its turn, so a plain sleep adds about a millisecond more than asked.
        // Asking for less by the overshoot seen so far (a moving average) keeps the
        // delay the fake adds at `latency` on average; the bench prints the mean.
        let overshoot = Duration::from_micros(s.overshoot_us.load(Ordering::Relaxed));
        let asked = s.opts.latency.saturating_sub(overshoot);
        let started = Instant::now();
        tokio::time::sleep(asked).await;
        let took = started.elapsed();
        let over = took.saturating_sub(asked).as_micros() as u64;
        let old = s.overshoot_us.load(Ordering::Relaxed);
        s.overshoot_us
            .store((old * 15 + over) / 16, Ordering::Relaxed);
        s.added_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        s.added_count.fetch_add(1, Ordering::Relaxed);
    }
    let scripted = s
        .scripts
        .lock()
        .unwrap()
        .get_mut(touser)
        .and_then(VecDeque::pop_front);
    match scripted {
        Some(Scripted::Errcode(0)) | None => {}
        Some(Scripted::Errcode(code)) => return err(code, "scripted"),
        Some(Scripted::Http(code)) => {
            return StatusCode::from_u16(code)
                .unwrap_or(StatusCode::BAD_GATEWAY)
                .into_response();
        }
        Some(Scripted::Hang(d)) => {
            // WeChat processed it; only the reply is lost on the way back.
            if let Some(e) = s.consume_subscription(touser, template) {
                return e;
            }
            accept(s, touser, v);
            s.in_flight.lock().unwrap().remove(touser);
            tokio::time::sleep(d).await;
            return err(0, "ok");
        }
    }
    if s.chance(s.opts.busy_rate) {
        return err(-1, "system error");
    }
    if s.opts.rate_limit_per_sec > 0 {
        let mut w = s.window.lock().unwrap();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        if w.1 > s.opts.rate_limit_per_sec {
            return err(
                45011,
                "api minute-quota reach limit mustslower retry next minute",
            );
        }
    }
    if s.opts.daily_quota > 0 && s.accepted_count.load(Ordering::SeqCst) >= s.opts.daily_quota {
        return err(45009, "reach max api daily quota limit");
    }
    if let Some(e) = s.consume_subscription(touser, template) {
        return e;
    }
    let msgid = accept(s, touser, v);
    // Written by hand so that the msgid stays an exact 64-bit integer.
    let body = format!(r#"{{"errcode":0,"errmsg":"ok","msgid":{msgid}}}"#);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub(crate) fn accept(s: &Arc<Inner>, touser: &str, v: &[u8]) -> u64 {
    let n = s.accepted_count.fetch_add(1, Ordering::SeqCst) + 1;
    // Above 2^53, like real msgids, so that a lossy parser shows up.
    let msgid = 1_988_810_812_324_364_000 + n;
    if s.opts.keep_bodies {
        s.accepted.lock().unwrap().push(Accepted {
            touser: touser.to_owned(),
            msgid,
            body: serde_json::from_slice(v).ok(),
        });
    }
    msgid
}
