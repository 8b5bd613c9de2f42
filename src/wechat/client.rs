//! The HTTP calls: token endpoints and `subscribeMessage.send`.

use std::error::Error as _;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{TokenSource, WechatSettings};
use crate::domain::{AppId, Message, TemplateKind};

/// A token or send request that did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// No connection or no reply.
    #[error("cannot reach WeChat: {0}")]
    Transport(String),
    /// A non-200 HTTP status.
    #[error("WeChat answered HTTP {0}")]
    Http(u16),
    /// An errcode.
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api {
        /// The errcode.
        errcode: i64,
        /// The errmsg (may carry a `rid` for WeChat support).
        errmsg: String,
    },
    /// A 200 reply that is not the expected JSON.
    #[error("unreadable reply from WeChat: {0}")]
    Decode(String),
}

/// What became of one send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendReply {
    /// WeChat answered with an errcode (0 is success).
    Replied {
        /// The errcode.
        errcode: i64,
        /// The errmsg.
        errmsg: String,
        /// The message id of an accepted message.
        msgid: Option<u64>,
    },
    /// The connection failed before the request was written: it was not sent.
    NotSent(String),
    /// A non-200 status (a gateway in front of WeChat answered).
    Http(u16),
    /// The request may have been received but no answer came back.
    NoAnswer(String),
}

/// One of the account's templates, from `/wxaapi/newtmpl/gettemplate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTemplate {
    /// `priTmplId`.
    pub template_id: String,
    /// Its title.
    pub title: String,
    /// 2 = one-time, 3 = long-term; `None` for a type this version does not know.
    pub kind: Option<TemplateKind>,
    /// The `data` keys named in its content, in order.
    pub keywords: Vec<String>,
}

/// What `/sns/jscode2session` says about a login code. The session_key it also
/// returns is dropped unread: wxpush has no use for it and must never leak it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user's openid for this mini program.
    pub openid: String,
}

/// The `data` keys in a template's content: `{{thing1.DATA}}` gives `thing1`.
pub fn content_keywords(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        if let Some(key) = rest[..end].trim().strip_suffix(".DATA") {
            out.push(key.to_owned());
        }
        rest = &rest[end + 2..];
    }
    out
}

/// A fetched token and its lifetime in seconds.
pub(crate) struct FetchedToken {
    pub token: String,
    pub expires_in: i64,
}

/// A thin client over the WeChat server API.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base: String,
    appid: AppId,
    secret: SecretString,
    /// Parsed once: URL parsing showed up in profiles at tens of thousands of sends a second.
    send_url: reqwest::Url,
    /// The `http` client's request timeout, which decides whether another app may share it.
    timeout: Duration,
}

impl std::fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatClient")
            .field("base", &self.base)
            .field("appid", &self.appid.as_ref())
            .finish_non_exhaustive()
    }
}

