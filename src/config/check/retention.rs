//! `[retention]`: how long finished runs are kept, and how the pruning paces itself.

use super::Checker;
use crate::config::{RetentionSettings, raw};

impl Checker {
    /// `[retention]`, or `None` when it is disabled.
    pub(super) fn retention(&mut self, r: raw::RawRetention) -> Option<RetentionSettings> {
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        if r.keep < DAY {
            // "180s" for "180d" would delete the history of every finished run.
            self.fail(
                "retention.keep",
                format!(
                    "{} is less than a day; write days as \"180d\", or set retention.enabled = false to keep everything",
                    humantime::format_duration(r.keep)
                ),
            );
        }
        if r.every < std::time::Duration::from_secs(60) {
            self.fail("retention.every", "must be at least 1m");
        }
        if !(1..=10_000).contains(&r.batch) {
            self.fail(
                "retention.batch",
                format!("{} is not between 1 and 10000", r.batch),
            );
        }
        r.enabled.then_some(RetentionSettings {
            keep: r.keep,
            every: r.every,
            batch: r.batch,
        })
    }
}
