use super::Invalid;

/// A job's name: 1 to 64 of `[A-Za-z0-9_-]`, so it is safe in file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(String);

impl JobName {
    /// Parses a job name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > 64 {
            return Err(Invalid("a job name has 1 to 64 characters".into()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(Invalid(format!(
                "job name {s:?} contains {c:?}; use letters, digits, '_' and '-'"
            )));
        }
        Ok(Self(s.to_owned()))
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
