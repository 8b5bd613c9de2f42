//! At most one request per openid at a time, across all runs of this process
//! (WeChat answers 43108 to concurrent sends to one user).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The openids with a request in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    busy: Mutex<HashSet<String>>,
    freed: Notify,
}

/// Held while sending to one openid.
pub struct Guard {
    owner: Arc<InFlight>,
    openid: String,
}

impl InFlight {
    /// Waits until nobody else is sending to `openid`, then holds it.
    pub async fn acquire(self: &Arc<Self>, openid: &str) -> Guard {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before checking, so a release in between is not missed.
            freed.as_mut().enable();
            if self
                .busy
                .lock()
                .expect("poisoned")
                .insert(openid.to_owned())
            {
                return Guard {
                    owner: Arc::clone(self),
                    openid: openid.to_owned(),
                };
            }
            freed.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.owner
            .busy
            .lock()
            .expect("poisoned")
            .remove(&self.openid);
        self.owner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_sender_to_the_same_openid_waits_for_the_first() {
        let inflight = Arc::new(InFlight::default());
        let first = inflight.acquire("oA00000000000000000000000000").await;
        let other = inflight.acquire("oB00000000000000000000000000").await;
        let waiting = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.acquire("oA00000000000000000000000000").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "second sender to oA must wait");
        drop(other);
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
    }
}
