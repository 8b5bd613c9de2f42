//! The intake API, served on the `[http]` listener when `[intake] enabled`:
//! `POST /v1/subscriptions` (the mini program's backend reports a login code and
//! the user's subscribe choices) and `GET/POST /wechat/callback` (WeChat's
//! message push: consent changes and final send results).

mod callback;
mod crypto;
mod events;
mod signature;
mod subscriptions;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::IntakeSettings;
use crate::storage::Store;
use crate::wechat::WechatClient;

pub use crypto::AesKey;
pub use signature::{sign, sign_encrypted};

/// How long an applied push is remembered (WeChat's retries come within seconds).
const EVENT_MEMORY: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// What the intake handlers share.
#[derive(Clone)]
pub struct Intake {
    store: Store,
    client: WechatClient,
    settings: Arc<IntakeSettings>,
    per_ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Intake {
    /// Handlers over `store`, exchanging codes with `client`.
    pub fn new(store: Store, client: WechatClient, settings: IntakeSettings) -> Self {
        let per_minute = NonZeroU32::new(settings.per_ip_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            store,
            client,
            settings: Arc::new(settings),
            per_ip: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
        }
    }

    /// Forgets idle clients and long-applied pushes now and then, so that neither
    /// the limiter nor the event table grows without bound; until `shutdown`.
    pub async fn maintain(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        for minute in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            self.per_ip.retain_recent();
            self.per_ip.shrink_to_fit();
            if minute % 60 == 0 {
                let before = chrono::Utc::now() - EVENT_MEMORY;
                if let Err(e) = self.store.prune_consent_events(before).await {
                    tracing::warn!(error = %e, "cannot prune applied events");
                }
            }
        }
    }

    /// The intake routes, with the body size limit applied.
    pub fn routes(self) -> Router {
        let limit = self.settings.max_body_bytes;
        let mut router = Router::new().route("/v1/subscriptions", post(subscriptions::post));
        if self.settings.callback_token.is_some() {
            router = router.route(
                "/wechat/callback",
                get(callback::verify_url).post(callback::push),
            );
        }
        router.layer(DefaultBodyLimit::max(limit)).with_state(self)
    }
}

/// A JSON error answer naming the field at fault, when there is one.
pub(crate) fn json_error(
    status: StatusCode,
    field: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let mut body = serde_json::json!({ "error": message.into() });
    if let Some(f) = field {
        body["field"] = f.into();
    }
    (status, Json(body)).into_response()
}
