//! The retry schedule, as data: exponential backoff with jitter, capped.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::DeliverySettings;

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Requests per delivery, the first included.
    pub max_attempts: u32,
    builder: ExponentialBuilder,
}

impl RetryPolicy {
    /// The policy `[delivery]` describes.
    pub fn from_settings(d: &DeliverySettings) -> Self {
        Self {
            max_attempts: d.max_attempts,
            builder: ExponentialBuilder::default()
                .with_min_delay(d.backoff_base)
                .with_max_delay(d.backoff_max)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(d.max_attempts.saturating_sub(1) as usize),
        }
    }

    /// The waits before the 2nd, 3rd ... request of one delivery.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnUnknown;

    #[test]
    fn delays_grow_stay_capped_and_stop_after_max_attempts() {
        let policy = RetryPolicy::from_settings(&DeliverySettings {
            concurrency: 1,
            rate_limit_per_sec: 0,
            max_attempts: 6,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            on_unknown: OnUnknown::Record,
        });
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 5);
        assert!(delays[0] >= Duration::from_millis(100));
        // Jitter adds a random part of the delay itself, so a delay is at most twice the cap.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(1000)),
            "{delays:?}"
        );
        assert!(delays[3] >= Duration::from_millis(500));
    }
}
