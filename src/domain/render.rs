//! `{{var}}` value templates, parsed once when the config is loaded. A
//! placeholder may carry a fallback, `{{name|会员}}`, used when the variable is
//! absent (or NULL in a query's row).

use std::collections::BTreeMap;

use super::Invalid;

/// A value with `{{var}}` placeholders, split into literal text and variable names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var {
        name: String,
        fallback: Option<String>,
    },
}

/// A placeholder with no value for this recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{{{{{0}}}}} has no value (not a built-in and not in the recipient's data)")]
pub struct RenderError(pub String);

impl ValueTemplate {
    /// Parses `s`, refusing unbalanced braces and empty or malformed names.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let mut segments = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| Invalid(format!("{s:?} has {{{{ without a closing }}}}")))?;
            let (name, fallback) = match after[..end].split_once('|') {
                Some((name, fallback)) => (name.trim(), Some(fallback.trim().to_owned())),
                None => (after[..end].trim(), None),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(Invalid(format!(
                    "{s:?} has a placeholder {{{{{name}}}}}; names use letters, digits, '_' and '-'"
                )));
            }
            segments.push(Segment::Var {
                name: name.to_owned(),
                fallback,
            });
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(Invalid(format!("{s:?} has }}}} without an opening {{{{")));
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self(segments))
    }

    /// The variables this value needs: those without a fallback.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|seg| match seg {
            Segment::Var {
                name,
                fallback: None,
            } => Some(name.as_str()),
            _ => None,
        })
    }

    /// Fills the placeholders; `vars` are looked up first, then `builtins`.
    pub fn render(
        &self,
        vars: &BTreeMap<String, String>,
        builtins: &BTreeMap<&'static str, String>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Var { name, fallback } => {
                    let v = vars
                        .get(name)
                        .or_else(|| builtins.get(name.as_str()))
                        .or(fallback.as_ref())
                        .ok_or_else(|| RenderError(name.clone()))?;
                    out.push_str(v);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fills_recipient_variables_before_builtins() {
        let t = ValueTemplate::parse("{{ name }}, check in by {{today}}").unwrap();
        let builtins = BTreeMap::from([("today", "2026年11月24日".to_string())]);
        let out = t.render(&vars(&[("name", "小明")]), &builtins).unwrap();
        assert_eq!(out, "小明, check in by 2026年11月24日");
        let shadowed = t
            .render(&vars(&[("name", "A"), ("today", "x")]), &builtins)
            .unwrap();
        assert_eq!(shadowed, "A, check in by x");
    }

    #[test]
    fn a_missing_variable_names_itself() {
        let t = ValueTemplate::parse("hi {{who}}").unwrap();
        let err = t.render(&vars(&[]), &BTreeMap::new()).unwrap_err();
        assert_eq!(err, RenderError("who".into()));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["{{", "{{}}", "a }} b", "{{a b}}", "{{name}"] {
            assert!(ValueTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fallback_stands_in_for_an_absent_variable_only() {
        let t = ValueTemplate::parse("{{name|会员}}，您的积分 {{ points | 0 }}").unwrap();
        let none = BTreeMap::new();
        assert_eq!(t.render(&vars(&[]), &none).unwrap(), "会员，您的积分 0");
        assert_eq!(
            t.render(&vars(&[("name", "Ann"), ("points", "12")]), &none)
                .unwrap(),
            "Ann，您的积分 12"
        );
        // A built-in is a value too; the fallback is the last resort.
        let today = BTreeMap::from([("today", "2026年11月25日".to_owned())]);
        let d = ValueTemplate::parse("{{today|someday}}").unwrap();
        assert_eq!(d.render(&vars(&[]), &today).unwrap(), "2026年11月25日");
        assert_eq!(t.required().count(), 0);
        let mixed = ValueTemplate::parse("{{a}} {{b|x}}").unwrap();
        assert_eq!(mixed.required().collect::<Vec<_>>(), ["a"]);
        assert!(
            ValueTemplate::parse("{{|x}}").is_err(),
            "a fallback needs a name"
        );
    }
}
