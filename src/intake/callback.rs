//! `/wechat/callback`: WeChat's message push, in plaintext, compatible or secure
//! mode. GET proves the URL is ours; POST brings events, each applied once however
//! often WeChat retries.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::events::{self, Item, Push};
use super::{Intake, IntakeApp, signature};
use crate::domain::AppId;
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
    msg_signature: Option<String>,
}

impl Signed {
    fn verified(&self, app: &IntakeApp) -> bool {
        let Some(token) = &app.callback_token else {
            return false;
        };
        let (Some(s), Some(t), Some(n)) = (&self.signature, &self.timestamp, &self.nonce) else {
            return false;
        };
        if !signature::verify(token, t, n, s) {
            return false;
        }
        // In plaintext mode the signature does not cover the body, so a signed
        // query seen once could carry forged bodies later; in secure mode an old
        // push replayed after the event memory would undo a later change. So a
        // signed query is honoured only near the time it was made.
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
    crate::stats::callback_rejected("signature");
    (StatusCode::FORBIDDEN, "signature mismatch\n").into_response()
}

/// GET `/wechat/callback`: the default app's URL check.
pub(super) async fn verify_url(State(intake): State<Intake>, Query(q): Query<Signed>) -> Response {
    check_url(intake.default_app(), q)
}

/// GET `/wechat/callback/NAME`: app NAME's URL check.
pub(super) async fn verify_url_of(
    State(intake): State<Intake>,
    Path(name): Path<String>,
    Query(q): Query<Signed>,
) -> Response {
    match intake.app_named(&name) {
        Some(app) => check_url(app, q),
        None => no_such_app(&name),
    }
}

/// No `[apps.NAME]` by that name, or one without a callback token.
fn no_such_app(name: &str) -> Response {
    tracing::warn!(app = name, "callback for an app that is not configured");
    (StatusCode::NOT_FOUND, "no such app\n").into_response()
}

/// The console's server-URL check; `echostr` goes back only to WeChat.
fn check_url(app: &IntakeApp, q: Signed) -> Response {
    if !q.verified(app) {
        tracing::warn!("callback URL check with a bad signature");
        return forbidden();
    }
    tracing::info!("callback URL verified by WeChat");
    q.echostr.unwrap_or_default().into_response()
}

/// POST `/wechat/callback`: one event push for the default app.
pub(super) async fn push(
    State(intake): State<Intake>,
    Query(q): Query<Signed>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let app = intake.default_app().clone();
    push_for(&intake, &app, q, body).await
}

/// POST `/wechat/callback/NAME`: one event push for app NAME.
pub(super) async fn push_of(
    State(intake): State<Intake>,
    Path(name): Path<String>,
    Query(q): Query<Signed>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(app) = intake.app_named(&name).cloned() else {
        return no_such_app(&name);
    };
    push_for(&intake, &app, q, body).await
}

/// One event push, signed and sealed with `app`'s secrets.
async fn push_for(
    intake: &Intake,
    app: &IntakeApp,
    q: Signed,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !q.verified(app) {
        tracing::warn!("event push with a bad signature");
        return forbidden();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            crate::stats::callback_rejected("body");
            return (e.status(), e.body_text()).into_response();
        }
    };
    let plain: Cow<'_, [u8]> = match q.encrypt_type.as_deref() {
        None | Some("raw") => Cow::Borrowed(&body),
        Some("aes") => match open(app, &q, &body) {
            Ok(plain) => Cow::Owned(plain),
            Err(answer) => {
                crate::stats::callback_rejected("decrypt");
                return answer.into_response();
            }
        },
        Some(other) => {
            crate::stats::callback_rejected("body");
            return (
                StatusCode::BAD_REQUEST,
                format!("encrypt_type {other:?} is not raw or aes\n"),
            )
                .into_response();
        }
    };
    let push = match events::parse(&plain) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable event push");
            crate::stats::callback_rejected("body");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    match tokio::time::timeout(DEADLINE, apply(intake, app.client.appid(), &push)).await {
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

/// The message inside a secure- or compatible-mode push, once `msg_signature`
/// proves the ciphertext came from WeChat.
fn open(app: &IntakeApp, q: &Signed, body: &[u8]) -> Result<Vec<u8>, (StatusCode, String)> {
    let Some(key) = &app.aes_key else {
        tracing::error!(
            "event push is encrypted; set intake.encoding_aes_key to the console's EncodingAESKey"
        );
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "set intake.encoding_aes_key to receive encrypted pushes\n".into(),
        ));
    };
    let encrypt = events::encrypted_part(body).map_err(|e| {
        tracing::warn!(error = %e, "unreadable encrypted push");
        (StatusCode::BAD_REQUEST, format!("{e}\n"))
    })?;
    let token = app.callback_token.as_ref();
    let signed = match (token, &q.timestamp, &q.nonce, &q.msg_signature) {
        (Some(token), Some(t), Some(n), Some(s)) => {
            signature::verify_encrypted(token, t, n, &encrypt, s)
        }
        _ => false,
    };
    if !signed {
        tracing::warn!("encrypted push with a bad msg_signature");
        return Err((StatusCode::FORBIDDEN, "signature mismatch\n".into()));
    }
    key.decrypt(&encrypt, app.client.appid().as_ref())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot open an encrypted push");
            (StatusCode::BAD_REQUEST, format!("{e}\n"))
        })
}

async fn apply(intake: &Intake, appid: &AppId, push: &Push) -> Result<(), StorageError> {
    let openid = &push.openid;
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
                    .apply_consent_event(appid, &key, openid, template_id, *result)
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
                        appid,
                        *msgid,
                        openid,
                        template_id,
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
