//! A stateful stand-in for the WeChat server API on 127.0.0.1, for tests and
//! benchmarks: the same paths, JSON shapes and errcodes, token rotation and expiry.
//!
//! Tokens: `/cgi-bin/stable_token` returns the same token while it is valid
//! (`force_refresh` rotates it); `/cgi-bin/token` rotates on every call and keeps
//! the previous token valid for a grace period, as WeChat does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The AppID it accepts.
    pub appid: String,
    /// The AppSecret it accepts.
    pub secret: String,
    /// `expires_in` of issued tokens, in seconds.
    pub token_ttl: u64,
    /// Added to every send.
    pub latency: Duration,
    /// Added to every token request (a slow start).
    pub token_latency: Duration,
    /// Fraction (0..1) of sends answered `-1 system busy`.
    pub busy_rate: f64,
    /// Sends accepted per second before answering 45011 (0 = no limit).
    pub rate_limit_per_sec: u64,
    /// Successful sends allowed before answering 45009 (0 = no limit).
    pub daily_quota: u64,
    /// Keep every accepted message (tests); off for benchmarks, which only count.
    pub keep_bodies: bool,
    /// The address the API IP whitelist refuses (40164 on token requests), as
    /// WeChat names it; `None`: the caller is on the whitelist.
    pub ip_not_whitelisted: Option<String>,
    /// The account's templates. When empty, any template id is accepted and no
    /// subscription is needed (benchmarks); otherwise sends must name one of them
    /// and need the user's subscription, as on the real API.
    pub templates: Vec<FakeTemplate>,
}

/// A template of the fake account, as gettemplate lists it.
#[derive(Debug, Clone)]
pub struct FakeTemplate {
    /// `priTmplId`.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its content, e.g. `"活动:{{thing1.DATA}}\n时间:{{date2.DATA}}\n"`.
    pub content: String,
    /// 2 = one-time, 3 = long-term.
    pub kind: i64,
    /// Every user holds a long-term subscription to it, for tests and benchmarks
    /// that are not about consent.
    pub everyone_subscribed: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            appid: "wx0123456789abcdef".into(),
            secret: "test-secret".into(),
            token_ttl: 7200,
            latency: Duration::ZERO,
            token_latency: Duration::ZERO,
            busy_rate: 0.0,
            rate_limit_per_sec: 0,
            daily_quota: 0,
            keep_bodies: true,
            ip_not_whitelisted: None,
            templates: Vec::new(),
        }
    }
}

/// A scripted answer for the next send to one openid.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Answer this errcode (0 = success).
    Errcode(i64),
    /// Accept the message, then answer nothing for this long (a lost reply).
    Hang(Duration),
    /// Answer this HTTP status with an empty body, without accepting.
    Http(u16),
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The recipient.
    pub touser: String,
    /// The msgid returned.
    pub msgid: u64,
    /// The request body.
    pub body: Option<Value>,
}

mod accounts;
mod crypto;
mod send;
mod state;
mod tokens;

pub use crypto::encrypt_push;
pub(crate) use state::*;

/// A running fake; dropped with the test's runtime.
#[derive(Clone)]
pub struct FakeWechat {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeWechat {
    /// Starts the fake on an ephemeral port of 127.0.0.1.
    pub async fn start(opts: FakeOptions) -> Self {
        Self::start_on("127.0.0.1:0", opts).await
    }

