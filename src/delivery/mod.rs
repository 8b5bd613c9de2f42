//! Delivery: drain a run's pending deliveries through WeChat, recording each.

mod accept;
mod drain;
mod inflight;
mod on_demand;
mod pass;
mod policy;
mod progress;
mod rate;
mod recorder;
mod retry;
mod send;

pub use accept::{Field, Refused, SendRequest, accept, app_of, offset_time};
pub use drain::{Deliverer, RunReport, leftover_of};
pub use inflight::InFlight;
pub use on_demand::{Pass, SendBody, send_view, serve as serve_on_demand, shown_status};
pub use pass::Targeting;
pub use progress::Progress;
pub use rate::SharedRate;
pub use recorder::RecordWriter;
pub use retry::RetryPolicy;
pub use send::StopCause;