/// Describes a transport error without its URL, which carries the access_token.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sends `request` and reads a JSON reply, never putting the URL (which carries
/// secrets) in an error.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, WechatError> {
    let response = request
        .send()
        .await
        .map_err(|e| WechatError::Transport(describe(e)))?;
    if !response.status().is_success() {
        return Err(WechatError::Http(response.status().as_u16()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| WechatError::Transport(describe(e)))?;
    serde_json::from_slice(&body).map_err(|e| WechatError::Decode(format!("{what}: {e}")))
}

#[derive(Deserialize)]
struct TokenDto {
    access_token: Option<String>,
    expires_in: Option<i64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct TemplatesDto {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    data: Vec<TemplateDto>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateDto {
    pri_tmpl_id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(rename = "type", default)]
    kind: i64,
}

#[derive(Deserialize)]
struct SessionDto {
    openid: Option<String>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Deserialize)]
struct SendDto {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    msgid: Option<MsgId>,
}

/// WeChat sends msgid as a 64-bit number; some gateways quote it. Never via f64.
#[derive(Deserialize)]
#[serde(untagged)]
enum MsgId {
    Num(u64),
    Text(String),
}

impl MsgId {
    fn value(self) -> Option<u64> {
        match self {
            Self::Num(n) => Some(n),
            Self::Text(s) => s.parse().ok(),
        }
    }
}

impl WechatClient {
    /// The mini program's AppID.
    pub fn appid(&self) -> &AppId {
        &self.appid
    }

    /// Builds a client for `settings`, with room for `concurrency` open connections.
    pub fn new(
        settings: &WechatSettings,
        secret: SecretString,
        concurrency: usize,
    ) -> Result<Self, WechatError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(concurrency)
            .user_agent(concat!("wxpush/", env!("CARGO_PKG_VERSION")))
            // The appsecret and the access_token travel in the URL: a redirect
            // would carry them to whatever host it names. WeChat never
            // redirects; one is an answer like any other non-200 (the run
            // stops naming api_base).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WechatError::Transport(describe(e)))?;
        Self::with_http(http, settings, secret)
    }

    /// A client for another mini program (its own `api_base`, AppID and secret)
    /// that shares this one's connection pool and TLS set-up when their timeouts
    /// are the same (else it gets its own). Each client builds its own TLS roots,
    /// about 100 kB of the idle daemon's memory per app; connections are pooled
    /// per host, and requests carry the app's token, so sharing mixes nothing.
    /// `concurrency` is only used for a client of its own.
    pub fn sibling(
        &self,
        settings: &WechatSettings,
        secret: SecretString,
        concurrency: usize,
    ) -> Result<Self, WechatError> {
        if settings.timeout == self.timeout {
            Self::with_http(self.http.clone(), settings, secret)
        } else {
            Self::new(settings, secret, concurrency)
        }
    }

    fn with_http(
        http: reqwest::Client,
        settings: &WechatSettings,
        secret: SecretString,
    ) -> Result<Self, WechatError> {
        Ok(Self {
            http,
            send_url: format!("{}/cgi-bin/message/subscribe/send", settings.api_base)
                .parse()
                .map_err(|e| WechatError::Transport(format!("api_base: {e}")))?,
            base: settings.api_base.clone(),
            appid: settings.appid.clone(),
            secret,
            timeout: settings.timeout,
        })
    }

    /// Fetches an access_token from `source`; `force` only applies to the stable one.
    pub(crate) async fn fetch_token(
        &self,
        source: TokenSource,
        force: bool,
    ) -> Result<FetchedToken, WechatError> {
        let request = match source {
            TokenSource::Stable => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.appid.as_ref(),
                    "secret": self.secret.expose_secret(),
                    "force_refresh": force,
                })),
            TokenSource::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", self.appid.as_ref()),
                    ("secret", self.secret.expose_secret()),
                ]),
        };
        let dto: TokenDto = read_json(request, "token reply").await?;
        // A reply without errcode (or with 0) and with a token is a success.
        match (dto.errcode.unwrap_or(0), dto.access_token) {
            (0, Some(token)) if !token.is_empty() => Ok(FetchedToken {
                token,
                expires_in: dto.expires_in.unwrap_or(7200),
            }),
            (0, _) => Err(WechatError::Decode(
                "token reply has no access_token".into(),
            )),
            (errcode, _) => Err(WechatError::Api {
                errcode,
                errmsg: dto.errmsg.unwrap_or_default(),
            }),
        }
    }

    /// GETs `path` and reads its JSON reply.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<T, WechatError> {
        let request = self.http.get(format!("{}{path}", self.base)).query(query);
        read_json(request, what).await
    }

    /// Lists the account's templates (`GET /wxaapi/newtmpl/gettemplate`).
    pub async fn templates(&self, token: &str) -> Result<Vec<RemoteTemplate>, WechatError> {
        let dto: TemplatesDto = self
            .get_json(
                "/wxaapi/newtmpl/gettemplate",
                &[("access_token", token)],
                "template list",
            )
            .await?;
        if dto.errcode != 0 {
            return Err(WechatError::Api {
                errcode: dto.errcode,
                errmsg: dto.errmsg,
            });
        }
        Ok(dto
            .data
            .into_iter()
            .map(|t| RemoteTemplate {
                keywords: content_keywords(&t.content),
                template_id: t.pri_tmpl_id,
                title: t.title,
                kind: TemplateKind::from_wechat_type(t.kind),
            })
            .collect())
    }

    /// Exchanges a `wx.login` code for the user's openid (`GET /sns/jscode2session`).
    pub async fn code2session(&self, code: &str) -> Result<Session, WechatError> {
        let dto: SessionDto = self
            .get_json(
                "/sns/jscode2session",
                &[
                    ("appid", self.appid.as_ref()),
                    ("secret", self.secret.expose_secret()),
                    ("js_code", code),
                    ("grant_type", "authorization_code"),
                ],
                "code2session reply",
            )
            .await?;
        match (dto.errcode, dto.openid) {
            (0, Some(openid)) if !openid.is_empty() => Ok(Session { openid }),
            (0, _) => Err(WechatError::Decode(
                "code2session reply has no openid".into(),
            )),
            (errcode, _) => Err(WechatError::Api {
                errcode,
                errmsg: dto.errmsg,
            }),
        }
    }

    /// The account's daily quota of `subscribeMessage.send` (`POST
    /// /cgi-bin/openapi/quota/get`, getApiQuota).
    pub async fn send_quota(&self, token: &str) -> Result<ApiQuota, WechatError> {
        let request = self
            .http
            .post(format!("{}/cgi-bin/openapi/quota/get", self.base))
            .query(&[("access_token", token)])
            .json(&serde_json::json!({ "cgi_path": "/cgi-bin/message/subscribe/send" }));
        let dto: QuotaDto = read_json(request, "quota reply").await?;
        match (dto.errcode, dto.quota) {
            (0, Some(quota)) => Ok(quota),
            (0, None) => Err(WechatError::Decode("quota reply has no quota".into())),
            (errcode, _) => Err(WechatError::Api {
                errcode,
                errmsg: dto.errmsg,
            }),
        }
    }

    /// Calls `subscribeMessage.send` once.
    pub async fn send(&self, token: &str, message: &Message) -> SendReply {
        let mut url = self.send_url.clone();
        url.query_pairs_mut().append_pair("access_token", token);
        let result = self.http.post(url).json(message).send().await;
        let response = match result {
            Ok(r) => r,
            // A failed connect never wrote the request: safe to retry.
            Err(e) if e.is_connect() => return SendReply::NotSent(describe(e)),
            Err(e) => return SendReply::NoAnswer(describe(e)),
        };
        let status = response.status();
        if !status.is_success() {
            return SendReply::Http(status.as_u16());
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return SendReply::NoAnswer(describe(e)),
        };
        match serde_json::from_slice::<SendDto>(&body) {
            Ok(dto) => SendReply::Replied {
                errcode: dto.errcode,
                errmsg: dto.errmsg,
                msgid: dto.msgid.and_then(MsgId::value),
            },
            Err(e) => SendReply::NoAnswer(format!("unreadable reply: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_content_gives_its_data_keys_in_order() {
        assert_eq!(
            content_keywords("会议时间:{{date2.DATA}}\n会议地点:{{thing1.DATA}}\n"),
            ["date2", "thing1"]
        );
        assert!(content_keywords("no keywords {{ here").is_empty());
    }

    #[test]
    fn msgid_above_two_to_the_53_keeps_every_digit() {
        let dto: SendDto =
            serde_json::from_str(r#"{"errcode":0,"errmsg":"ok","msgid":1988810812324364291}"#)
                .unwrap();
        assert_eq!(
            dto.msgid.and_then(MsgId::value),
            Some(1_988_810_812_324_364_291)
        );
        let quoted: SendDto =
            serde_json::from_str(r#"{"errcode":0,"errmsg":"ok","msgid":"18446744073709551615"}"#)
                .unwrap();
        assert_eq!(quoted.msgid.and_then(MsgId::value), Some(u64::MAX));
    }
}

/// A daily quota as getApiQuota gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ApiQuota {
    /// Calls allowed today.
    pub daily_limit: u64,
    /// Calls made today.
    pub used: u64,
    /// Calls left today.
    pub remain: u64,
}

#[derive(serde::Deserialize)]
struct QuotaDto {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    quota: Option<ApiQuota>,
}
