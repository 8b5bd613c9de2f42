//! What a user said to a template, and what kind of template it is (wechat-api.md §4).

use serde::{Deserialize, Serialize};

use super::Invalid;

/// How many messages one acceptance allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// Type 2: each acceptance allows exactly one message.
    OneTime,
    /// Type 3: one acceptance allows messages until the user cancels.
    LongTerm,
}

impl TemplateKind {
    /// The kind for gettemplate's `type` (2 or 3); other numbers are unknown kinds.
    pub fn from_wechat_type(t: i64) -> Option<Self> {
        match t {
            2 => Some(Self::OneTime),
            3 => Some(Self::LongTerm),
            _ => None,
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneTime => "one_time",
            Self::LongTerm => "long_term",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "one_time" => Some(Self::OneTime),
            "long_term" => Some(Self::LongTerm),
            _ => None,
        }
    }
}

/// One template's result from `wx.requestSubscribeMessage` or an event push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentResult {
    /// The user agreed: one more message (one-time), or messages until cancelled.
    Accept,
    /// The user declined, or cancelled later.
    Reject,
    /// WeChat's backend banned this template for the user.
    Ban,
    /// Dropped because another template in the popup had the same title.
    Filter,
}

impl ConsentResult {
    /// Parses `accept`, `reject`, `ban` or `filter`, and the long-term variants
    /// `acceptWithAudio` and `acceptWithAlert`, which are acceptances too.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "accept" | "acceptWithAudio" | "acceptWithAlert" => Ok(Self::Accept),
            "reject" => Ok(Self::Reject),
            "ban" => Ok(Self::Ban),
            "filter" => Ok(Self::Filter),
            other => Err(Invalid(format!(
                "{other:?} is not a subscribe result (accept, reject, ban or filter)"
            ))),
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Ban => "ban",
            Self::Filter => "filter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_types_and_results_parse_as_documented() {
        assert_eq!(
            TemplateKind::from_wechat_type(2),
            Some(TemplateKind::OneTime)
        );
        assert_eq!(
            TemplateKind::from_wechat_type(3),
            Some(TemplateKind::LongTerm)
        );
        assert_eq!(TemplateKind::from_wechat_type(1), None);
        assert_eq!(
            ConsentResult::parse("acceptWithAlert"),
            Ok(ConsentResult::Accept)
        );
        assert_eq!(ConsentResult::parse("ban"), Ok(ConsentResult::Ban));
        assert!(ConsentResult::parse("Accept").is_err());
        for k in [TemplateKind::OneTime, TemplateKind::LongTerm] {
            assert_eq!(TemplateKind::parse(k.as_str()), Some(k));
        }
    }
}
