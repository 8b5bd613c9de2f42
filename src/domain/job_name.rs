use super::Invalid;

/// A job's name: 1 to 64 of `[A-Za-z0-9_-]`, so it is safe in file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(String);

impl JobName {
    /// Parses a job name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        check_name("job", s).map(Self)
    }
}

/// 1 to 64 of `[A-Za-z0-9_-]`, the rule for job and app names.
fn check_name(what: &str, s: &str) -> Result<String, Invalid> {
    if s.is_empty() || s.len() > 64 {
        return Err(Invalid(format!("a {what} name has 1 to 64 characters")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Invalid(format!(
            "{what} name {s:?} contains {c:?}; use letters, digits, '_' and '-'"
        )));
    }
    Ok(s.to_owned())
}

/// A mini program's name in `[apps.NAME]`: the job-name rule, in lower case, as
/// `WXPUSH__APPS__NAME__KEY` reaches the config in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    /// Parses an app name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let name = check_name("app", s)?;
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(Invalid(format!(
                "app name {s:?} has capitals; use lower case (environment overrides WXPUSH__APPS__NAME__KEY arrive in lower case)"
            )));
        }
        Ok(Self(name))
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JobName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_names_unsafe_for_paths() {
        for bad in ["", "a b", "../x", "job/1", "任务", &"j".repeat(65)] {
            assert!(JobName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(JobName::parse("daily-checkin_2").is_ok());
    }
}
