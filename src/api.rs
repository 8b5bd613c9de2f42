//! `[api]`: sends on demand over HTTP, for a backend's own events. `POST
//! /v1/sends` accepts a send under the caller's `Idempotency-Key` (a retry
//! finds it, with its current state); `GET /v1/sends[/ID]` shows them; `POST
//! /v1/sends/ID/cancel` and `/v1/sends/cancel` cancel what no sender has taken.
//! Every route wants `Authorization: Bearer TOKEN`; errors are
//! `application/problem+json` naming the field at fault.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::config::ApiSettings;
use crate::delivery::{Field, Refused, SendRequest, accept, app_of, send_view};
use crate::domain::{CancelKey, IdempotencyKey, Lang, MiniprogramState, OpenId, SendStatus};
use crate::storage::{Cancel, SendFilter};

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The most sends one listing returns.
const MAX_LIMIT: u32 = 500;

#[derive(Clone)]
struct Api {
    app: Arc<App>,
    settings: Arc<ApiSettings>,
}

/// The API's OpenAPI 3 document (docs/openapi.json), served at `/v1/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("../docs/openapi.json");

/// Every route as (method, path): what `routes` serves and the document
/// describes, one list (a test holds the three together).
pub(crate) const ROUTES: [(&str, &str); 6] = [
    ("post", "/v1/sends"),
    ("get", "/v1/sends"),
    ("post", "/v1/sends/cancel"),
    ("get", "/v1/sends/{id}"),
    ("post", "/v1/sends/{id}/cancel"),
    ("get", "/v1/openapi.json"),
];

/// The routes, behind the bearer token.
pub(crate) fn routes(app: Arc<App>, settings: ApiSettings) -> Router {
    let api = Api {
        app,
        settings: Arc::new(settings),
    };
    // (`get /v1/sends` shares the first path.)
    let [send, _, by_key, one, cancel, doc] = ROUTES.map(|(_, path)| path);
    Router::new()
        .route(send, post(create).get(list))
        .route(by_key, post(cancel_by_key))
        .route(one, get(show))
        .route(cancel, post(cancel_one))
        .route(doc, get(openapi))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// 401 and nothing more unless the bearer token is the configured one,
/// compared in constant time (as digests, so that its length is not told either).
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let want = Sha1::digest(api.settings.token.expose_secret().as_bytes());
    let got = Sha1::digest(given.trim().as_bytes());
    if bool::from(want.ct_eq(&got)) && !given.is_empty() {
        next.run(request).await
    } else {
        crate::stats::api_request("unauthorized");
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response()
    }
}

/// An RFC 9457 problem: `code` for programs, `detail` naming the field for people.
fn problem(
    status: StatusCode,
    code: &'static str,
    field: Option<&str>,
    detail: String,
) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or_default(),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    response.extensions_mut().insert(Code(code));
    response
}

/// A problem's `code`, kept on its response for the metrics.
#[derive(Debug, Clone, Copy)]
struct Code(&'static str);

fn field_name(field: Field) -> &'static str {
    match field {
        Field::To => "to",
        Field::App => "app",
        Field::Job => "job",
        Field::Vars => "vars",
        Field::Template => "template_id",
        Field::Data => "data",
        Field::Page => "page",
        Field::SendAt => "send_at",
        Field::ExpiresAt => "expires_at",
        Field::CancelKey => "cancel_key",
        Field::Tz => "tz",
        Field::Policy => "policy",
    }
}

/// `POST /v1/sends`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSendBody {
    to: String,
    app: Option<String>,
    job: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    template_id: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    page: Option<String>,
    miniprogram_state: Option<MiniprogramState>,
    lang: Option<Lang>,
    send_at: Option<String>,
    expires_at: Option<String>,
    cancel_key: Option<String>,
    metadata: Option<serde_json::Map<String, Value>>,
    tz: Option<String>,
    policy: Option<crate::domain::policy::RawPolicy>,
}

