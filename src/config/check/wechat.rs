//! `[wechat]` and `[apps.NAME]`: each mini program's AppID, secret and API endpoint.

use std::collections::BTreeMap;

use super::{CLASSIC_SHARED, Checker};
use crate::config::{AppSettings, TokenSource, WechatSettings, raw};
use crate::domain::{AppId, AppName};

impl Checker {
    /// `[wechat]`, or an `[apps.NAME]` table's own keys, at `at`; `None` when
    /// its AppID is not one.
    pub(super) fn wechat(&mut self, at: &str, w: raw::RawWechat) -> Option<WechatSettings> {
        let appid = AppId::parse(&w.appid)
            .map_err(|e| self.fail(&format!("{at}.appid"), e))
            .ok();
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
        // Only now: a bad AppID must not hide the other keys' problems.
        let appid = appid?;
        Some(WechatSettings {
            appid,
            secret,
            api_base,
            token_source: w.token_source,
            timeout: w.timeout,
        })
    }

    /// `[apps.NAME]` tables: each like `[wechat]`, with its own callback secrets.
    /// Returns every app whose name is good (what `[[jobs]] app` may name, so
    /// that a job is not blamed for its app's problem), and the settings of
    /// those whose AppID is good too.
    pub(super) fn apps(
        &mut self,
        raw: BTreeMap<String, raw::RawApp>,
        default_appid: &str,
        shared_db: bool,
    ) -> (Vec<AppName>, Vec<AppSettings>) {
        // Each named app with its AppID as written, good or not: a duplicate
        // is one whatever else is wrong with it.
        let mut named: Vec<(AppName, String)> = Vec::new();
        let mut apps: Vec<AppSettings> = Vec::new();
        for (name, app) in raw {
            let at = format!("apps.{name}");
            let Ok(app_name) = AppName::parse(&name).map_err(|e| self.fail(&at, e)) else {
                continue;
            };
            let policy = self.policy(&format!("{at}.policy"), &app.policy);
            let (wechat, callback) = app.split();
            if shared_db && wechat.token_source == TokenSource::Classic {
                self.fail(&format!("{at}.token_source"), CLASSIC_SHARED);
            }
            let appid = wechat.appid.clone();
            let wechat = self.wechat(&at, wechat);
            // One AppID, one token: two names for it would fight over it.
            if appid == default_appid {
                self.fail(
                    &format!("{at}.appid"),
                    "is [wechat]'s AppID too; an app is configured once",
                );
            } else if let Some((other, _)) = named.iter().find(|(_, a)| *a == appid) {
                self.fail(
                    &format!("{at}.appid"),
                    format!("is apps.{other}'s AppID too; an app is configured once"),
                );
            }
            let (callback_token, aes_key) = self.callback(&at, callback);
            named.push((app_name.clone(), appid));
            if let Some(wechat) = wechat {
                apps.push(AppSettings {
                    name: app_name,
                    wechat,
                    callback_token,
                    aes_key,
                    policy,
                });
            }
        }
        (named.into_iter().map(|(name, _)| name).collect(), apps)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::Checker;
    use crate::config::raw::RawSettings;

    fn problems(settings: serde_json::Value) -> Vec<String> {
        let raw: RawSettings = serde_json::from_value(settings).unwrap();
        Checker::new("w.toml".into(), PathBuf::from("w.toml"))
            .check(raw)
            .unwrap_err()
            .problems
    }

    #[test]
    fn an_app_whose_appid_is_bad_is_still_named_and_still_a_duplicate() {
        // Its job is not blamed for naming it, and an AppID written twice is
        // said to be, bad or not: one line per mistake, as before AppId.
        let said = problems(serde_json::json!({
            "wechat": {"appid": "wx1"},
            "apps": {
                "mall": {"appid": "wx2"},
                "shop": {"appid": "wx1"},
                "zoo": {"appid": "wx2"},
            },
            "jobs": [{
                "name": "daily",
                "app": "shop",
                "cron": "0 0 9 * * *",
                "template_id": "t",
                "data": {"thing1": "hello"},
            }],
        }));
        let bad = |at: &str, id: &str| {
            format!(
                "w.toml: {at}.appid: \"{id}\" is not a mini program AppID (wx followed by 16 letters or digits)"
            )
        };
        assert_eq!(
            said,
            [
                bad("wechat", "wx1"),
                bad("apps.mall", "wx2"),
                bad("apps.shop", "wx1"),
                "w.toml: apps.shop.appid: is [wechat]'s AppID too; an app is configured once"
                    .to_owned(),
                bad("apps.zoo", "wx2"),
                "w.toml: apps.zoo.appid: is apps.mall's AppID too; an app is configured once"
                    .to_owned(),
            ]
        );
    }
}
