//! Ids for unit tests, from the short names the tests are written with.

use super::{AppId, JobName, OpenId, TemplateId};

/// The AppID `wx` followed by `tail` padded with zeros to 16: `app("1")` is
/// `wx0000000000000001`.
pub(crate) fn app(tail: &str) -> AppId {
    AppId::parse(&format!("wx{tail:0>16}")).expect("a test AppID")
}

/// The job `name`.
pub(crate) fn job(name: &str) -> JobName {
    JobName::parse(name).expect("a test job name")
}

/// The openid `s`.
pub(crate) fn oid(s: &str) -> OpenId {
    OpenId::parse(s).expect("a test openid")
}

/// The template `id`.
pub(crate) fn tmpl(id: &str) -> TemplateId {
    TemplateId::parse(id).expect("a test template id")
}
