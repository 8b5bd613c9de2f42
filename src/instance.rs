//! This process as one of the instances sharing a database: registered when it
//! starts sending, heart-beating while it runs, settling what dead instances
//! held, and gone (giving back what it took) on a clean exit.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::Deliverer;
use crate::domain::Status;
use crate::storage::{InstanceInfo, Rescue, StorageError, Store};

/// Who this process is: a new id per start.
pub(crate) fn this_process(role: &str, lease: Duration) -> InstanceInfo {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    // With the process-id namespace: an instance is taken for dead when its pid
    // is gone from /proc, which only holds for one namespace. Two containers
    // given the same host name must not see each other's live pids as gone.
    let host = match std::fs::read_link("/proc/self/ns/pid") {
        Ok(ns) => format!("{name} {}", ns.display()),
        Err(_) => name.clone(),
    };
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    InstanceInfo {
        id: format!("{name}-{pid}-{:x}", nanos & 0xffff_ffff),
        host,
        pid,
        version: env!("CARGO_PKG_VERSION").into(),
        role: role.into(),
        lease,
    }
}

/// Registers `me`, returning the store that takes deliveries as it. First
/// settles what dead instances held, so that a re-run after a kill -9 on this
/// host finds the killed process's deliveries settled, as on SQLite: those
/// whose process is gone from this host, and those silent for over twice
/// their lease (a process just started cannot tell one silent for a lease
/// from one the database was away from; `keep_alive` judges by one lease once
/// its own heartbeats have come through for a lease).
pub(crate) async fn join(
    store: &Store,
    me: &InstanceInfo,
    leftover: Status,
) -> Result<Store, StorageError> {
    store.register_instance(me).await?;
    let rescue = store
        .rescue_long_dead(leftover, &gone_here(store, me).await?)
        .await?;
    report(&rescue, leftover);
    Ok(store.as_instance(&me.id))
}

/// Instances registered from this host whose process is gone: dead now, with
/// no need to wait out their lease. (Each container has a host name of its own.)
async fn gone_here(store: &Store, me: &InstanceInfo) -> Result<Vec<String>, StorageError> {
    Ok(store
        .instances_on(&me.host)
        .await?
        .into_iter()
        .filter(|(id, pid)| *id != me.id && !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .map(|(id, _)| id)
        .collect())
}

fn report(rescue: &Rescue, leftover: Status) {
    if rescue.instances.is_empty() {
        return;
    }
    tracing::warn!(
        instances = ?rescue.instances,
        in_flight = rescue.in_flight,
        returned = rescue.returned,
        runs = ?rescue.runs.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        "settled what dead instances held: their requests in flight are {}, the rest are back to pending",
        leftover.as_str()
    );
    crate::stats::instances_rescued(rescue.instances.len() as u64);
}

/// Until `stop`: renews `me`'s heartbeat every third of its lease, settles the
/// instances that missed theirs (their runs are then joinable: see the
/// scheduler), and shares the rate limit among the live ones.
///
/// An instance judges others by their lease only once its own heartbeats have
/// come through on time (each within half a lease of the last) for a whole
/// lease: after the database was away, every instance was cut off alike, and
/// each gets a lease to renew its heartbeat before any is declared dead. So a
/// database outage, even one longer than the lease, kills no live instance.
pub(crate) async fn keep_alive(
    store: Store,
    me: InstanceInfo,
    deliverers: Vec<std::sync::Arc<Deliverer>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(me.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `join` has just registered it.
    let mut beats = Beats::new(tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = beat(&store, &me, &deliverers, &mut beats).await {
            tracing::warn!(error = %e, "cannot renew this instance's heartbeat");
        }
    }
}

/// When this instance's heartbeats came through.
struct Beats {
    /// The last one.
    last: tokio::time::Instant,
    /// The first of those since, each within half a lease of the one before.
    on_time_since: tokio::time::Instant,
}

impl Beats {
    /// Beats that began (with the registration) at `at`.
    fn new(at: tokio::time::Instant) -> Self {
        Self {
            last: at,
            on_time_since: at,
        }
    }

    /// Notes a heartbeat that came through at `now`; true once they have all
    /// been on time (each within half a lease of the one before) for a whole
    /// lease, so that others may be judged by their lease.
    fn came(&mut self, now: tokio::time::Instant, lease: Duration) -> bool {
        if now - self.last > lease / 2 {
            self.on_time_since = now;
        }
        self.last = now;
        now - self.on_time_since >= lease
    }
}

/// `deliverers`: one per app, the default app's first (all settle alike).
async fn beat(
    store: &Store,
    me: &InstanceInfo,
    deliverers: &[std::sync::Arc<Deliverer>],
    beats: &mut Beats,
) -> Result<(), StorageError> {
    let renewed = store.heartbeat(me).await?;
    let judge = beats.came(tokio::time::Instant::now(), me.lease);
    if !renewed {
        tracing::error!(
            instance = %me.id,
            "this instance missed its lease (the database was out of reach?) and was declared dead; its requests in flight were recorded unknown and it registered again"
        );
    }
    let leftover = deliverers[0].leftover();
    let gone = gone_here(store, me).await?;
    let rescue = if judge {
        store.rescue_dead(leftover, &gone).await?
    } else {
        store.rescue_gone(leftover, &gone).await?
    };
    report(&rescue, leftover);
    let live = store.live_instances().await?;
    for deliverer in deliverers {
        deliverer.rate().set_instances(live);
    }
    crate::stats::live_instances(live);
    Ok(())
}

/// Removes `me` on a clean exit, giving back what it took and did not send.
pub(crate) async fn leave(store: &Store, me: &InstanceInfo) {
    if let Err(e) = store.deregister_instance(me).await {
        tracing::warn!(error = %e, "cannot deregister this instance; others settle it when its lease lapses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn others_are_judged_by_their_lease_only_after_a_lease_of_on_time_beats() {
        let start = tokio::time::Instant::now();
        let mut beats = Beats::new(start);
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(!beats.came(at(10), LEASE));
        assert!(!beats.came(at(20), LEASE));
        assert!(beats.came(at(30), LEASE), "a whole lease of on-time beats");
        assert!(beats.came(at(40), LEASE));
    }

    #[test]
    fn a_late_heartbeat_after_an_outage_starts_the_count_again() {
        let start = tokio::time::Instant::now();
        let mut beats = Beats::new(start);
        let at = |s: u64| start + Duration::from_secs(s);
        for s in [10, 20, 30] {
            beats.came(at(s), LEASE);
        }
        // The database was away for 60 s: everyone's heartbeat looks old.
        assert!(!beats.came(at(90), LEASE));
        assert!(!beats.came(at(100), LEASE));
        assert!(!beats.came(at(110), LEASE));
        assert!(beats.came(at(120), LEASE));
    }

    #[test]
    fn each_start_is_a_new_instance_of_this_process() {
        let a = this_process("send", LEASE);
        let b = this_process("daemon", LEASE);
        assert_eq!(a.pid, std::process::id());
        assert!(a.id.contains(&format!("-{}-", a.pid)), "{}", a.id);
        assert_eq!((a.role.as_str(), b.role.as_str()), ("send", "daemon"));
        assert_eq!(a.lease, LEASE);
        assert_eq!(a.host, b.host);
    }
}
