//! `/wechat/callback`: WeChat's message push in plaintext mode. GET proves the URL
//! is ours; POST brings events, each applied once however often WeChat retries.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::events::{self, Item, Push};
use super::{Intake, signature};
use crate::storage::StorageError;

/// How far a push's signed timestamp may be from this server's clock.
const FRESH_SECS: i64 = 600;

/// WeChat gives up on an answer after 5 s and retries; answer well before.
const DEADLINE: Duration = Duration::from_secs(4);

#[derive(Debug, Deserialize)]
pub(super) struct Signed {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    encrypt_type: Option<String>,
}

impl Signed {
    fn verified(&self, intake: &Intake) -> bool {
        let Some(token) = &intake.settings.callback_token else {
            return false;
        };
        let (Some(s), Some(t), Some(n)) = (&self.signature, &self.timestamp, &self.nonce) else {
            return false;
        };
        if !signature::verify(token, t, n, s) {
            return false;
        }
        // In plaintext mode the signature does not cover the body, so a signed
        // query seen once could carry forged bodies later: it is honoured only
        // near the time it was made.
        let now = chrono::Utc::now().timestamp();
        match t.parse::<i64>() {
            Ok(at) if (now - at).abs() <= FRESH_SECS => true,
            Ok(at) => {
                tracing::warn!(
                    skew_secs = now - at,
                    "a signed push is too old or from the future; check this server's clock"
                );
                false
            }
            Err(_) => false,
        }
    }
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "signature mismatch\n").into_response()
}

/// GET: the console's server-URL check; `echostr` goes back only to WeChat.
pub(super) async fn verify_url(State(intake): State<Intake>, Query(q): Query<Signed>) -> Response {
    if !q.verified(&intake) {
        tracing::warn!("callback URL check with a bad signature");
        return forbidden();
    }
    tracing::info!("callback URL verified by WeChat");
    q.echostr.unwrap_or_default().into_response()
}

/// POST: one event push.
pub(super) async fn push(
    State(intake): State<Intake>,
    Query(q): Query<Signed>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !q.verified(&intake) {
        tracing::warn!("event push with a bad signature");
        return forbidden();
    }
    if q.encrypt_type.as_deref().is_some_and(|e| e != "raw") {
        tracing::error!(
            "event push is encrypted; set the console's message encryption to plaintext (明文模式)"
        );
        return (
            StatusCode::NOT_IMPLEMENTED,
            "encrypted mode is not supported\n",
        )
            .into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return (e.status(), e.body_text()).into_response(),
    };
    let push = match events::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable event push");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    match tokio::time::timeout(DEADLINE, apply(&intake, &push)).await {
        Ok(Ok(())) => "success".into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot record an event push; WeChat will retry it");
            (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response()
        }
        Err(_) => {
            tracing::error!("recording an event push took too long; WeChat will retry it");
            (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response()
        }
    }
}

async fn apply(intake: &Intake, push: &Push) -> Result<(), StorageError> {
    let openid = push.openid.as_ref();
    for item in &push.items {
        match item {
            Item::Consent {
                template_id,
                result,
            } => {
                // The same push retried has the same sender, time, event and entry.
                let key = format!(
                    "{openid}|{}|{}|{}|{}",
                    push.create_time,
                    push.event,
                    template_id.as_ref(),
                    result.as_str()
                );
                let fresh = intake
                    .store
                    .apply_consent_event(&key, openid, template_id.as_ref(), *result)
                    .await?;
                crate::stats::push_event(&push.event, !fresh);
                tracing::info!(
                    openid.masked = %push.openid.masked(),
                    template_id = template_id.as_ref(),
                    result = result.as_str(),
                    duplicate = !fresh,
                    event = %push.event,
                    "consent event"
                );
            }
            Item::Sent {
                template_id,
                msgid,
                error_code,
                error_status,
            } => {
                let fresh = intake
                    .store
                    .record_sent_event(
                        *msgid,
                        openid,
                        template_id.as_ref(),
                        *error_code,
                        error_status,
                    )
                    .await?;
                crate::stats::push_event(&push.event, !fresh);
                if *error_code != 0 && fresh {
                    tracing::warn!(
                        openid.masked = %push.openid.masked(),
                        msgid,
                        error_code,
                        error_status = %error_status,
                        "WeChat could not deliver a sent message"
                    );
                }
            }
        }
    }
    Ok(())
}
