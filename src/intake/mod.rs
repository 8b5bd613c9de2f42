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
    settings: Arc<IntakeSettings>,
    /// The default app first, then `[apps.NAME]`.
    apps: Arc<Vec<IntakeApp>>,
    per_ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

/// One mini program's side of the intake: the client that exchanges its login
/// codes, and the secrets its pushes are signed and sealed with.
#[derive(Clone)]
pub struct IntakeApp {
    /// `None`: the default app, at `/wechat/callback`; else `/wechat/callback/NAME`.
    pub name: Option<crate::domain::AppName>,
    /// Its WeChat client (its appid checks sealed pushes).
    pub client: WechatClient,
    /// Its message-push Token.
    pub callback_token: Option<secrecy::SecretString>,
    /// Its EncodingAESKey.
    pub aes_key: Option<AesKey>,
}

impl Intake {
    /// Handlers over `store` for the default app (`client`, with `settings`'
    /// callback secrets) and `more` apps.
    pub fn new(
        store: Store,
        client: WechatClient,
        settings: IntakeSettings,
        more: Vec<IntakeApp>,
    ) -> Self {
        let per_minute = NonZeroU32::new(settings.per_ip_per_minute).unwrap_or(NonZeroU32::MIN);
        let default = IntakeApp {
            name: None,
            client,
            callback_token: settings.callback_token.clone(),
            aes_key: settings.aes_key.clone(),
        };
        Self {
            store,
            settings: Arc::new(settings),
            apps: Arc::new(std::iter::once(default).chain(more).collect()),
            per_ip: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
        }
    }

    /// The default app.
    fn default_app(&self) -> &IntakeApp {
        &self.apps[0]
    }

    /// The app called `name` in `/wechat/callback/NAME`.
    fn app_named(&self, name: &str) -> Option<&IntakeApp> {
        self.apps
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.as_ref() == name))
    }

    /// The app whose AppID is `appid` (a subscription report's `"appid"`).
    fn app_with_appid(&self, appid: &str) -> Option<&IntakeApp> {
        self.apps
            .iter()
            .find(|a| a.client.appid().as_ref() == appid)
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
        if self.default_app().callback_token.is_some() {
            router = router.route(
                "/wechat/callback",
                get(callback::verify_url).post(callback::push),
            );
        }
        if self.apps[1..].iter().any(|a| a.callback_token.is_some()) {
            router = router.route(
                "/wechat/callback/{app}",
                get(callback::verify_url_of).post(callback::push_of),
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
