//! The WeChat side: HTTP client, access_token cache, errcode classification.

mod client;
mod errcode;
mod templates;
mod token;

pub use client::{
    ApiQuota, RemoteTemplate, SendReply, Session, WechatClient, WechatError, content_keywords,
};
pub use errcode::{
    Disposition, TRANSIENT_SEND_ERRCODES, TokenFailure, classify_send, classify_token, meaning,
    token_rejected,
};
pub use templates::{TemplateCatalog, TemplateError};
pub use token::{AccessToken, TokenError, TokenManager};
