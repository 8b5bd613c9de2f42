//! Domain types: once built, they are valid.

mod consent;
mod job_name;
mod keyword;
mod message;
mod openid;
mod options;
mod render;
mod schedule;
mod template_id;

pub use consent::{ConsentResult, TemplateKind};
pub use job_name::JobName;
pub use keyword::{KeywordError, KeywordKind, KeywordName, Overflow};
pub use message::{Builtins, Message, MessageError, MessageSpec, with_name};
pub use openid::OpenId;
pub use options::{Lang, MiniprogramState, Page};
pub use render::{RenderError, ValueTemplate};
pub use schedule::{Schedule, ScheduleError};
pub use template_id::TemplateId;

/// Why a string was refused by one of the domain constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
