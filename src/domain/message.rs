//! A job's message template, and the rendered message that is valid once built.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::keyword::check;
use super::{
    KeywordError, KeywordName, Lang, MiniprogramState, OpenId, Overflow, Page, RenderError,
    TemplateId, ValueTemplate,
};

/// Everything a job says about its message: template, page, options and keyword values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSpec {
    /// The template to send.
    pub template_id: TemplateId,
    /// The page the card opens, if any.
    pub page: Option<Page>,
    /// Which version of the mini program the card opens.
    pub state: MiniprogramState,
    /// The language of the card's link.
    pub lang: Lang,
    /// What too-long `thing` and `name` values get.
    pub overflow: Overflow,
    /// Keyword values, in key order.
    pub data: Vec<(KeywordName, ValueTemplate)>,
}

/// Why a message could not be built for a recipient; no API call is made for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A placeholder had no value.
    #[error("{keyword}: {source}")]
    Render {
        /// The keyword whose value failed to render.
        keyword: String,
        /// The missing placeholder.
        source: RenderError,
    },
    /// A rendered value breaks its keyword's rule.
    #[error(transparent)]
    Keyword(#[from] KeywordError),
}

/// The built-in variables (`today`, `date`, `now`, `time`) for one slot in one time zone.
#[derive(Debug, Clone)]
pub struct Builtins(BTreeMap<&'static str, String>);

impl Builtins {
    /// The names of the built-in variables.
    pub const NAMES: [&'static str; 4] = ["now", "today", "date", "time"];

    /// Built-ins for the instant `at`, as seen in `tz`.
    pub fn at(at: DateTime<Utc>, tz: Tz) -> Self {
        let t = at.with_timezone(&tz);
        let today = format!("{}年{}月{}日", t.year(), t.month(), t.day());
        let time = format!("{:02}:{:02}", t.hour(), t.minute());
        Self(BTreeMap::from([
            ("now", format!("{today} {time}")),
            ("today", today),
            ("date", t.format("%Y-%m-%d").to_string()),
            ("time", time),
        ]))
    }
}

/// The variables a recipient's message renders with: their own, plus their display
/// name as `name` unless they set that variable themselves.
pub fn with_name(
    mut vars: BTreeMap<String, String>,
    name: Option<&str>,
) -> BTreeMap<String, String> {
    if let Some(name) = name {
        vars.entry("name".into()).or_insert_with(|| name.to_owned());
    }
    vars
}

/// A rendered subscribe message whose every value passed its keyword's rule.
#[derive(Debug, Clone)]
pub struct Message {
    spec: Arc<MessageSpec>,
    touser: OpenId,
    values: Vec<String>,
}

impl Message {
    /// Renders `spec` for one recipient and checks every value.
    ///
    /// A recipient variable named like a keyword (`thing1`) replaces that keyword's
    /// value as literal text: that is how per-recipient overrides work.
    pub fn build(
        spec: &Arc<MessageSpec>,
        touser: OpenId,
        vars: &BTreeMap<String, String>,
        builtins: &Builtins,
    ) -> Result<Self, MessageError> {
        let mut values = Vec::with_capacity(spec.data.len());
        for (key, template) in &spec.data {
            let raw =
                match vars.get(key.as_ref()) {
                    Some(v) => v.clone(),
                    None => template.render(vars, &builtins.0).map_err(|source| {
                        MessageError::Render {
                            keyword: key.to_string(),
                            source,
                        }
                    })?,
                };
            values.push(check(key, &raw, spec.overflow)?);
        }
        Ok(Self {
            spec: Arc::clone(spec),
            touser,
            values,
        })
    }

    /// The recipient.
    pub fn touser(&self) -> &OpenId {
        &self.touser
    }

    /// The keyword values, in key order.
    pub fn values(&self) -> impl Iterator<Item = (&KeywordName, &str)> {
        self.spec
            .data
            .iter()
            .map(|(k, _)| k)
            .zip(self.values.iter().map(String::as_str))
    }
}

/// Serialises as the body of `subscribeMessage.send`.
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Data<'a>(&'a Message);
        struct Value<'a>(&'a str);
        impl Serialize for Value<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("value", self.0)?;
                m.end()
            }
        }
        impl Serialize for Data<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.values.len()))?;
                for (k, v) in self.0.values() {
                    m.serialize_entry(k.as_ref(), &Value(v))?;
                }
                m.end()
            }
        }
        let spec = &self.spec;
        let mut st = s.serialize_struct("Message", 6)?;
        st.serialize_field("touser", self.touser.as_ref())?;
        st.serialize_field("template_id", spec.template_id.as_ref())?;
        if let Some(page) = &spec.page {
            st.serialize_field("page", page.as_ref())?;
        }
        st.serialize_field("data", &Data(self))?;
        st.serialize_field("miniprogram_state", &spec.state)?;
        st.serialize_field("lang", &spec.lang)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data: &[(&str, &str)], overflow: Overflow) -> Arc<MessageSpec> {
        Arc::new(MessageSpec {
            template_id: TemplateId::parse("tmpl-1").unwrap(),
            page: Some(Page::parse("pages/index/index?from=push").unwrap()),
            state: MiniprogramState::Trial,
            lang: Lang::EnUs,
            overflow,
            data: data
                .iter()
                .map(|(k, v)| {
                    (
                        KeywordName::parse(k).unwrap(),
                        ValueTemplate::parse(v).unwrap(),
                    )
                })
                .collect(),
        })
    }

    fn builtins() -> Builtins {
        let at = "2026-11-24T01:00:00Z".parse().unwrap();
        Builtins::at(at, chrono_tz::Asia::Shanghai)
    }

    /// The message for one test user with `vars`, at `builtins()`.
    fn build(
        s: &Arc<MessageSpec>,
        vars: &BTreeMap<String, String>,
    ) -> Result<Message, MessageError> {
        let user = OpenId::parse("oUser00000000000000000000001").unwrap();
        Message::build(s, user, vars, &builtins())
    }

    #[test]
    fn renders_the_send_body_with_every_field_wechat_expects() {
        let s = spec(
            &[
                ("thing1", "{{name}}, time to check in"),
                ("date2", "{{today}}"),
            ],
            Overflow::Fail,
        );
        let vars = BTreeMap::from([("name".to_string(), "小明".to_string())]);
        let msg = build(&s, &vars).unwrap();
        let body = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "touser": "oUser00000000000000000000001",
                "template_id": "tmpl-1",
                "page": "pages/index/index?from=push",
                "data": {"thing1": {"value": "小明, time to check in"}, "date2": {"value": "2026年11月24日"}},
                "miniprogram_state": "trial",
                "lang": "en_US"
            })
        );
    }

    #[test]
    fn builtins_are_in_the_jobs_time_zone() {
        let at = "2026-11-23T17:30:00Z".parse().unwrap();
        let b = Builtins::at(at, chrono_tz::Asia::Shanghai);
        assert_eq!(b.0["today"], "2026年11月24日");
        assert_eq!(b.0["time"], "01:30");
        assert_eq!(b.0["date"], "2026-11-24");
        assert_eq!(b.0["now"], "2026年11月24日 01:30");
    }

    #[test]
    fn a_recipient_override_replaces_the_keyword_value() {
        let s = spec(&[("thing1", "default text")], Overflow::Fail);
        let vars = BTreeMap::from([("thing1".to_string(), "just for you".to_string())]);
        let msg = build(&s, &vars).unwrap();
        assert_eq!(msg.values().next().unwrap().1, "just for you");
    }

    #[test]
    fn an_invalid_value_is_refused_before_any_call() {
        let s = spec(&[("thing1", "{{name}}")], Overflow::Fail);
        let vars = BTreeMap::from([("name".to_string(), "x".repeat(21))]);
        let err = build(&s, &vars).unwrap_err();
        assert!(err.to_string().starts_with("thing1: "), "{err}");
        let missing = build(&s, &BTreeMap::new()).unwrap_err();
        assert!(missing.to_string().contains("{{name}}"), "{missing}");
    }
}
