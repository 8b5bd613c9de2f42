use super::Invalid;

/// A user's openid for this mini program: exactly 28 characters of ASCII
/// letters, digits, `-` and `_`.
///
/// Every openid WeChat issues (mini programs and official accounts alike) has
/// that shape; a shorter or longer string is a typo, a unionid (29 characters)
/// or a placeholder, and would only earn 40003 from WeChat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpenId(String);

/// The length of every openid.
pub(super) const OPENID_LEN: usize = 28;

impl OpenId {
    /// Parses an openid, refusing anything that cannot be one.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid("openid is empty".into()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(Invalid(format!(
                "openid {s:?} contains {c:?}; WeChat openids are {OPENID_LEN} letters, digits, '-' or '_'"
            )));
        }
        if s.len() != OPENID_LEN {
            return Err(Invalid(format!(
                "openid {s:?} is {} characters; WeChat openids are {OPENID_LEN} letters, digits, '-' or '_'",
                s.len()
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The openid with its middle hidden, for logs (openids are personal data).
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Hides the middle of an identifier, keeping a short prefix and suffix.
pub(crate) fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        return "*".repeat(n.max(3));
    }
    let head: String = s.chars().take(3).collect();
    let tail: String = s.chars().skip(n - 3).collect();
    format!("{head}***{tail}")
}

impl AsRef<str> for OpenId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OpenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_empty_long_and_foreign_openids() {
        for bad in [
            "",
            "   ",
            "o abc",
            "oabc\t",
            "中文openid",
            &"o".repeat(65),
            "o/x",
            "abc",
            // A unionid is 29 characters; a typo drops one.
            "oUser0000000000000000000000001",
            "oUser00000000000000000000001"[..27].as_ref(),
            "oUser000000000000000000000/1",
        ] {
            assert!(OpenId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn masks_the_middle() {
        let id = OpenId::parse("oAbCdEfGhIjKlMnOpQrStUvWxYz1").unwrap();
        assert_eq!(id.masked(), "oAb***Yz1");
        assert!(!id.masked().contains("dEfGh"));
    }

    proptest! {
        #[test]
        fn accepts_every_well_formed_openid(s in "[A-Za-z0-9_-]{28}") {
            let id = OpenId::parse(&s).unwrap();
            prop_assert_eq!(id.as_ref(), s.as_str());
        }
    }
}
