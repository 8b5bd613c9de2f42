//! `wxpush sends [add|show|cancel]`: sends on demand from a script without
//! HTTP. Accepted here (checked, rendered, stored under an idempotency key);
//! the daemon sends each when it is due.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Console, Exit, Failure, outln};
use crate::cli::{SendsArgs, SendsCommand};
use crate::config::Settings;
use crate::delivery::{
    Field, Refused, SendRequest, accept, app_of, send_view as view, shown_status,
};
use crate::domain::{CancelKey, IdempotencyKey, OpenId, SendStatus};
use crate::storage::{Cancel, SendFilter, SendRow, Store};

/// How far ahead a send may be scheduled without `[api]` (its default).
const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub(super) async fn run(
    settings: Settings,
    args: SendsArgs,
    out: &mut Console,
) -> Result<Exit, Failure> {
    match args.command {
        Some(SendsCommand::Add(a)) => {
            let a = *a;
            let ask = Ask {
                to: a.to,
                job: a.job,
                vars: a.vars,
                template: a.template,
                data: a.data,
                page: a.page,
                app: a.app,
                at: a.at,
                expires: a.expires,
                cancel_key: a.cancel_key,
                tz: a.tz,
                policy: a.policy,
            };
            add(&settings, ask, a.key, a.json, out).await
        }
        Some(SendsCommand::Show { id, json }) => {
            let store = super::open_for_reading(&settings).await?;
            let send = store.send_by_id(id).await?.ok_or_else(|| {
                Failure::usage(format!("no send with id {id} (see `wxpush sends`)"))
            })?;
            let view = view(&send, Utc::now());
            if json {
                outln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&view).expect("json")
                );
            } else {
                outln!(out, "{}", line(&send, Utc::now()));
            }
            Ok(Exit::Ok)
        }
        Some(SendsCommand::Cancel {
            id,
            cancel_key,
            app,
        }) => cancel(&settings, id, cancel_key, app, out).await,
        None => list(&settings, &args, out).await,
    }
}

/// What `sends add` was asked, as stored for comparing a retry with.
#[derive(Debug, serde::Serialize)]
struct Ask {
    to: String,
    job: Option<String>,
    vars: Vec<String>,
    template: Option<String>,
    data: Vec<String>,
    page: Option<String>,
    app: Option<String>,
    at: Option<String>,
    expires: Option<String>,
    cancel_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tz: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
}

async fn add(
    settings: &Settings,
    ask: Ask,
    key: Option<String>,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let now = Utc::now();
    let request = SendRequest {
        to: ask.to.clone(),
        app: ask.app.clone(),
        job: ask.job.clone(),
        vars: pairs("--var", &ask.vars)?,
        template_id: ask.template.clone(),
        data: pairs("--data", &ask.data)?,
        page: ask.page.clone(),
        miniprogram_state: None,
        lang: None,
        send_at: ask.at.as_deref().map(|t| time("--at", t)).transpose()?,
        expires_at: ask
            .expires
            .as_deref()
            .map(|t| time("--expires", t))
            .transpose()?,
        cancel_key: ask.cancel_key.clone(),
        metadata: None,
        tz: ask.tz.clone(),
        policy: ask
            .policy
            .as_deref()
            .map(|p| {
                serde_json::from_str(p)
                    .map_err(|e| Failure::usage(format!("--policy: not a policy object: {e}")))
            })
            .transpose()?,
    };
    let key = match key {
        Some(k) => IdempotencyKey::parse(&k).map_err(|e| Failure::usage(format!("--key: {e}")))?,
        // Without a key each add is its own send.
        None => IdempotencyKey::parse(&format!(
            "cli:{}:{}",
            now.timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        ))
        .expect("a printable key"),
    };
    let store = Store::open_with(&settings.database.url, &settings.database.open_options()).await?;
    let canonical = serde_json::to_string(&ask).expect("json");
    let max_ahead = settings
        .api
        .as_ref()
        .map_or(MAX_AHEAD, |a| a.max_schedule_ahead);
    let send = match accept(settings, &store, &key, &request, &canonical, now, max_ahead).await {
        Ok((send, _replayed)) => send,
        Err(Refused::Invalid { field, message } | Refused::Unknown { field, message }) => {
            return Err(Failure::usage(format!("{}: {message}", flag(field))));
        }
        Err(Refused::KeyReused { id }) => {
            return Err(Failure::usage(format!(
                "--key: {} was used for send {id} with other arguments; use a new key",
                key.as_ref()
            )));
        }
        Err(Refused::Storage(e)) => return Err(e.into()),
    };
    if json {
        let v = view(&send, now);
        outln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        outln!(out, "{} (key {})", line(&send, now), send.idem_key);
    }
    Ok(Exit::Ok)
}

