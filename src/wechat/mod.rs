//! The WeChat side: HTTP client, access_token cache, errcode classification.

mod client;
mod errcode;
mod token;

pub use client::{SendReply, WechatClient, WechatError};
pub use errcode::{Disposition, TokenFailure, classify_send, classify_token};
pub use token::{AccessToken, TokenError, TokenManager};
