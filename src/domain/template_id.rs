use super::Invalid;

/// A subscribe-message template id (`priTmplId`): 1 to 64 ASCII letters, digits,
/// `-` and `_` (WeChat's are 43 characters of base64url).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateId(String);

impl TemplateId {
    /// Parses a template id, refusing anything that cannot be one (paths, spaces,
    /// control characters, over-long strings).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid("template_id is empty".into()));
        }
        if s.len() > 64 {
            return Err(Invalid("template_id is longer than 64 characters".into()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(Invalid(format!(
                "template_id contains {c:?}; copy the id from the mini program console"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for TemplateId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_spaced_and_non_ascii_ids() {
        for bad in [
            "",
            "abc def",
            "abc\t",
            "模板",
            &"x".repeat(65),
            "../../etc/passwd",
            "a.b",
            "a/b",
        ] {
            assert!(TemplateId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TemplateId::parse("zun-LzcQyW-edafCVvzPkK4de2Rllr1fFpw2A_x0oXE").is_ok());
    }
}
