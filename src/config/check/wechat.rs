//! `[wechat]` and `[apps.NAME]`: each mini program's AppID, secret and API endpoint.

use std::collections::BTreeMap;

use super::{CLASSIC_SHARED, Checker};
use crate::config::{AppSettings, TokenSource, WechatSettings, raw};
use crate::domain::AppName;

impl Checker {
    /// `[wechat]`, or an `[apps.NAME]` table's own keys, at `at`.
    pub(super) fn wechat(&mut self, at: &str, w: raw::RawWechat) -> Option<WechatSettings> {
        let appid_ok = w.appid.starts_with("wx")
            && w.appid.len() == 18
            && w.appid.chars().all(|c| c.is_ascii_alphanumeric());
        if !appid_ok {
            self.fail(
                &format!("{at}.appid"),
                format!(
                    "{:?} is not a mini program AppID (wx followed by 16 letters or digits)",
                    w.appid
                ),
            );
        }
        let secret = self.secret(&format!("{at}.secret"), w.secret, w.secret_file.as_deref());
        let api_base = w.api_base.trim_end_matches('/').to_owned();
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            self.fail(
                &format!("{at}.api_base"),
                format!("{api_base:?} is not an http(s) URL"),
            );
        }
        if w.timeout.is_zero() {
            self.fail(&format!("{at}.timeout"), "must be more than 0s");
        }
        Some(WechatSettings {
            appid: w.appid,
            secret,
            api_base,
            token_source: w.token_source,
            timeout: w.timeout,
        })
    }

    /// `[apps.NAME]` tables: each like `[wechat]`, with its own callback secrets.
    pub(super) fn apps(
        &mut self,
        raw: BTreeMap<String, raw::RawApp>,
        default_appid: &str,
        shared_db: bool,
    ) -> Vec<AppSettings> {
        let mut apps: Vec<AppSettings> = Vec::new();
        for (name, app) in raw {
            let at = format!("apps.{name}");
            let Ok(app_name) = AppName::parse(&name).map_err(|e| self.fail(&at, e)) else {
                continue;
            };
            let (wechat, callback) = app.split();
            if shared_db && wechat.token_source == TokenSource::Classic {
                self.fail(&format!("{at}.token_source"), CLASSIC_SHARED);
            }
            let Some(wechat) = self.wechat(&at, wechat) else {
                continue;
            };
            // One AppID, one token: two names for it would fight over it.
            if wechat.appid == default_appid {
                self.fail(
                    &format!("{at}.appid"),
                    "is [wechat]'s AppID too; an app is configured once",
                );
            } else if let Some(other) = apps.iter().find(|a| a.wechat.appid == wechat.appid) {
                self.fail(
                    &format!("{at}.appid"),
                    format!(
                        "is apps.{}'s AppID too; an app is configured once",
                        other.name
                    ),
                );
            }
            let (callback_token, aes_key) = self.callback(&at, callback);
            apps.push(AppSettings {
                name: app_name,
                wechat,
                callback_token,
                aes_key,
            });
        }
        apps
    }
}