/// The flag of the command line that sets `field`.
fn flag(field: Field) -> &'static str {
    match field {
        Field::To => "--to",
        Field::App => "--app",
        Field::Job => "--job",
        Field::Vars => "--var",
        Field::Template => "--template",
        Field::Data => "--data",
        Field::Page => "--page",
        Field::SendAt => "--at",
        Field::ExpiresAt => "--expires",
        Field::CancelKey => "--cancel-key",
        Field::Tz => "--tz",
        Field::Policy => "--policy",
    }
}

async fn cancel(
    settings: &Settings,
    id: Option<i64>,
    cancel_key: Option<String>,
    app: Option<String>,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let store = super::open_for_reading(settings).await?;
    if let Some(key) = cancel_key {
        let key =
            CancelKey::parse(&key).map_err(|e| Failure::usage(format!("--cancel-key: {e}")))?;
        let appid = app_of(settings, app.as_deref()).map_err(|e| match e {
            Refused::Unknown { message, .. } => Failure::usage(format!("--app: {message}")),
            _ => Failure::usage("--app"),
        })?;
        let (n, too_late) = store.cancel_sends_by_key(&appid, &key).await?;
        outln!(out, "cancelled {n} send(s) of cancel key {}", key.as_ref());
        if too_late > 0 {
            outln!(
                out,
                "{too_late} send(s) of it were too late to cancel (taken by a sender, or ended): see wxpush sends --cancel-key {}",
                key.as_ref()
            );
            return Ok(Exit::SomeFailed);
        }
        return Ok(Exit::Ok);
    }
    let id = id.expect("clap requires an id or --cancel-key");
    match store.cancel_send(id).await? {
        Cancel::Cancelled => outln!(out, "send {id}: cancelled; nobody gets it"),
        Cancel::AlreadyCancelled => outln!(out, "send {id}: cancelled already"),
        Cancel::TooLate(status) => {
            outln!(
                out,
                "send {id}: too late to cancel: it is {}",
                status.as_str()
            );
            return Ok(Exit::SomeFailed);
        }
        Cancel::NotFound => {
            return Err(Failure::usage(format!(
                "no send with id {id} (see `wxpush sends`)"
            )));
        }
    }
    Ok(Exit::Ok)
}

async fn list(settings: &Settings, args: &SendsArgs, out: &mut Console) -> Result<Exit, Failure> {
    let store = super::open_for_reading(settings).await?;
    let now = Utc::now();
    // `scheduled` and `queued` are a pending send before and after its time.
    let (status, shown) = match args.status.as_deref() {
        None => (None, None),
        Some(s @ ("scheduled" | "queued")) => (Some(SendStatus::Pending), Some(s)),
        Some(s) => (
            Some(SendStatus::parse(s).map_err(|e| Failure::usage(format!("--status: {e}")))?),
            None,
        ),
    };
    let cancel_key = args
        .cancel_key
        .as_deref()
        .map(CancelKey::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--cancel-key: {e}")))?;
    let openid = args
        .to
        .as_deref()
        .map(OpenId::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--to: {e}")))?;
    let sends = store
        .list_sends(&SendFilter {
            appid: None,
            status,
            cancel_key: cancel_key.as_ref(),
            openid: openid.as_ref(),
            after: args.after,
            limit: args.limit,
        })
        .await?;
    let sends: Vec<&SendRow> = sends
        .iter()
        .filter(|s| shown.is_none_or(|want| shown_status(s, now) == want))
        .collect();
    if args.json {
        let all: Vec<Value> = sends.iter().map(|s| view(s, now)).collect();
        outln!(out, "{}", serde_json::to_string_pretty(&all).expect("json"));
    } else {
        for s in sends {
            outln!(out, "{}", line(s, now));
        }
    }
    Ok(Exit::Ok)
}

/// An RFC 3339 time that says its offset.
fn time(flag: &str, s: &str) -> Result<DateTime<Utc>, Failure> {
    crate::delivery::offset_time(s).ok_or_else(|| {
        Failure::usage(format!(
            "{flag}: {s:?} is not an RFC 3339 time with an offset (2026-12-05T09:00:00+08:00)"
        ))
    })
}

/// `NAME=VALUE` arguments of `flag`.
fn pairs(flag: &str, args: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure::usage(format!("{flag}: {a:?} is not NAME=VALUE")))
        })
        .collect()
}

/// One send in a line.
fn line(send: &SendRow, now: DateTime<Utc>) -> String {
    let mut s = format!(
        "send {}: {} to {} at {} (expires {})",
        send.id,
        shown_status(send, now),
        send.openid,
        send.send_at,
        send.expires_at
    );
    if let Some(code) = send.errcode.filter(|c| *c != 0) {
        s.push_str(&format!(", errcode {code}"));
    }
    if let Some(msg) = &send.errmsg {
        s.push_str(&format!(": {msg}"));
    }
    if let Some(msgid) = &send.msgid {
        s.push_str(&format!(", msgid {msgid}"));
    }
    s
}
