//! `wxpush sends [add|show|cancel]`: sends on demand from a script without
//! HTTP. Accepted here (checked, rendered, stored under an idempotency key);
//! the daemon sends each when it is due.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use serde_json::{Value, json};

use super::{Console, Exit, Failure, find_job, outln};
use crate::cli::{SendsArgs, SendsCommand};
use crate::config::Settings;
use crate::delivery::SendBody;
use crate::domain::{
    AppId, Builtins, CancelKey, IdempotencyKey, OpenId, SendStatus, TemplateId, TemplateKind,
};
use crate::storage::{Accepted, Cancel, NewSend, SendFilter, SendRow, Store};

/// How far ahead a send may be scheduled (`[api] max_schedule_ahead`'s default).
const MAX_AHEAD: Duration = Duration::days(30);
/// How long a template send (no job, so no send window) may still go after its time.
const TEMPLATE_WINDOW: Duration = Duration::hours(3);

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
}

async fn add(
    settings: &Settings,
    ask: Ask,
    key: Option<String>,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let now = Utc::now();
    let openid = OpenId::parse(&ask.to).map_err(|e| Failure::usage(format!("--to: {e}")))?;
    let job = ask
        .job
        .as_deref()
        .map(|j| find_job(settings, j))
        .transpose()?;
    let app_name = ask
        .app
        .clone()
        .or_else(|| job.and_then(|j| j.app.as_ref().map(ToString::to_string)));
    let appid = app_of(settings, app_name.as_deref())?;
    let send_at = match &ask.at {
        Some(t) => time("--at", t)?,
        None => now,
    };
    if send_at > now + MAX_AHEAD {
        return Err(Failure::usage(format!(
            "--at: {} is more than 30 days ahead",
            ask.at.as_deref().unwrap_or_default()
        )));
    }
    let window = job.map_or(TEMPLATE_WINDOW, |j| {
        Duration::from_std(j.send_window).unwrap_or(TEMPLATE_WINDOW)
    });
    let expires_at = match &ask.expires {
        Some(t) => time("--expires", t)?,
        None => send_at + window,
    };
    if expires_at <= send_at {
        return Err(Failure::usage("--expires: is not after --at"));
    }
    let data = pairs("--data", &ask.data)?;
    let mut body = match job {
        Some(job) => {
            let mut vars = pairs("--var", &ask.vars)?;
            // --data replaces single keywords, as a recipient's variable named
            // like a keyword does.
            vars.extend(data);
            let builtins = Builtins::at(send_at, job.schedule.tz());
            let message =
                crate::domain::Message::build(&job.spec, openid.clone(), &vars, &builtins)
                    .map_err(|e| Failure::usage(format!("job {}: {e}", job.name)))?;
            SendBody::of(&message, &job.spec)
        }
        None => SendBody {
            template_id: ask.template.clone().unwrap_or_default(),
            page: None,
            miniprogram_state: Default::default(),
            lang: Default::default(),
            data,
        },
    };
    if let Some(page) = &ask.page {
        body.page = Some(page.clone());
    }
    body.message(openid.clone())
        .map_err(|e| Failure::usage(format!("the message: {e}")))?;
    let template_id = TemplateId::parse(&body.template_id)
        .map_err(|e| Failure::usage(format!("--template: {e}")))?;
    let cancel_key = ask
        .cancel_key
        .as_deref()
        .map(CancelKey::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--cancel-key: {e}")))?;
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
    let one_time = one_time(&store, &appid, &template_id, &body).await?;
    let request = serde_json::to_string(&ask).expect("json");
    let message = serde_json::to_string(&body).expect("json");
    let accepted = store
        .accept_send(&NewSend {
            appid: &appid,
            key: &key,
            request: &request,
            openid: &openid,
            template_id: &template_id,
            job: job.map(|j| &j.name),
            one_time,
            message: &message,
            cancel_key: cancel_key.as_ref(),
            metadata: None,
            send_at,
            expires_at,
        })
        .await?;
    let send = match accepted {
        Accepted::New(send) => send,
        Accepted::Existing(send) if send.request == request => send,
        Accepted::Existing(send) => {
            return Err(Failure::usage(format!(
                "--key: {} was used for send {} with other arguments; use a new key",
                key.as_ref(),
                send.id
            )));
        }
    };
    if json {
        let v = view(&send, now);
        outln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        outln!(out, "{} (key {})", line(&send, now), send.idem_key);
    }
    Ok(Exit::Ok)
}

/// Whether the template is one-time, from the account's template list as
/// `check` (or the daemon) last fetched it; refused unless `body` gives
/// exactly the template's keywords.
async fn one_time(
    store: &Store,
    appid: &AppId,
    template_id: &TemplateId,
    body: &SendBody,
) -> Result<bool, Failure> {
    // The account's template list as `check` (or the daemon) last fetched it:
    // which keywords the template has, and whether it is one-time.
    let (template, _) = store.template(appid, template_id).await?.ok_or_else(|| {
        Failure::usage(format!(
            "--template: {} is not in the account's template list as last fetched \
             (run `wxpush check`, which fetches it)",
            template_id.as_ref()
        ))
    })?;
    let given: Vec<&str> = body.data.keys().map(String::as_str).collect();
    let wanted: Vec<&str> = {
        let mut k: Vec<&str> = template.keywords.iter().map(String::as_str).collect();
        k.sort_unstable();
        k
    };
    if given != wanted {
        return Err(Failure::usage(format!(
            "--data: the template {} has the keywords {}; given {}",
            template_id.as_ref(),
            wanted.join(", "),
            if given.is_empty() {
                "none".to_owned()
            } else {
                given.join(", ")
            }
        )));
    }
    Ok(template.kind == TemplateKind::OneTime)
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
        let appid = app_of(settings, app.as_deref())?;
        let n = store.cancel_sends_by_key(&appid, &key).await?;
        outln!(out, "cancelled {n} send(s) of cancel key {}", key.as_ref());
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

/// The AppID of `[apps.NAME]`, or of `[wechat]` without a name.
fn app_of(settings: &Settings, name: Option<&str>) -> Result<AppId, Failure> {
    let Some(name) = name else {
        return Ok(settings.wechat.appid.clone());
    };
    settings
        .apps
        .iter()
        .find(|a| a.name.as_ref() == name)
        .map(|a| a.wechat.appid.clone())
        .ok_or_else(|| {
            let names: Vec<&str> = settings.apps.iter().map(|a| a.name.as_ref()).collect();
            Failure::usage(format!(
                "--app: no [apps.{name}] (configured: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// An RFC 3339 time that says its offset.
fn time(flag: &str, s: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::<FixedOffset>::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
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

fn shown_status(send: &SendRow, now: DateTime<Utc>) -> &'static str {
    let due = send
        .send_at
        .parse::<DateTime<Utc>>()
        .is_ok_and(|t| t <= now);
    send.status.shown(due)
}

/// One send as `--json` (and the API) shows it.
fn view(send: &SendRow, now: DateTime<Utc>) -> Value {
    json!({
        "id": send.id,
        "status": shown_status(send, now),
        "to": send.openid,
        "appid": send.appid,
        "template_id": send.template_id,
        "job": send.job,
        "send_at": send.send_at,
        "expires_at": send.expires_at,
        "cancel_key": send.cancel_key,
        "metadata": send.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "attempts": send.attempts,
        "errcode": send.errcode,
        "errmsg": send.errmsg,
        "msgid": send.msgid,
        "created_at": send.created_at,
        "updated_at": send.updated_at,
    })
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
