//! `rate_limit_per_sec` across instances: each live instance sends at its share
//! of the limit (the limit divided by the live instances, at least 1/s), so that
//! together they stay within it. The share follows the instances table.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The limiter sends wait on, rebuilt when the number of live instances changes.
#[derive(Debug)]
pub struct SharedRate {
    per_sec: u32,
    instances: AtomicU64,
    current: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
}

impl SharedRate {
    /// `per_sec` for all instances together; 0 means no limit.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            instances: AtomicU64::new(1),
            current: RwLock::new(limiter(per_sec, 1)),
        }
    }

    /// Sets how many instances share the limit.
    pub fn set_instances(&self, n: u64) {
        let n = n.max(1);
        if self.instances.swap(n, Ordering::Relaxed) != n {
            *self.current.write().expect("never poisoned") = limiter(self.per_sec, n);
        }
    }

    /// This instance's share, per second (0: no limit).
    #[cfg(test)]
    fn share(&self) -> u32 {
        share(self.per_sec, self.instances.load(Ordering::Relaxed))
    }

    /// Waits until one more request fits this instance's share.
    pub async fn until_ready(&self) {
        let limiter = self.current.read().expect("never poisoned").clone();
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
    }
}

fn share(per_sec: u32, instances: u64) -> u32 {
    if per_sec == 0 {
        return 0;
    }
    (u64::from(per_sec) / instances.max(1)).max(1) as u32
}

fn limiter(per_sec: u32, instances: u64) -> Option<Arc<DefaultDirectRateLimiter>> {
    NonZeroU32::new(share(per_sec, instances))
        .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_gets_its_share_and_never_less_than_one() {
        let rate = SharedRate::new(100);
        assert_eq!(rate.share(), 100);
        rate.set_instances(3);
        assert_eq!(rate.share(), 33);
        rate.set_instances(0);
        assert_eq!(rate.share(), 100);
        let slow = SharedRate::new(2);
        slow.set_instances(5);
        assert_eq!(slow.share(), 1);
        let unlimited = SharedRate::new(0);
        unlimited.set_instances(4);
        assert_eq!(unlimited.share(), 0);
    }
}
