//! Sends on demand, sent when due: what is past its `expires_at` ends
//! `expired`; each due send is claimed (committed `sending`, its one-time
//! credit held) before its request, sent with its app's token, and recorded as
//! WeChat answered. The daemon runs `serve` beside the scheduler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::{
    Builtins, KeywordName, Lang, Message, MessageError, MessageSpec, MiniprogramState, OpenId,
    Overflow, Page, SendStatus, Status, TemplateId, ValueTemplate,
};
use crate::storage::{Claim, SendRow, StorageError};
use crate::wechat::{Disposition, SendReply, classify_send, token_rejected};

/// How often the daemon looks for sends another process added (`wxpush sends
/// add`) when none is due sooner: one indexed `MIN` query.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Due sends claimed per query.
const PAGE: u32 = 64;

/// A send's message as stored: rendered and checked when it was accepted, so
/// that what goes out is what the caller was told would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBody {
    /// The template.
    pub template_id: String,
    /// The page the card opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Which version of the mini program the card opens.
    #[serde(default)]
    pub miniprogram_state: MiniprogramState,
    /// The language of the card's link.
    #[serde(default)]
    pub lang: Lang,
    /// Every keyword's value, as sent.
    pub data: BTreeMap<String, String>,
}

impl SendBody {
    /// The body of a built message (a job's, rendered for one person).
    pub fn of(message: &Message, spec: &MessageSpec) -> Self {
        Self {
            template_id: spec.template_id.as_ref().to_owned(),
            page: spec.page.as_ref().map(|p| p.as_ref().to_owned()),
            miniprogram_state: spec.state,
            lang: spec.lang,
            data: message
                .values()
                .map(|(k, v)| (k.as_ref().to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The message to `touser`, every value checked against its keyword's rule
    /// (as `check` checks a job's): the error names the field or keyword.
    pub fn message(&self, touser: OpenId) -> Result<Message, String> {
        let template_id =
            TemplateId::parse(&self.template_id).map_err(|e| format!("template_id: {e}"))?;
        let page = self
            .page
            .as_deref()
            .map(Page::parse)
            .transpose()
            .map_err(|e| format!("page: {e}"))?;
        let mut data = Vec::with_capacity(self.data.len());
        for key in self.data.keys() {
            let name = KeywordName::parse(key).map_err(|e| format!("data.{key}: {e}"))?;
            let literal = ValueTemplate::parse("").map_err(|e| format!("data.{key}: {e}"))?;
            data.push((name, literal));
        }
        if data.is_empty() {
            return Err("data: names no keyword".into());
        }
        let spec = Arc::new(MessageSpec {
            template_id,
            page,
            state: self.miniprogram_state,
            lang: self.lang,
            overflow: Overflow::Fail,
            data,
        });
        // Each value is a variable named like its keyword: literal text.
        let builtins = Builtins::at(chrono::Utc::now(), chrono_tz::UTC);
        Message::build(&spec, touser, &self.data, &builtins).map_err(|e| match e {
            MessageError::Keyword(k) => format!("data.{k}"),
            other => other.to_string(),
        })
    }
}

/// Sends what is due now, one at a time; returns how many requests it made.
pub async fn send_due(app: &App) -> Result<usize, StorageError> {
    let owner = app.instance.id.as_str();
    let now = app.clock.now();
    let expired = app.store.expire_sends(now).await?;
    if expired > 0 {
        tracing::warn!(
            expired,
            "sends on demand expired unsent (past their expires_at)"
        );
    }
    let mut requests = 0;
    loop {
        let due = app.store.due_sends(now, PAGE).await?;
        let mut took = false;
        for id in &due {
            match app.store.claim_send(*id, owner, now).await? {
                Claim::Claimed(send) => {
                    took = true;
                    requests += 1;
                    deliver(app, owner, &send).await?;
                }
                Claim::Skipped => took = true,
                Claim::Lost => {}
            }
        }
        // A short page is the last; one of which nothing was ours, another's.
        if due.len() < PAGE as usize || !took {
            return Ok(requests);
        }
    }
}

/// Requests one claimed send and records how it ended.
async fn deliver(app: &App, owner: &str, send: &SendRow) -> Result<(), StorageError> {
    let finish = |status: SendStatus, errcode: Option<i64>, errmsg: Option<String>, msgid| async move {
        app.store
            .finish_send(send.id, owner, status, errcode, errmsg.as_deref(), msgid)
            .await
            .map(|_| ())
    };
    let Some(runtime) = app
        .apps
        .iter()
        .map(|(_, r)| r)
        .find(|r| r.client.appid().as_ref() == send.appid)
    else {
        let why = format!("AppID {} is no longer in the config", send.appid);
        return finish(SendStatus::Failed, None, Some(why), None).await;
    };
    let message = serde_json::from_str::<SendBody>(&send.message)
        .map_err(|e| e.to_string())
        .and_then(|body| {
            let to = OpenId::parse(&send.openid).map_err(|e| e.to_string())?;
            body.message(to)
        });
    let message = match message {
        Ok(m) => m,
        Err(why) => return finish(SendStatus::Invalid, None, Some(why), None).await,
    };
    let mut token = match runtime.tokens.get().await {
        Ok(t) => t,
        // No request was made: it may go once a token comes.
        Err(e) => {
            tracing::warn!(send = send.id, error = %e, "no access_token for a send on demand");
            return app.store.release_send(send.id, owner).await;
        }
    };
    let mut reply = runtime.client.send(token.expose(), &message).await;
    if let SendReply::Replied { errcode, .. } = &reply
        && token_rejected(*errcode)
    {
        match runtime.tokens.replace(&token).await {
            Ok(t) => token = t,
            Err(_) => return app.store.release_send(send.id, owner).await,
        }
        reply = runtime.client.send(token.expose(), &message).await;
    }
    let (status, errcode, errmsg, msgid) = match reply {
        SendReply::Replied {
            errcode: 0, msgid, ..
        } => (SendStatus::Sent, Some(0), None, msgid),
        SendReply::Replied {
            errcode, errmsg, ..
        } => {
            let status = match classify_send(errcode) {
                Disposition::Final(s) | Disposition::StopRun { this: s }
                    if s != Status::Pending =>
                {
                    SendStatus::from(s)
                }
                _ => SendStatus::Failed,
            };
            (status, Some(errcode), Some(errmsg), None)
        }
        SendReply::NotSent(why) => (SendStatus::Failed, None, Some(why), None),
        SendReply::Http(code) => (
            SendStatus::Unknown,
            None,
            Some(format!("HTTP {code}")),
            None,
        ),
        SendReply::NoAnswer(why) => (SendStatus::Unknown, None, Some(why), None),
    };
    finish(status, errcode, errmsg, msgid).await
}

/// The daemon's sender of sends on demand: settles what a crash left in
/// flight, then sends each send when it is due, until `stop`.
pub async fn serve(app: Arc<App>, stop: CancellationToken) {
    let me = app.instance.id.clone();
    match app.store.recover_sends(Some(&me)).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            n,
            "sends on demand left in flight by a crash recorded unknown"
        ),
        Err(e) => tracing::error!(error = %e, "cannot settle sends on demand left in flight"),
    }
    loop {
        if let Err(e) = send_due(&app).await {
            tracing::error!(error = %e, "sends on demand: the database failed; retrying");
        }
        let now = app.clock.now();
        let look = now + chrono::Duration::from_std(LOOK_EVERY).expect("a second");
        let wake = match app.store.next_send_at().await {
            Ok(Some(next)) if next > now => next.min(look),
            _ => look,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = app.clock.sleep_until(wake) => {}
        }
    }
}
