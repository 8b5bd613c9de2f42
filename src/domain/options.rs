use serde::{Deserialize, Serialize};

use super::Invalid;

/// Which version of the mini program the card opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniprogramState {
    /// The released version.
    #[default]
    Formal,
    /// The trial (体验版) version.
    Trial,
    /// The developer (开发版) version.
    Developer,
}

/// The language of the card's "open the mini program" link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum Lang {
    /// Simplified Chinese.
    #[default]
    #[serde(rename = "zh_CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en_US")]
    EnUs,
    /// Traditional Chinese (Hong Kong).
    #[serde(rename = "zh_HK")]
    ZhHk,
    /// Traditional Chinese (Taiwan).
    #[serde(rename = "zh_TW")]
    ZhTw,
}

/// A page path inside the mini program, optionally with a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page(String);

impl Page {
    /// Parses a page path such as `pages/index/index?from=push`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid(
                "page is empty; leave the key out for a card without a link".into(),
            ));
        }
        if s.contains("://") {
            return Err(Invalid(format!(
                "page {s:?} is a URL; give a path inside the mini program such as pages/index/index"
            )));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid(format!("page contains {c:?}")));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for Page {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_rejects_urls_spaces_and_empty() {
        for bad in ["", "https://example.com/x", "pages/a b", "pages/a\n"] {
            assert!(Page::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Page::parse("pages/index/index?foo=bar").is_ok());
    }

    #[test]
    fn options_use_wechat_spellings() {
        assert_eq!(serde_json::to_string(&Lang::ZhHk).unwrap(), "\"zh_HK\"");
        assert_eq!(
            serde_json::to_string(&MiniprogramState::Developer).unwrap(),
            "\"developer\""
        );
    }
}
