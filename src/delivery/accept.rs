//! Accepting a send on demand, for the command line and the HTTP API alike:
//! the message rendered and checked now (as `check` checks a job's), then
//! stored once under its idempotency key. What is refused is not stored, so
//! the caller may fix it and retry with the same key.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::SendBody;
use crate::config::Settings;
use crate::domain::{
    AppId, Builtins, CancelKey, IdempotencyKey, Lang, Message, MiniprogramState, OpenId,
    TemplateId, TemplateKind,
};
use crate::storage::{Accepted, NewSend, SendRow, StorageError, Store};

/// How long a template send (no job, so no send window) may still go after its time.
const TEMPLATE_WINDOW: Duration = Duration::hours(3);

/// A send as a caller asked for it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    /// The openid.
    pub to: String,
    /// An `[apps.NAME]` name; absent: the job's app, else the default one.
    pub app: Option<String>,
    /// A job whose message it is.
    pub job: Option<String>,
    /// The job's placeholders' values.
    pub vars: BTreeMap<String, String>,
    /// The template, when there is no job.
    pub template_id: Option<String>,
    /// Every keyword (a template send), or single keywords replacing a job's.
    pub data: BTreeMap<String, String>,
    /// The page the card opens (default: the job's).
    pub page: Option<String>,
    /// Which mini program version the card opens (default: the job's).
    pub miniprogram_state: Option<MiniprogramState>,
    /// The card's language (default: the job's).
    pub lang: Option<Lang>,
    /// When to send; absent: now.
    pub send_at: Option<DateTime<Utc>>,
    /// Never send after this; absent: `send_at` plus the send window.
    pub expires_at: Option<DateTime<Utc>>,
    /// A group name for a bulk cancel.
    pub cancel_key: Option<String>,
    /// The caller's metadata object, in JSON: stored and shown, never sent.
    pub metadata: Option<String>,
    /// The recipient's IANA time zone, for the policy (default: the job's).
    pub tz: Option<String>,
    /// The send's own policy layer, over the app's and the job's.
    pub policy: Option<crate::domain::policy::RawPolicy>,
}

/// Which part of a request a refusal is about (each surface names it its way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The openid.
    To,
    /// The app.
    App,
    /// The job.
    Job,
    /// The job's variables.
    Vars,
    /// The template.
    Template,
    /// The keyword values.
    Data,
    /// The page.
    Page,
    /// The send time.
    SendAt,
    /// The expiry.
    ExpiresAt,
    /// The cancel key.
    CancelKey,
    /// The recipient's time zone.
    Tz,
    /// The send's policy (the message names the key inside it).
    Policy,
}

/// Why a send was not accepted.
#[derive(Debug)]
pub enum Refused {
    /// The request breaks a rule (WeChat's keyword rules, a time, a name).
    Invalid {
        /// What is at fault.
        field: Field,
        /// Why, in one line.
        message: String,
    },
    /// It names an app, job or template there is none of.
    Unknown {
        /// What is at fault.
        field: Field,
        /// Why, in one line.
        message: String,
    },
    /// The key made another send, with a different request.
    KeyReused {
        /// That send.
        id: i64,
    },
    /// The database failed.
    Storage(StorageError),
}

