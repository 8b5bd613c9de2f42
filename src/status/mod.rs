//! `[status]`: a read-only status page under `/status` (overview, runs, a
//! run's deliveries, sends, consent, one person) and the same data as JSON
//! under `/v1/status/`, on the private `[http]` listener, optionally behind
//! HTTP basic auth (user `wxpush`). Nothing here writes: every page is reads
//! of the store and of what the daemon holds in memory.

mod overview;
mod people;
mod runs;
mod sends;
mod ui;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use maud::Markup;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::config::StatusSettings;
use crate::domain::{Counts, RunStatus};
use crate::storage::{RunRow, StorageError};
use crate::wechat::ApiQuota;
use ui::Lang;

/// The user name basic auth asks for.
const USER: &str = "wxpush";

/// Rows per page of runs, deliveries and sends.
const PAGE: u32 = 100;

/// What every page reads from.
#[derive(Clone)]
pub(crate) struct Status {
    app: Arc<App>,
    settings: Arc<StatusSettings>,
    /// Runs' counts by id: a finished run of a million deliveries is counted
    /// once, not on each look, and a running one at most every `LIVE_FOR`
    /// however often the page is polled (counting it reads all its rows,
    /// beside the sender writing them).
    counts: CountsCache,
    /// Each app's send quota as WeChat last gave it (or why not), by AppID.
    quotas: QuotaCache,
}

/// Quotas by AppID: when asked, and the answer.
type QuotaCache = Arc<Mutex<HashMap<String, (Instant, Result<ApiQuota, String>)>>>;

/// How long WeChat's quota answer is shown before it is asked again (a failed
/// ask, a fifth of it): the page must not spend the account's calls.
const QUOTA_FOR: Duration = Duration::from_secs(300);

/// How long the overview waits for WeChat's quota answer.
const QUOTA_WAIT: Duration = Duration::from_secs(2);

/// Runs' counts by id, with the status and `finished_at` they were counted
/// at, and when.
type CountsCache = Arc<Mutex<HashMap<i64, (RunStatus, Option<String>, Instant, Counts)>>>;

/// How long a running run's counts are shown before they are counted again.
const LIVE_FOR: Duration = Duration::from_secs(5);

/// The routes, behind the password when one is set.
pub(crate) fn routes(app: Arc<App>, settings: StatusSettings) -> Router {
    let status = Status {
        app,
        settings: Arc::new(settings),
        counts: Arc::default(),
        quotas: Arc::default(),
    };
    Router::new()
        .route("/status", get(overview::page))
        .route("/status/", get(overview::page))
        .route("/v1/status/overview", get(overview::json))
        .route("/status/runs", get(runs::list_page))
        .route("/v1/status/runs", get(runs::list_json))
        .route("/status/runs/{id}", get(runs::detail_page))
        .route("/v1/status/runs/{id}", get(runs::detail_json))
        .route("/status/sends", get(sends::page))
        .route("/v1/status/sends", get(sends::json))
        .route("/status/consent", get(people::consent_page))
        .route("/v1/status/consent", get(people::consent_json))
        .route("/status/person", get(people::person_page))
        .route("/v1/status/person", get(people::person_json))
        .route_layer(middleware::from_fn_with_state(status.clone(), authorize))
        .with_state(status)
}

/// 401 unless basic auth names `wxpush` and the password, compared in
/// constant time (as digests, so that the length is not told either).
async fn authorize(State(status): State<Status>, request: Request, next: Next) -> Response {
    let Some(password) = &status.settings.password else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let want = Sha1::digest(format!("{USER}:{}", password.expose_secret()).as_bytes());
    let got = Sha1::digest(given.as_bytes());
    if bool::from(want.ct_eq(&got)) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"wxpush status\", charset=\"UTF-8\"",
            )],
            "401: the status page wants user wxpush and the password in [status] password_file\n",
        )
            .into_response()
    }
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
enum Problem {
    /// A query parameter at fault.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing (an unknown run, a person nothing is known of).
    #[error("{0}")]
    NotFound(String),
    /// The database failed: the page cannot be read now.
    #[error("the database could not be read: {0}")]
    Store(#[from] StorageError),
}

impl Problem {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// An RFC 9457 problem, as the sends API answers.
    fn json(&self) -> Response {
        let status = self.status();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json!({
                "type": "about:blank",
                "title": status.canonical_reason().unwrap_or_default(),
                "status": status.as_u16(),
                "detail": self.to_string(),
            })
            .to_string(),
        )
            .into_response()
    }

    fn html(&self, lang: Lang) -> Response {
        let title = match self {
            Self::BadRequest(_) => lang.pick("Bad request", "请求有误"),
            Self::NotFound(_) => lang.pick("Not found", "未找到"),
            Self::Store(_) => lang.pick("Database unavailable", "数据库不可用"),
        };
        let body = maud::html! { p.bad { (self.to_string()) } };
        (
            self.status(),
            Html(ui::page(lang, "/status", title, "", body).into_string()),
        )
            .into_response()
    }
}

/// A query parameter's value parsed, or a 400 naming it.
fn parsed<T>(
    name: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Problem> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v)
            .map(Some)
            .ok_or_else(|| Problem::BadRequest(format!("{name}: {v:?} is not valid here"))),
    }
}

