//! A stateful stand-in for the WeChat server API on 127.0.0.1, for tests and
//! benchmarks: the same paths, JSON shapes and errcodes, token rotation and expiry.
//!
//! Tokens: `/cgi-bin/stable_token` returns the same token while it is valid
//! (`force_refresh` rotates it); `/cgi-bin/token` rotates on every call and keeps
//! the previous token valid for a grace period, as WeChat does.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
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

#[derive(Default)]
struct Tokens {
    /// token -> expiry.
    valid: HashMap<String, Instant>,
    stable: Option<String>,
    serial: u64,
}

/// What WeChat knows about users that the daemon must learn through intake.
#[derive(Default)]
struct Users {
    /// Login codes not yet exchanged -> openid.
    codes: HashMap<String, String>,
    /// Codes already exchanged (a second exchange answers 40163).
    used: HashSet<String>,
    /// (openid, template) -> one-time credits, or 1 for a long-term subscription.
    subscriptions: HashMap<(String, String), u64>,
    serial: u64,
}

struct Inner {
    opts: FakeOptions,
    users: Mutex<Users>,
    code_requests: AtomicU64,
    /// Latency actually added to sends: total microseconds and count.
    added_us: AtomicU64,
    added_count: AtomicU64,
    /// Moving average of how much longer than asked a sleep takes, in microseconds.
    overshoot_us: AtomicU64,
    tokens: Mutex<Tokens>,
    scripts: Mutex<HashMap<String, VecDeque<Scripted>>>,
    in_flight: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<Accepted>>,
    window: Mutex<(Instant, u64)>,
    token_requests: AtomicU64,
    force_refreshes: AtomicU64,
    send_requests: AtomicU64,
    accepted_count: AtomicU64,
    concurrent_same_user: AtomicU64,
    rng: AtomicU64,
    /// WeChat is away: a gateway answers 503 to everything.
    down: std::sync::atomic::AtomicBool,
}

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
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/message/subscribe/send", post(send))
            .route("/wxaapi/newtmpl/gettemplate", get(get_templates))
            .route("/sns/jscode2session", get(jscode2session))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&inner),
                gateway,
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

fn err(errcode: i64, errmsg: &str) -> Response {
    axum::Json(
        json!({"errcode": errcode, "errmsg": format!("{errmsg} rid: 6543a1b2-0c0d0e0f-12345678")}),
    )
    .into_response()
}

impl Inner {
    fn issue(&self, t: &mut Tokens) -> String {
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

    fn token_reply(&self, token: &str, t: &Tokens) -> Response {
        let left = t.valid[token]
            .saturating_duration_since(Instant::now())
            .as_secs();
        axum::Json(json!({"access_token": token, "expires_in": left})).into_response()
    }

    fn check_credentials(&self, appid: Option<&str>, secret: Option<&str>) -> Option<Response> {
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
    fn chance(&self, p: f64) -> bool {
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
struct StableBody {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(State(s): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
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
struct ClassicQuery {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
}

async fn classic_token(State(s): State<Arc<Inner>>, Query(q): Query<ClassicQuery>) -> Response {
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
    fn check_token(&self, token: Option<&str>) -> Option<Response> {
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
    fn consume_subscription(&self, touser: &str, template: &str) -> Option<Response> {
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

async fn get_templates(State(s): State<Arc<Inner>>, Query(q): Query<SendQuery>) -> Response {
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

#[derive(Deserialize)]
struct CodeQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

async fn jscode2session(State(s): State<Arc<Inner>>, Query(q): Query<CodeQuery>) -> Response {
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

#[derive(Deserialize)]
struct SendBody<'a> {
    #[serde(borrow)]
    touser: Option<Cow<'a, str>>,
    #[serde(borrow)]
    template_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<HashMap<Cow<'a, str>, DataValue<'a>>>,
}

#[derive(Deserialize)]
struct DataValue<'a> {
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SendQuery {
    access_token: Option<String>,
}

/// While the fake is down, answers 503 as a gateway would, before any handler.
async fn gateway(
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

async fn send(
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

struct Release<'a>(&'a Arc<Inner>, &'a str);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().remove(self.1);
    }
}

async fn answer(s: &Arc<Inner>, touser: &str, template: &str, v: &[u8]) -> Response {
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

fn accept(s: &Arc<Inner>, touser: &str, v: &[u8]) -> u64 {
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

/// WeChat's side of secure mode (wechat-api.md §6.2): the `Encrypt` value of a
/// push carrying `message`, for the mini program `appid`, under the console's
/// 43-character `encoding_aes_key`. `random` stands for WeChat's 16 random bytes.
pub fn encrypt_push(
    encoding_aes_key: &str,
    appid: &str,
    message: &str,
    random: [u8; 16],
) -> String {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient
        .decode(format!("{encoding_aes_key}="))
        .expect("a 43-character EncodingAESKey");
    let mut plain = random.to_vec();
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    // PKCS#7 to 32-byte blocks, as WeChat pads.
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let encrypted = cbc::Encryptor::<aes::Aes256>::new(key[..32].into(), key[..16].into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("whole blocks");
    base64::engine::general_purpose::STANDARD.encode(encrypted)
}
