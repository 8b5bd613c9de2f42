//! The wall clock the daemon reads and sleeps on: the system's, or (in tests) one
//! that moves only when told, so that slots, send windows, outage backoff and the
//! config poll can be driven without waiting real seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Sleep in steps of at most this, re-reading the wall clock, so that a clock
/// change (NTP, suspend) delays a wake-up by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A source of wall-clock time and of sleeps measured against it.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`].
    Manual(ManualClock),
}

impl Clock {
    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Manual(m) => *m.now.borrow(),
        }
    }

    /// Returns once the clock reads `t` or later.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        match self {
            Self::System => loop {
                let Ok(left) = (t - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(MAX_SLEEP)).await;
            },
            Self::Manual(m) => {
                let _waiting = m.wait_for(t);
                let mut rx = m.now.subscribe();
                // The sender lives in `m`, which outlives this borrow: never closed.
                let _ = rx.wait_for(|now| *now >= t).await;
            }
        }
    }

    /// Returns once `d` has passed on this clock.
    pub async fn sleep(&self, d: Duration) {
        match self {
            Self::System => tokio::time::sleep(d).await,
            Self::Manual(_) => {
                let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
                self.sleep_until(self.now() + d).await
            }
        }
    }
}

/// A test clock: time stands still until it is moved, and every sleeper whose
/// moment has come wakes when it is.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
    /// The moments sleepers wait for, with how many wait for each.
    waits: Arc<Mutex<BTreeMap<DateTime<Utc>, usize>>>,
}

/// One sleeper's moment, on the clock's books while it sleeps.
struct Waiting {
    waits: Arc<Mutex<BTreeMap<DateTime<Utc>, usize>>>,
    at: DateTime<Utc>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waits = self.waits.lock().expect("never poisoned");
        if let Some(n) = waits.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                waits.remove(&self.at);
            }
        }
    }
}

impl ManualClock {
    /// A clock that reads `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
            waits: Arc::default(),
        }
    }

    /// Puts a sleeper until `at` on the books until the guard drops.
    fn wait_for(&self, at: DateTime<Utc>) -> Waiting {
        *self
            .waits
            .lock()
            .expect("never poisoned")
            .entry(at)
            .or_default() += 1;
        Waiting {
            waits: Arc::clone(&self.waits),
            at,
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).expect("a sane duration");
        self.now.send_modify(|now| *now += d);
    }

    /// How many sleepers are due (their moment has come) and have not woken yet.
    pub fn due(&self) -> usize {
        let now = *self.now.borrow();
        self.waits
            .lock()
            .expect("never poisoned")
            .range(..=now)
            .map(|(_, n)| n)
            .sum()
    }

    /// Returns once every sleeper whose moment has come has woken: after
    /// `advance`, what was due has run up to its next wait.
    pub async fn woken(&self) {
        while self.due() > 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// How many sleepers wait for exactly `t` (a job sleeping until its next slot).
    pub fn waiting_until(&self, t: DateTime<Utc>) -> usize {
        self.waits
            .lock()
            .expect("never poisoned")
            .get(&t)
            .copied()
            .unwrap_or(0)
    }

    /// How many sleeps are waiting on this clock now (tests wait for the daemon to
    /// be asleep before they move it).
    pub fn sleepers(&self) -> usize {
        self.now.receiver_count()
    }

    /// Moves the clock to `t` (forward or back, like an NTP step).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_replace(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_only_when_its_moment_comes() {
        let start = Utc::now();
        let manual = ManualClock::new(start);
        let clock = Clock::Manual(manual.clone());
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(manual.due(), 0);
        manual.advance(Duration::from_secs(9));
        manual.woken().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        assert_eq!(manual.sleepers(), 1);
        manual.advance(Duration::from_secs(1));
        assert_eq!(manual.due(), 1, "due, not woken yet");
        tokio::time::timeout(Duration::from_secs(5), manual.woken())
            .await
            .expect("woke when its moment came");
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("ended")
            .unwrap();
        assert_eq!(clock.now(), start + chrono::Duration::seconds(10));
    }
}