/// An RFC 3339 time with its offset; `Err` is the field of one without.
fn time(field: &'static str, s: Option<&str>) -> Result<Option<DateTime<Utc>>, &'static str> {
    s.map(|s| crate::delivery::offset_time(s).ok_or(field))
        .transpose()
}

async fn create(state: State<Api>, headers: HeaderMap, body: Body) -> Response {
    let response = accept_one(state, headers, body).await;
    crate::stats::api_request(match response.status() {
        StatusCode::ACCEPTED => "accepted",
        StatusCode::OK => "replayed",
        _ => response.extensions().get::<Code>().map_or("other", |c| c.0),
    });
    response
}

async fn accept_one(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let key = match headers.get("idempotency-key").map(|v| {
        v.to_str()
            .map_err(|_| ())
            .and_then(|k| IdempotencyKey::parse(k).map_err(|_| ()))
    }) {
        Some(Ok(key)) => key,
        Some(Err(())) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                None,
                "Idempotency-Key: 1 to 255 printable ASCII characters".into(),
            );
        }
        None => {
            return problem(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                None,
                "Idempotency-Key: required (one per business event, such as order-shipped:1234)"
                    .into(),
            );
        }
    };
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                None,
                format!("the body is over {} KiB", MAX_BODY / 1024),
            );
        }
    };
    // The parsed JSON, keys sorted: a retry is compared by meaning, not bytes.
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                None,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let canonical = value.to_string();
    let asked: NewSendBody = match serde_json::from_value(value) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                None,
                format!("the body: {e}"),
            );
        }
    };
    let (send_at, expires_at) = match (
        time("send_at", asked.send_at.as_deref()),
        time("expires_at", asked.expires_at.as_deref()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(field), _) | (_, Err(field)) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(field),
                format!("{field}: not an RFC 3339 time with an offset (2026-12-05T09:00:00+08:00)"),
            );
        }
    };
    let request = SendRequest {
        to: asked.to,
        app: asked.app,
        job: asked.job,
        vars: asked.vars,
        template_id: asked.template_id,
        data: asked.data,
        page: asked.page,
        miniprogram_state: asked.miniprogram_state,
        lang: asked.lang,
        send_at,
        expires_at,
        cancel_key: asked.cancel_key,
        metadata: asked.metadata.map(|m| Value::Object(m).to_string()),
        tz: asked.tz,
        policy: asked.policy,
    };
    let app = &api.app;
    let now = app.clock.now();
    let accepted = accept(
        &app.settings,
        &app.store,
        &key,
        &request,
        &canonical,
        now,
        api.settings.max_schedule_ahead,
    )
    .await;
    match accepted {
        Ok((send, replayed)) => {
            let location = format!("/v1/sends/{}", send.id);
            let mut response = (
                if replayed {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                },
                [(header::LOCATION, location)],
                axum::Json(send_view(&send, now)),
            )
                .into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(refused) => refusal(refused),
    }
}

fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Invalid { field, message } => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some(field_name(field)),
            format!("{}: {message}", field_name(field)),
        ),
        Refused::Unknown { field, message } => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            Some(field_name(field)),
            format!("{}: {message}", field_name(field)),
        ),
        Refused::KeyReused { id } => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            None,
            format!("Idempotency-Key: made send {id} with a different request; use a new key"),
        ),
        Refused::Storage(e) => {
            tracing::error!(error = %e, "a send on demand could not be stored");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                "the database failed; retry with the same Idempotency-Key".into(),
            )
        }
    }
}

/// 404 for a send id that names no send (anything but a number, too).
fn no_send(id: impl std::fmt::Debug) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        format!("no send {id:?}"),
    )
}

async fn show(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return no_send(id);
    };
    match api.app.store.send_by_id(id).await {
        Ok(Some(send)) => axum::Json(send_view(&send, api.app.clock.now())).into_response(),
        Ok(None) => no_send(id),
        Err(e) => refusal(Refused::Storage(e)),
    }
}

/// `GET /v1/sends`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    cancel_key: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
}