impl From<StorageError> for Refused {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

fn invalid(field: Field, message: impl Into<String>) -> Refused {
    Refused::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks `request` and stores it under `key`, or finds the send `key` made
/// with the same `canonical` request (`true`: a replay).
pub async fn accept(
    settings: &Settings,
    store: &Store,
    key: &IdempotencyKey,
    request: &SendRequest,
    canonical: &str,
    now: DateTime<Utc>,
    max_ahead: std::time::Duration,
) -> Result<(SendRow, bool), Refused> {
    let openid = OpenId::parse(&request.to).map_err(|e| invalid(Field::To, e.0))?;
    let job = match request.job.as_deref() {
        None => None,
        Some(name) => Some(settings.job(name).ok_or_else(|| Refused::Unknown {
            field: Field::Job,
            message: format!("no job named {name:?}"),
        })?),
    };
    let app_name = request
        .app
        .clone()
        .or_else(|| job.and_then(|j| j.app.as_ref().map(ToString::to_string)));
    let appid = app_of(settings, app_name.as_deref())?;
    let send_at = request.send_at.unwrap_or(now);
    let ahead = Duration::from_std(max_ahead).unwrap_or(Duration::MAX);
    if send_at > now + ahead {
        return Err(invalid(
            Field::SendAt,
            format!("is more than {} ahead", span(max_ahead)),
        ));
    }
    let window = job.map_or(TEMPLATE_WINDOW, |j| {
        Duration::from_std(j.send_window).unwrap_or(TEMPLATE_WINDOW)
    });
    let expires_at = request.expires_at.unwrap_or(send_at + window);
    if expires_at <= send_at {
        return Err(invalid(Field::ExpiresAt, "is not after the send time"));
    }
    let mut body = body_of(request, job, &openid, send_at)?;
    if let Some(page) = &request.page {
        body.page = Some(page.clone());
    }
    if let Some(state) = request.miniprogram_state {
        body.miniprogram_state = state;
    }
    if let Some(lang) = request.lang {
        body.lang = lang;
    }
    body.message(openid.clone()).map_err(|e| {
        let field = if e.starts_with("page") {
            Field::Page
        } else {
            Field::Data
        };
        invalid(field, e)
    })?;
    let template_id =
        TemplateId::parse(&body.template_id).map_err(|e| invalid(Field::Template, e.0))?;
    let cancel_key = request
        .cancel_key
        .as_deref()
        .map(CancelKey::parse)
        .transpose()
        .map_err(|e| invalid(Field::CancelKey, e.0))?;
    if let Some(tz) = &request.tz {
        tz.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                Field::Tz,
                format!("{tz:?} is not an IANA time zone such as Asia/Shanghai"),
            )
        })?;
    }
    let policy = match &request.policy {
        Some(raw) => {
            raw.check()
                .map_err(|e| invalid(Field::Policy, e.to_string()))?;
            Some(serde_json::to_string(raw).expect("a policy serialises"))
        }
        None => None,
    };
    let digest = body.digest();
    let one_time = one_time(store, &appid, &template_id, &body).await?;
    let message = serde_json::to_string(&body).expect("a body serialises");
    let accepted = store
        .accept_send(&NewSend {
            appid: &appid,
            key,
            request: canonical,
            openid: &openid,
            template_id: &template_id,
            job: job.map(|j| &j.name),
            one_time,
            message: &message,
            cancel_key: cancel_key.as_ref(),
            metadata: request.metadata.as_deref(),
            send_at,
            expires_at,
            tz: request.tz.as_deref(),
            policy: policy.as_deref(),
            digest: &digest,
        })
        .await?;
    match accepted {
        Accepted::New(send) => {
            if send_at <= now {
                // Due already: the sender (this process's, or on PostgreSQL
                // any instance's) goes now rather than at its next look.
                store.send_due_now().await;
            }
            Ok((send, false))
        }
        Accepted::Existing(send) if send.request == canonical => Ok((send, true)),
        Accepted::Existing(send) => Err(Refused::KeyReused { id: send.id }),
    }
}

/// The checked body: a job's message rendered for `openid` (its `data`
/// replacing single keywords), or a template's from `data`.
fn body_of(
    request: &SendRequest,
    job: Option<&crate::config::Job>,
    openid: &OpenId,
    send_at: DateTime<Utc>,
) -> Result<SendBody, Refused> {
    let Some(job) = job else {
        let template = request
            .template_id
            .clone()
            .ok_or_else(|| invalid(Field::Template, "give a job or a template_id"))?;
        return Ok(SendBody {
            template_id: template,
            page: None,
            miniprogram_state: MiniprogramState::default(),
            lang: Lang::default(),
            data: request.data.clone(),
        });
    };
    if request.template_id.is_some() {
        return Err(invalid(
            Field::Template,
            "give a job or a template_id, not both",
        ));
    }
    let mut vars = request.vars.clone();
    // As a recipient's variable named like a keyword does.
    vars.extend(request.data.clone());
    let builtins = Builtins::at(send_at, job.schedule.tz());
    let message = Message::build(&job.spec, openid.clone(), &vars, &builtins)
        .map_err(|e| invalid(Field::Vars, format!("job {}: {e}", job.name)))?;
    Ok(SendBody::of(&message, &job.spec))
}

/// The AppID of `[apps.NAME]`, or of `[wechat]` without a name.
pub fn app_of(settings: &Settings, name: Option<&str>) -> Result<AppId, Refused> {
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
            Refused::Unknown {
                field: Field::App,
                message: format!(
                    "no [apps.{name}] (configured: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            }
        })
}

/// Whether the template is one-time, from the account's template list as
/// `check` (or the daemon) last fetched it; refused unless `body` gives
/// exactly the template's keywords.
async fn one_time(
    store: &Store,
    appid: &AppId,
    template_id: &TemplateId,
    body: &SendBody,
) -> Result<bool, Refused> {
    let (template, _) =
        store
            .template(appid, template_id)
            .await?
            .ok_or_else(|| Refused::Unknown {
                field: Field::Template,
                message: format!(
                    "{} is not in the account's template list as last fetched \
                     (run `wxpush check`, which fetches it)",
                    template_id.as_ref()
                ),
            })?;
    let given: Vec<&str> = body.data.keys().map(String::as_str).collect();
    let mut wanted: Vec<&str> = template.keywords.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    if given != wanted {
        return Err(invalid(
            Field::Data,
            format!(
                "the template {} has the keywords {}; given {}",
                template_id.as_ref(),
                wanted.join(", "),
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ),
        ));
    }
    Ok(template.kind == TemplateKind::OneTime)
}

/// An RFC 3339 time that says its offset (`2026-12-05T09:00:00+08:00`); one
/// without (a local time of nowhere in particular) is `None`.
pub fn offset_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A span as people write it: whole days as days.
fn span(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{} days", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}