    /// Starts the fake on `addr`.
    pub async fn start_on(addr: &str, opts: FakeOptions) -> Self {
        let inner = Arc::new(Inner {
            opts,
            users: Mutex::default(),
            code_requests: AtomicU64::new(0),
            added_us: AtomicU64::new(0),
            added_count: AtomicU64::new(0),
            overshoot_us: AtomicU64::new(0),
            tokens: Mutex::default(),
            scripts: Mutex::default(),
            in_flight: Mutex::default(),
            accepted: Mutex::default(),
            window: Mutex::new((Instant::now(), 0)),
            token_requests: AtomicU64::new(0),
            force_refreshes: AtomicU64::new(0),
            send_requests: AtomicU64::new(0),
            accepted_count: AtomicU64::new(0),
            concurrent_same_user: AtomicU64::new(0),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(tokens::stable_token))
            .route("/cgi-bin/token", get(tokens::classic_token))
            .route("/cgi-bin/message/subscribe/send", post(send::send))
            .route("/wxaapi/newtmpl/gettemplate", get(accounts::get_templates))
            .route("/sns/jscode2session", get(accounts::jscode2session))
            .route("/cgi-bin/openapi/quota/get", post(accounts::api_quota))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&inner),
                send::gateway,
            ))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the fake");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server runs");
        });
        Self { addr, inner }
    }

    /// Takes WeChat away (`true`: every request is answered 503 by the gateway in
    /// front, nothing is accepted) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT`, for `api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Token requests received (both endpoints).
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Stable-token requests with `force_refresh: true`.
    pub fn force_refreshes(&self) -> u64 {
        self.inner.force_refreshes.load(Ordering::SeqCst)
    }

    /// Send requests received, whatever their answer.
    pub fn send_requests(&self) -> u64 {
        self.inner.send_requests.load(Ordering::SeqCst)
    }

    /// Times two sends to one openid overlapped (WeChat would answer 43108).
    pub fn concurrent_same_user(&self) -> u64 {
        self.inner.concurrent_same_user.load(Ordering::SeqCst)
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.inner.accepted.lock().unwrap().clone()
    }

    /// Count of accepted messages.
    pub fn accepted_count(&self) -> u64 {
        self.inner.accepted_count.load(Ordering::SeqCst)
    }

    /// Messages accepted for `openid`.
    pub fn accepted_for(&self, openid: &str) -> usize {
        self.inner
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.touser == openid)
            .count()
    }

    /// Queues answers for the next sends to `openid`; afterwards it gets normal ones.
    pub fn script(&self, openid: &str, answers: impl IntoIterator<Item = Scripted>) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .entry(openid.to_owned())
            .or_default()
            .extend(answers);
    }

    /// A fresh `wx.login` code for `openid`, valid for one exchange.
    pub fn login(&self, openid: &str) -> String {
        let mut u = self.inner.users.lock().unwrap();
        u.serial += 1;
        let code = format!("0a1b{:08}c2d3e4f5g6h7i8j9k0", u.serial);
        u.codes.insert(code.clone(), openid.to_owned());
        code
    }

    /// The user taps "accept" for `template` `times` times: one-time credits, or a
    /// long-term subscription.
    pub fn subscribe(&self, openid: &str, template: &str, times: u64) {
        *self
            .inner
            .users
            .lock()
            .unwrap()
            .subscriptions
            .entry((openid.to_owned(), template.to_owned()))
            .or_default() += times;
    }

    /// The mean latency the fake really added to sends (`None` before any).
    pub fn mean_added_latency(&self) -> Option<Duration> {
        let n = self.inner.added_count.load(Ordering::SeqCst);
        (n > 0).then(|| Duration::from_micros(self.inner.added_us.load(Ordering::SeqCst) / n))
    }

    /// jscode2session requests received.
    pub fn code_requests(&self) -> u64 {
        self.inner.code_requests.load(Ordering::SeqCst)
    }

    /// Invalidates every issued token, as a force refresh elsewhere would.
    pub fn revoke_tokens(&self) {
        let mut t = self.inner.tokens.lock().unwrap();
        t.valid.clear();
        t.stable = None;
    }
}

pub(crate) fn err(errcode: i64, errmsg: &str) -> Response {
    axum::Json(
        json!({"errcode": errcode, "errmsg": format!("{errmsg} rid: 6543a1b2-0c0d0e0f-12345678")}),
    )
    .into_response()
}
