//! A run: one firing of one job for one slot, where it stands and what started it.

use serde::Serialize;

use super::Invalid;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Enqueued or sending (or left so by a crash: the next start, `send` or
    /// another instance resumes it).
    Running,
    /// A shutdown (SIGTERM, SIGINT) stopped it mid-send: nothing of it is in
    /// flight, and the next start, `send` or another instance resumes it.
    Interrupted,
    /// Halted (daily quota, a fatal errcode): pending deliveries wait for a resume.
    Stopped,
    /// Every delivery has a final status.
    Done,
    /// The slot fired while the previous run of the job was still going.
    Skipped,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Stopped => "stopped",
            Self::Done => "done",
            Self::Skipped => "skipped",
        }
    }

    /// Reads the stored spelling; anything else is an error, never a default.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Ok(match s {
            "running" => Self::Running,
            "interrupted" => Self::Interrupted,
            "stopped" => Self::Stopped,
            "done" => Self::Done,
            "skipped" => Self::Skipped,
            other => return Err(Invalid(format!("{other:?} is not a run status"))),
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The daemon's schedule.
    Schedule,
    /// A slot missed while the daemon was down, sent on start.
    CatchUp,
    /// `wxpush send`.
    Manual,
}

impl Trigger {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::CatchUp => "catch_up",
            Self::Manual => "manual",
        }
    }

    /// Reads the stored spelling; anything else is an error, never a default.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Ok(match s {
            "schedule" => Self::Schedule,
            "catch_up" => Self::CatchUp,
            "manual" => Self::Manual,
            other => return Err(Invalid(format!("{other:?} is not a run trigger"))),
        })
    }
}

/// Deliveries of a run, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All deliveries.
    pub total: u64,
    /// Accepted by WeChat.
    pub sent: u64,
    /// Failed for good (bad openid, retries used up ...).
    pub failed: u64,
    /// 43101: the user has no subscription left.
    pub refused: u64,
    /// The message broke a keyword rule; never sent.
    pub invalid: u64,
    /// Sent, but no answer came back.
    pub unknown: u64,
    /// Not sent: no recorded consent for the template.
    pub skipped: u64,
    /// Not sent yet.
    pub pending: u64,
    /// Never sent: still pending when the run's send window closed.
    pub expired: u64,
    /// Deferred by a delivery policy: each goes as a send at its time.
    pub deferred: u64,
    /// Dropped by a delivery policy: never sent.
    pub suppressed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_spellings_read_back_and_anything_else_is_an_error() {
        for s in [
            RunStatus::Running,
            RunStatus::Interrupted,
            RunStatus::Stopped,
            RunStatus::Done,
            RunStatus::Skipped,
        ] {
            assert_eq!(RunStatus::parse(s.as_str()), Ok(s));
        }
        for t in [Trigger::Schedule, Trigger::CatchUp, Trigger::Manual] {
            assert_eq!(Trigger::parse(t.as_str()), Ok(t));
        }
        assert!(RunStatus::parse("finished").is_err());
        assert!(Trigger::parse("cron").is_err());
    }
}