/// The query's parameters, refusing any not in `known` (a typo would
/// otherwise silently show everything).
fn params(query: Option<&str>, known: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k != "lang" && !known.contains(&k.as_ref()) {
            return Err(Problem::BadRequest(format!(
                "unknown query parameter {k:?}; this page takes {}",
                if known.is_empty() {
                    "only lang".to_owned()
                } else {
                    format!("{} and lang", known.join(", "))
                }
            )));
        }
        if k == "lang" {
            Lang::of(Some(&v), &HeaderMap::new()).map_err(Problem::BadRequest)?;
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

/// A page's parameters (only `known` and `lang`) and its language, or the 400
/// naming the parameter at fault.
fn prepare(
    query: Option<&str>,
    known: &[&str],
    headers: &HeaderMap,
) -> Result<(HashMap<String, String>, Lang), Problem> {
    let p = params(query, known)?;
    let lang = Lang::of(p.get("lang").map(String::as_str), headers).map_err(Problem::BadRequest)?;
    Ok((p, lang))
}

/// JSON of what a route shows (the store's shapes, as the CLI's `--json`
/// prints them), or its problem.
fn json_answer(shown: Result<impl Serialize, Problem>) -> Response {
    match shown {
        Ok(data) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&data).expect("status data serialises"),
        )
            .into_response(),
        Err(p) => p.json(),
    }
}

/// A whole page: `body` under `title`, the navigation marking `here` and the
/// language switch keeping `query`; or its problem as a page.
fn html_answer(
    lang: Lang,
    here: &str,
    title: &str,
    query: Option<&str>,
    body: Result<Markup, Problem>,
) -> Response {
    match body {
        Ok(body) => {
            let page = ui::page(lang, here, title, query.unwrap_or_default(), body);
            Html(page.into_string()).into_response()
        }
        Err(e) => e.html(lang),
    }
}

impl Status {
    /// Run `run`'s counts: from the cache when it was counted in the same
    /// state (finished at the same `finished_at`; or not finished, less than
    /// `LIVE_FOR` ago), else counted now (from indexes alone when it is done;
    /// see `done_run_counts`) and kept.
    async fn counts(&self, run: &RunRow) -> Result<Counts, StorageError> {
        let finished = matches!(run.status, RunStatus::Done | RunStatus::Skipped);
        if let Some((status, at, when, counts)) =
            self.counts.lock().expect("not poisoned").get(&run.id)
            && *status == run.status
            && *at == run.finished_at
            && (finished || when.elapsed() < LIVE_FOR)
        {
            return Ok(*counts);
        }
        let counts = if run.status == RunStatus::Done {
            self.app.store.done_run_counts(run.id).await?
        } else {
            self.app.store.run_counts(run.id).await?
        };
        let mut cache = self.counts.lock().expect("not poisoned");
        // Bounded: a page shows at most PAGE runs; a cache of many pages'
        // worth is dropped whole rather than tracked by age.
        if cache.len() > 50 * PAGE as usize {
            cache.clear();
        }
        let kept = (run.status, run.finished_at.clone(), Instant::now(), counts);
        cache.insert(run.id, kept);
        Ok(counts)
    }

    /// App `name`'s daily quota of sends (`None`: the default app), from the
    /// cache while it is fresh, else asked of WeChat (with its token, at most
    /// `QUOTA_WAIT`). An account that does not answer shows why.
    async fn quota(&self, name: Option<&crate::domain::AppName>) -> Result<ApiQuota, String> {
        let runtime = self.app.runtime(name);
        let appid = runtime.client.appid().to_string();
        if let Some((at, answer)) = self.quotas.lock().expect("not poisoned").get(&appid) {
            let fresh = if answer.is_ok() {
                QUOTA_FOR
            } else {
                QUOTA_FOR / 5
            };
            if at.elapsed() < fresh {
                return answer.clone();
            }
        }
        // Only with a token already cached and fresh: the page never fetches
        // one (a fetch is a write, and a classic token's fetch would end the
        // one in use).
        let ask = async {
            let stored = self
                .app
                .store
                .load_token(runtime.client.appid(), runtime.tokens.source().as_str())
                .await
                .map_err(|e| e.to_string())?;
            let fresh = stored.filter(|t| t.expires_at > chrono::Utc::now().timestamp() + 60);
            let Some(token) = fresh else {
                return Err("no access_token cached yet (asked once one is)".to_owned());
            };
            runtime
                .client
                .send_quota(&token.token)
                .await
                .map_err(|e| e.to_string())
        };
        let answer = tokio::time::timeout(QUOTA_WAIT, ask)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(QUOTA_WAIT)
                ))
            });
        self.quotas
            .lock()
            .expect("not poisoned")
            .insert(appid, (Instant::now(), answer.clone()));
        answer
    }

    /// `runs` with their counts.
    async fn counted(&self, mut runs: Vec<RunRow>) -> Result<Vec<RunRow>, StorageError> {
        for run in &mut runs {
            run.counts = self.counts(run).await?;
        }
        Ok(runs)
    }

    /// The app name (`default` for `[wechat]`) of `job`, if it is configured.
    fn app_of_job(&self, job: &str) -> Option<String> {
        self.app.settings.job(job).map(|j| {
            j.app
                .as_ref()
                .map_or("default".to_owned(), ToString::to_string)
        })
    }

    /// The zone `job`'s times are shown in (UTC for a job no longer configured).
    fn tz_of_job(&self, job: &str) -> chrono_tz::Tz {
        self.app
            .settings
            .job(job)
            .map_or(chrono_tz::UTC, |j| j.schedule.tz())
    }
}
