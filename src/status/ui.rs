//! The pages' shared parts: the language (by `Accept-Language`, or `?lang=`),
//! the layout with its navigation and language switch, masking and times.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, html};

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// `?lang=` if given, else the first of `Accept-Language` that is one of ours.
    pub(super) fn of(asked: Option<&str>, headers: &HeaderMap) -> Result<Self, String> {
        if let Some(asked) = asked {
            return match asked {
                "en" => Ok(Self::En),
                "zh" => Ok(Self::Zh),
                other => Err(format!("lang: {other:?} is not en or zh")),
            };
        }
        let accept = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut ranked: Vec<(f32, &str)> = accept
            .split(',')
            .filter_map(|part| {
                let mut bits = part.trim().split(';');
                let tag = bits.next()?.trim();
                let q = bits
                    .find_map(|b| b.trim().strip_prefix("q="))
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(1.0);
                Some((q, tag))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, tag) in ranked {
            let tag = tag.to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Ok(Self::Zh);
            }
            if tag.starts_with("en") {
                return Ok(Self::En);
            }
        }
        Ok(Self::En)
    }

    /// `en` or `zh`.
    pub(super) fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh",
        }
    }

    /// The English or the Chinese.
    pub(super) fn pick(self, en: &'static str, zh: &'static str) -> &'static str {
        match self {
            Self::En => en,
            Self::Zh => zh,
        }
    }
}

/// An openid as every page but the person page shows it: `oDF3…Gm7Y`.
pub(super) fn mask(openid: &str) -> String {
    let n = openid.chars().count();
    if n <= 10 {
        return "…".to_owned();
    }
    let head: String = openid.chars().take(4).collect();
    let tail: String = openid.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

/// `t` in zone `tz`, to the second.
pub(super) fn moment(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// A stored timestamp (RFC 3339) in zone `tz`, or as stored if it is not one.
pub(super) fn stored(at: &str, tz: Tz) -> String {
    at.parse::<DateTime<Utc>>()
        .map_or_else(|_| at.to_owned(), |t| moment(t, tz))
}

/// How long ago `then` was, in the largest unit or two (`3h 12m`).
pub(super) fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    let rounded = if secs >= 3600 { secs / 60 * 60 } else { secs };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

/// The pages in the navigation: path and (English, Chinese) title.
const NAV: [(&str, &str, &str); 5] = [
    ("/status", "Overview", "概览"),
    ("/status/runs", "Runs", "运行"),
    ("/status/sends", "Sends", "API 发送"),
    ("/status/consent", "Consent", "订阅授权"),
    ("/status/person", "Person", "用户"),
];

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Noto Sans CJK SC',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}\
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600}\
header .lang{margin-left:auto}main{padding:16px 20px;max-width:1400px}\
h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:20px 0 8px}\
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:8px}\
th,td{border-bottom:1px solid #e3e6ec;padding:5px 8px;text-align:left;vertical-align:top}\
th{background:#eef0f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17803d}.bad{color:#b42318}.warn{color:#a15c00}.dim{color:#6b7280}\
form.filter{display:flex;gap:8px;flex-wrap:wrap;margin:8px 0}form.filter input,form.filter select{padding:3px 6px}\
.pager{margin:10px 0}.pager a{margin-right:12px}";

/// A whole page: `title`, the navigation (`here` marked), the switch to the
/// other language (keeping `query`), then `body`.
pub(super) fn page(lang: Lang, here: &str, title: &str, query: &str, body: Markup) -> Markup {
    let other = match lang {
        Lang::En => (Lang::Zh, "中文"),
        Lang::Zh => (Lang::En, "English"),
    };
    let keep: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("lang="))
        .collect();
    let mut switch = format!("{here}?lang={}", other.0.code());
    for p in keep {
        switch.push('&');
        switch.push_str(p);
    }
    html! {
        (DOCTYPE)
        html lang=(match lang { Lang::En => "en", Lang::Zh => "zh-CN" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · wxpush" }
                style { (STYLE) }
            }
            body {
                header {
                    strong { "wxpush" }
                    @for (path, en, zh) in NAV {
                        a href=(format!("{path}?lang={}", lang.code())) class=[(path == here).then_some("on")] { (lang.pick(en, zh)) }
                    }
                    a.lang href=(switch) { (other.1) }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A status word, coloured by what it means for an operator.
pub(super) fn status_word(status: &str) -> Markup {
    let class = match status {
        "sent" | "done" | "accept" => "ok",
        "failed" | "invalid" | "unknown" | "refused" | "stopped" | "interrupted" | "expired"
        | "reject" | "ban" => "bad",
        "pending" | "running" | "scheduled" | "deferred" | "suppressed" | "claimed" | "sending" => {
            "warn"
        }
        _ => "dim",
    };
    html! { span class=(class) { (status) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
        h
    }

    #[test]
    fn the_language_comes_from_the_query_then_the_browser() {
        assert_eq!(
            Lang::of(None, &accept("zh-CN,zh;q=0.9,en;q=0.8")),
            Ok(Lang::Zh)
        );
        assert_eq!(Lang::of(None, &accept("en-US,en;q=0.9")), Ok(Lang::En));
        assert_eq!(
            Lang::of(None, &accept("fr;q=1, en;q=0.5, zh;q=0.7")),
            Ok(Lang::Zh)
        );
        assert_eq!(Lang::of(None, &accept("fr")), Ok(Lang::En));
        assert_eq!(Lang::of(None, &HeaderMap::new()), Ok(Lang::En));
        assert_eq!(Lang::of(Some("en"), &accept("zh-CN")), Ok(Lang::En));
        assert!(Lang::of(Some("de"), &HeaderMap::new()).is_err());
    }

    #[test]
    fn an_openid_shows_its_first_and_last_four() {
        assert_eq!(mask("oDF3iY9WMaswOPWjCIp_f3Bnpljk"), "oDF3…pljk");
        assert_eq!(mask("short"), "…");
    }
}
