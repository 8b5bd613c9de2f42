//! Domain types: once built, they are valid.

pub(crate) mod aes_key;
mod app_id;
mod consent;
mod delivery;
mod job_name;
mod keyword;
mod message;
mod openid;
mod options;
pub mod policy;
mod render;
mod run;
mod schedule;
mod send;
mod template_id;
#[cfg(test)]
pub(crate) mod test_ids;
mod text;

pub use aes_key::AesKey;
pub use app_id::AppId;
pub use consent::{ConsentResult, ConsentSource, PAIRING, Tally, TemplateKind, tally_after};
pub use delivery::{
    AppTemplate, ConsentGate, CreditEffect, NO_CONSENT, Outcome, Status, credit_after,
};
pub use job_name::{AppName, JobName};
pub use keyword::{KeywordError, KeywordKind, KeywordName, Overflow};
pub use message::{Builtins, Message, MessageError, MessageSpec, with_name};
pub use openid::OpenId;
pub use options::{Lang, MiniprogramState, Page};
pub use render::{RenderError, ValueTemplate};
pub use run::{Counts, RunStatus, Trigger};
pub use schedule::{Schedule, ScheduleError};
pub use send::{CancelKey, IdempotencyKey, SendStatus};
pub use template_id::TemplateId;
pub use text::strip_hidden;

/// Why a string was refused by one of the domain constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
