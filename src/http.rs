//! The daemon's HTTP listener: `/healthz` (process up), `/readyz` (the database
//! in place, migrated and writable, no storage fault in the last firings, and a
//! token cached or obtainable) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Faults;
use crate::intake::Intake;
use crate::storage::Store;
use crate::wechat::TokenManager;

#[derive(Clone)]
struct Probe {
    store: Store,
    faults: Faults,
    tokens: Tokens,
    metrics: PrometheusHandle,
}

/// Each app's token cache: the default app's (no name) first.
pub(crate) type Tokens = Arc<Vec<(Option<String>, Arc<TokenManager>)>>;

/// Serves on `listener` until `shutdown`: the probes, and the intake's and the
/// sends API's routes when given.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    probe: (Store, Faults, Tokens, PrometheusHandle),
    intake: Option<Intake>,
    api: Option<Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (store, faults, tokens, metrics) = probe;
    tracing::info!(
        listen = %listener.local_addr()?,
        intake = intake.is_some(),
        api = api.is_some(),
        "serving /healthz, /readyz and /metrics"
    );
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Probe {
            store,
            faults,
            tokens,
            metrics,
        });
    if let Some(intake) = intake {
        app = app.merge(intake.routes());
    }
    if let Some(api) = api {
        app = app.merge(api);
    }
    // The peer address feeds the intake's per-IP rate limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Serves only the intake routes on `listener` until `shutdown`: the public
/// side, apart from the probes and metrics.
pub(crate) async fn serve_intake(
    listener: tokio::net::TcpListener,
    intake: Intake,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(
        listen = %listener.local_addr()?,
        "serving the intake API (/v1/subscriptions, /wechat/callback)"
    );
    axum::serve(
        listener,
        intake
            .routes()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Serves only the sends API on `listener` until `shutdown` (`[api] listen`).
pub(crate) async fn serve_api(
    listener: tokio::net::TcpListener,
    api: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "serving the sends API (/v1/sends)");
    axum::serve(listener, api)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(p): State<Probe>) -> (StatusCode, String) {
    let answer = readiness(&p).await;
    crate::stats::ready(answer.0 == StatusCode::OK);
    answer
}

/// How long `/readyz` waits for the database.
const PING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn readiness(p: &Probe) -> (StatusCode, String) {
    // Every reason at once, so that one fix does not reveal the next.
    let mut problems = Vec::new();
    // Bounded: a database that is down makes each new connection wait out the
    // pool's acquire timeout, and a probe must answer before its own timeout.
    match tokio::time::timeout(PING_WAIT, p.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(_) => problems.push(format!(
            "database: does not answer within {}",
            humantime::format_duration(PING_WAIT)
        )),
    }
    if let Some(faults) = p.faults.summary() {
        problems.push(faults);
    }
    if problems.is_empty() {
        // Every app's token: one app that cannot get one is named, and the
        // others are still checked.
        for (app, tokens) in p.tokens.iter() {
            if let Err(e) = tokens.get().await {
                problems.push(match app {
                    None => e.to_string(),
                    Some(name) => format!("app {name}: {e}"),
                });
            }
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn render_metrics(State(p): State<Probe>) -> String {
    // Readiness as of this scrape, so that an alert needs no probe of its own.
    crate::stats::ready(readiness(&p).await.0 == StatusCode::OK);
    crate::stats::process();
    // Unfinished runs as the database has them, whichever process left them.
    if let Ok(Ok(counts)) = tokio::time::timeout(PING_WAIT, p.store.unfinished_by_status()).await {
        crate::stats::unfinished_runs(&counts);
    }
    if let Ok(Ok((scheduled, queued))) =
        tokio::time::timeout(PING_WAIT, p.store.send_queue(chrono::Utc::now())).await
    {
        crate::stats::on_demand_queue(scheduled, queued);
    }
    if let Ok(Ok(deferred)) = tokio::time::timeout(PING_WAIT, p.store.deferred_count()).await {
        crate::stats::policy_deferred(deferred);
    }
    p.metrics.render()
}

/// How long `wxpush health` waits for `/readyz`.
const HEALTH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where to reach a listener bound to `addr`: a wildcard (`0.0.0.0`, `[::]`)
/// is reached on the loopback address of its family.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Why a request got no answer, in words: the cause at the bottom of the
/// error's chain (reqwest says only "error sending request").
fn why_not(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {} (is the daemon stuck, or is something else listening there?)",
            humantime::format_duration(HEALTH_WAIT)
        );
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
    {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused (is the daemon running, with this [http] listen?)".to_owned()
        }
        _ => cause.to_string(),
    }
}

/// `wxpush health`: asks the daemon's `/readyz`; Ok when it answers 200.
pub(crate) async fn check(addr: SocketAddr) -> Result<String, String> {
    let url = format!("http://{}/readyz", probe_addr(addr));
    let client = reqwest::Client::builder()
        .timeout(HEALTH_WAIT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", why_not(&e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body.trim().to_owned())
    } else {
        Err(format!("{url}: HTTP {}: {}", status.as_u16(), body.trim()))
    }
}
