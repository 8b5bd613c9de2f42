//! `/cgi-bin/stable_token` and `/cgi-bin/token`: issue, rotate, check.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::*;

impl Inner {
    pub(crate) fn issue(&self, t: &mut Tokens) -> String {
        t.serial += 1;
        let token = format!(
            "FAKE_TOKEN_{:06}_{:x}",
            t.serial,
            self.rng.fetch_add(7919, Ordering::Relaxed)
        );
        let expiry = Instant::now() + Duration::from_secs(self.opts.token_ttl);
        t.valid.insert(token.clone(), expiry);
        token
    }

    pub(crate) fn token_reply(&self, token: &str, t: &Tokens) -> Response {
        let left = t.valid[token]
            .saturating_duration_since(Instant::now())
            .as_secs();
        axum::Json(json!({"access_token": token, "expires_in": left})).into_response()
    }

    pub(crate) fn check_credentials(
        &self,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> Option<Response> {
        match (appid, secret) {
            (None, _) => Some(err(41002, "appid missing")),
            (_, None) => Some(err(41004, "appsecret missing")),
            (Some(a), _) if a != self.opts.appid => Some(err(40013, "invalid appid")),
            (_, Some(s)) if s != self.opts.secret => Some(err(40125, "invalid appsecret")),
            _ => self.opts.ip_not_whitelisted.as_ref().map(|ip| {
                err(
                    40164,
                    &format!("invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist rid: 6745a8b2-0c1d2e3f-4a5b6c7d"),
                )
            }),
        }
    }

    /// A cheap xorshift, so that the busy rate needs no rand crate.
    pub(crate) fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut x = self.rng.fetch_add(0x9E37_79B9, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

#[derive(Deserialize)]
pub(crate) struct StableBody {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

pub(crate) async fn stable_token(State(s): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.opts.token_latency).await;
    let Ok(b) = serde_json::from_slice::<StableBody>(&body) else {
        return err(47001, "data format error");
    };
    if b.grant_type.as_deref() != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    if let Some(e) = s.check_credentials(b.appid.as_deref(), b.secret.as_deref()) {
        return e;
    }
    let mut t = s.tokens.lock().unwrap();
    let now = Instant::now();
    if b.force_refresh {
        s.force_refreshes.fetch_add(1, Ordering::SeqCst);
        if let Some(old) = t.stable.take() {
            t.valid.remove(&old);
        }
    }
    let current = t
        .stable
        .clone()
        .filter(|tok| t.valid.get(tok).is_some_and(|exp| *exp > now));
    let token = match current {
        Some(tok) => tok,
        None => {
            let tok = s.issue(&mut t);
            t.stable = Some(tok.clone());
            tok
        }
    };
    s.token_reply(&token, &t)
}

#[derive(Deserialize)]
pub(crate) struct ClassicQuery {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
}

pub(crate) async fn classic_token(
    State(s): State<Arc<Inner>>,
    Query(q): Query<ClassicQuery>,
) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.opts.token_latency).await;
    if q.grant_type.as_deref() != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    if let Some(e) = s.check_credentials(q.appid.as_deref(), q.secret.as_deref()) {
        return e;
    }
    let mut t = s.tokens.lock().unwrap();
    // Every call rotates; the previous tokens stay valid for 5 minutes at most.
    let grace = Instant::now() + Duration::from_secs(300);
    for exp in t.valid.values_mut() {
        *exp = (*exp).min(grace);
    }
    let token = s.issue(&mut t);
    s.token_reply(&token, &t)
}

impl Inner {
    /// `None` when the token is valid, else WeChat's answer.
    pub(crate) fn check_token(&self, token: Option<&str>) -> Option<Response> {
        let Some(token) = token else {
            return Some(err(41001, "access_token missing"));
        };
        let t = self.tokens.lock().unwrap();
        match t.valid.get(token) {
            None => Some(err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            )),
            Some(exp) if *exp <= Instant::now() => Some(err(42001, "access_token expired")),
            Some(_) => None,
        }
    }

    /// `None` when WeChat would deliver to `touser` now (using up a one-time
    /// subscription), else its answer.
    pub(crate) fn consume_subscription(&self, touser: &str, template: &str) -> Option<Response> {
        if self.opts.templates.is_empty() {
            return None;
        }
        let Some(t) = self.opts.templates.iter().find(|t| t.id == template) else {
            return Some(err(40037, "invalid template_id"));
        };
        if t.everyone_subscribed {
            return None;
        }
        let mut u = self.users.lock().unwrap();
        let key = (touser.to_owned(), template.to_owned());
        match u.subscriptions.get_mut(&key) {
            Some(n) if *n > 0 => {
                if t.kind == 2 {
                    *n -= 1;
                }
                None
            }
            _ => Some(err(43101, "user refuse to accept the msg")),
        }
    }
}
