use super::Invalid;

/// A mini program's AppID: `wx` and 16 ASCII letters or digits.
///
/// Consent, subscribers, templates, tokens and runs are all kept per AppID, so
/// it is the key that tells one mini program's rows from another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

/// The length of every AppID.
const APPID_LEN: usize = 18;

impl AppId {
    /// Parses an AppID, refusing anything that cannot be one.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = s.starts_with("wx")
            && s.len() == APPID_LEN
            && s.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(Invalid(format!(
                "{s:?} is not a mini program AppID (wx followed by 16 letters or digits)"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_is_not_an_appid() {
        for bad in [
            "",
            "wx",
            "wx1",
            // One short, one long.
            "wx0123456789abcde",
            "wx0123456789abcdef0",
            // Not starting with `wx`.
            "WX0123456789abcdef",
            "xw0123456789abcdef",
            "tt0123456789abcdef",
            " wx0123456789abcde",
            "wx0123456789abcde ",
            "wx0123456789abc-ef",
            "wx0123456789abc_ef",
            "wx0123456789abcdé",
            "wx0123456789abc\tef",
        ] {
            assert!(AppId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn says_what_an_appid_looks_like() {
        assert_eq!(
            AppId::parse("wx1").unwrap_err().to_string(),
            "\"wx1\" is not a mini program AppID (wx followed by 16 letters or digits)"
        );
    }

    proptest! {
        #[test]
        fn accepts_every_well_formed_appid(s in "wx[A-Za-z0-9]{16}") {
            let id = AppId::parse(&s).unwrap();
            prop_assert_eq!(id.as_ref(), s.as_str());
        }
    }
}