async fn list(
    State(api): State<Api>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad_query",
            None,
            "the query takes status, cancel_key, to, limit and after".into(),
        );
    };
    let bad = |field: &'static str, why: String| {
        problem(
            StatusCode::BAD_REQUEST,
            "bad_query",
            Some(field),
            format!("{field}: {why}"),
        )
    };
    let (status, shown) = match q.status.as_deref() {
        None => (None, None),
        Some(s @ ("scheduled" | "queued")) => (Some(SendStatus::Pending), Some(s)),
        Some(s) => match SendStatus::parse(s) {
            Ok(st) => (Some(st), None),
            Err(e) => return bad("status", e.0),
        },
    };
    let cancel_key = match q.cancel_key.as_deref().map(CancelKey::parse).transpose() {
        Ok(k) => k,
        Err(e) => return bad("cancel_key", e.0),
    };
    let openid = match q.to.as_deref().map(OpenId::parse).transpose() {
        Ok(o) => o,
        Err(e) => return bad("to", e.0),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let now = api.app.clock.now();
    let rows = match api
        .app
        .store
        .list_sends(&SendFilter {
            appid: None,
            status,
            cancel_key: cancel_key.as_ref(),
            openid: openid.as_ref(),
            after: q.after,
            limit,
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return refusal(Refused::Storage(e)),
    };
    // A full page may have more after its last id, whatever the filter kept.
    let next_after = (rows.len() == limit as usize)
        .then(|| rows.last().map(|s| s.id))
        .flatten();
    let sends: Vec<Value> = rows
        .iter()
        .filter(|s| shown.is_none_or(|want| crate::delivery::shown_status(s, now) == want))
        .map(|s| send_view(s, now))
        .collect();
    axum::Json(json!({ "sends": sends, "next_after": next_after })).into_response()
}

async fn cancel_one(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return no_send(id);
    };
    match api.app.store.cancel_send(id).await {
        Ok(Cancel::Cancelled | Cancel::AlreadyCancelled) => {
            axum::Json(json!({ "id": id, "status": "cancelled" })).into_response()
        }
        Ok(Cancel::TooLate(status)) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json!({
                "type": "about:blank",
                "title": "Conflict",
                "status": 409,
                "code": "too_late",
                "id": id,
                "send_status": status.as_str(),
                "detail": format!("send {id} is {}: a sender has taken it", status.as_str()),
            })
            .to_string(),
        )
            .into_response(),
        Ok(Cancel::NotFound) => no_send(id),
        Err(e) => refusal(Refused::Storage(e)),
    }
}

/// `POST /v1/sends/cancel`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelByKey {
    cancel_key: String,
    app: Option<String>,
}

async fn cancel_by_key(State(api): State<Api>, body: Bytes) -> Response {
    let asked: CancelByKey = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                None,
                format!("the body: {e}"),
            );
        }
    };
    let key = match CancelKey::parse(&asked.cancel_key) {
        Ok(k) => k,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some("cancel_key"),
                format!("cancel_key: {}", e.0),
            );
        }
    };
    let appid = match app_of(&api.app.settings, asked.app.as_deref()) {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    match api.app.store.cancel_sends_by_key(&appid, &key).await {
        Ok((cancelled, too_late)) => axum::Json(json!({
            "cancel_key": key.as_ref(),
            "cancelled": cancelled,
            "too_late": too_late,
        }))
        .into_response(),
        Err(e) => refusal(Refused::Storage(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document describes exactly the routes served, each operation once.
    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    /// A send as `GET /v1/sends/ID` shows it has the document's fields, no more.
    #[test]
    fn the_documented_send_is_the_send_shown() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let schema = &doc["components"]["schemas"]["Send"];
        let mut documented: Vec<&String> =
            schema["properties"].as_object().unwrap().keys().collect();
        documented.sort();
        let row = crate::storage::SendRow {
            id: 1,
            appid: "wx0123456789abcdef".into(),
            idem_key: "k".into(),
            request: "{}".into(),
            openid: "oU00000000000000000000000001".into(),
            template_id: "t".into(),
            job: None,
            one_time: false,
            message: "{}".into(),
            cancel_key: None,
            metadata: None,
            send_at: "2026-12-05T01:00:00.000Z".into(),
            expires_at: "2026-12-05T04:00:00.000Z".into(),
            status: SendStatus::Pending,
            attempts: 0,
            errcode: None,
            errmsg: None,
            msgid: None,
            created_at: "2026-12-05T00:00:00.000Z".into(),
            updated_at: "2026-12-05T00:00:00.000Z".into(),
            tz: None,
            policy: None,
            held: None,
            digest: None,
            delivery_id: None,
            event: None,
        };
        let shown = send_view(&row, Utc::now());
        let mut fields: Vec<&String> = shown.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(documented, fields);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for field in required {
            assert!(
                shown.get(field).is_some(),
                "{field} is required but not shown"
            );
        }
    }
}
