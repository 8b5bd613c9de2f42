//! Instances: the wxpush processes using one database, each heart-beating. One
//! that misses its lease is dead, and a survivor settles what it held: its
//! `sending` deliveries (a request may have gone out) become unknown, the rest
//! go back to pending for anyone to take. Only the survivor that deletes the
//! dead instance's row settles it, so two survivors never settle it twice.

use serde::Serialize;
use sqlx::Row;

use super::settle::{Holders, settle};
use super::{Context, StorageError, Store, now};
use crate::domain::{JobName, Status};

/// Who a process is, for the instances table.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// A new id per process.
    pub id: String,
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// wxpush's version.
    pub version: String,
    /// `daemon` or `send`.
    pub role: String,
    /// How long it may go without a heartbeat before it counts as dead.
    pub lease: std::time::Duration,
}

/// An instance as listed by `wxpush instances`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    /// Its id.
    pub id: String,
    /// Its machine.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// Its wxpush version.
    pub version: String,
    /// `daemon` or `send`.
    pub role: String,
    /// When it started.
    pub started_at: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Its lease, in milliseconds: past it, it counts as dead.
    pub lease_ms: i64,
    /// Deliveries it has taken and not yet sent.
    pub taken: i64,
    /// Requests it has in flight.
    pub sending: i64,
    /// The runs those belong to.
    pub runs: Vec<i64>,
}

impl InstanceRow {
    /// Whether it has heart-beaten within its lease.
    pub fn live(&self) -> bool {
        self.heartbeat_age_ms <= self.lease_ms
    }
}

/// A run a dead instance held deliveries of, for the rescuer to drain and finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescuedRun {
    /// The run.
    pub run_id: i64,
    /// Its job.
    pub job: String,
}

/// What a rescue settled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rescue {
    /// The dead instances settled.
    pub instances: Vec<String>,
    /// Their `sending` deliveries, now `leftover` (unknown, or pending when
    /// unknown outcomes are retried).
    pub in_flight: u64,
    /// Their taken, unsent deliveries, back to pending.
    pub returned: u64,
    /// The runs it held deliveries of.
    pub runs: Vec<RescuedRun>,
}

impl Store {
    /// This store, taking deliveries as instance `id`.
    pub fn as_instance(&self, id: &str) -> Store {
        let mut store = self.clone();
        store.instance = Some(id.into());
        store
    }

    /// The instance this store takes deliveries as, if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// What wakes a waiter when another instance may have changed a job's
    /// shared runs (PostgreSQL's `NOTIFY`; see `postgres::signals`). Made before
    /// the waiter first looks, so that nothing signalled after that is missed.
    pub fn run_changes(&self) -> super::RunChanges {
        super::RunChanges(self.signals.as_ref().map(|s| s.subscribe()))
    }

    /// Tells the other instances that `job`'s runs have work or have changed
    /// (a drain began, or finished its share). Only a hint: they also look on a
    /// timer, so a signal that fails is logged and nothing else.
    pub async fn signal_job(&self, job: &JobName) {
        self.signal(job.as_ref()).await;
    }

    /// `signal_job` for a job as stored (a rescued run's), or for `""`, which
    /// wakes every waiter.
    pub(super) async fn signal(&self, job: &str) {
        let Some(signals) = &self.signals else {
            return;
        };
        if let Err(e) = signals.notify(&self.pool, job).await {
            tracing::debug!(error = %e, "cannot signal the other instances");
        }
    }

    /// Adds (or renews) this process's row.
    pub async fn register_instance(&self, me: &InstanceInfo) -> Result<(), StorageError> {
        let sql = format!(
            "INSERT INTO instances (id, host, pid, version, role, started_at, heartbeat_ms, lease_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, {now}, $7) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = {now}, lease_ms = $7",
            now = self.dialect.now_ms()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&me.id)
            .bind(&me.host)
            .bind(i64::from(me.pid))
            .bind(&me.version)
            .bind(&me.role)
            .bind(now())
            .bind(me.lease.as_millis() as i64)
            .execute(&self.pool)
            .await
            .context("register this instance")?;
        Ok(())
    }

    /// Renews `me`'s heartbeat; false when its row was gone (a survivor declared
    /// it dead and settled its deliveries), in which case it is registered anew.
    pub async fn heartbeat(&self, me: &InstanceInfo) -> Result<bool, StorageError> {
        let sql = format!(
            "UPDATE instances SET heartbeat_ms = {} WHERE id = $1",
            self.dialect.now_ms()
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&me.id)
            .execute(&self.pool)
            .await
            .context("renew this instance's heartbeat")?;
        if r.rows_affected() == 0 {
            self.register_instance(me).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// How many instances are live now (this one included).
    pub async fn live_instances(&self) -> Result<u64, StorageError> {
        let sql = format!(
            "SELECT COUNT(*) FROM instances WHERE heartbeat_ms >= {} - lease_ms",
            self.dialect.now_ms()
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .context("count live instances")?;
        Ok(n.max(0) as u64)
    }

    /// Whether an instance other than this store's is live now.
    pub async fn others_live(&self) -> Result<bool, StorageError> {
        let sql = format!(
            "SELECT COUNT(*) FROM instances WHERE heartbeat_ms >= {} - lease_ms \
             AND ($1 IS NULL OR id <> $1)",
            self.dialect.now_ms()
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(self.instance.as_deref())
            .fetch_one(&self.pool)
            .await
            .context("look for other live instances")?;
        Ok(n > 0)
    }

    /// The `(id, pid)` of the instances registered from `host`.
    pub async fn instances_on(&self, host: &str) -> Result<Vec<(String, i64)>, StorageError> {
        let rows = sqlx::query("SELECT id, pid FROM instances WHERE host = $1")
            .bind(host)
            .fetch_all(&self.pool)
            .await
            .context("list this host's instances")?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("pid"))).collect())
    }

    /// Settles every instance whose heartbeat is older than its lease, and those
    /// in `gone` (known dead: their process is gone from this host), as the
    /// module's doc says. `leftover` is what their `sending` deliveries become.
    pub async fn rescue_dead(
        &self,
        leftover: Status,
        gone: &[String],
    ) -> Result<Rescue, StorageError> {
        self.rescue(leftover, gone, 1).await
    }

    /// Settles those in `gone`, and the instances silent for more than twice
    /// their lease: for a process that has just started, which cannot tell
    /// an instance that died from one the database was away from a moment
    /// ago (all of whose heartbeats look old), but must still settle what an
    /// instance dead for a while left behind.
    pub async fn rescue_long_dead(
        &self,
        leftover: Status,
        gone: &[String],
    ) -> Result<Rescue, StorageError> {
        self.rescue(leftover, gone, 2).await
    }

    /// Settles only the instances in `gone` (their process is known to be
    /// gone), not those whose lease lapsed: for an instance that was itself
    /// cut off from the database just now, when everyone's heartbeat looks
    /// old and the others have not had a turn to renew theirs yet.
    pub async fn rescue_gone(
        &self,
        leftover: Status,
        gone: &[String],
    ) -> Result<Rescue, StorageError> {
        self.rescue(leftover, gone, 0).await
    }

    /// Settles `gone` and, unless `leases` is 0, the instances silent for
    /// more than `leases` of their leases.
    async fn rescue(
        &self,
        leftover: Status,
        gone: &[String],
        leases: i64,
    ) -> Result<Rescue, StorageError> {
        let mut rescue = Rescue::default();
        let mut dead: Vec<String> = if leases > 0 {
            let sql = format!(
                "SELECT id FROM instances WHERE heartbeat_ms < {} - lease_ms * {leases}",
                self.dialect.now_ms()
            );
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await
                .context("find dead instances")?
        } else {
            Vec::new()
        };
        dead.extend(
            gone.iter()
                .filter(|g| !dead.contains(g))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for id in dead {
            let mut tx = self.write().await?;
            // The delete decides: of two survivors, only one settles the dead one,
            // and one that came back to life in between is left alone.
            let sql = format!(
                "DELETE FROM instances WHERE id = $1 AND \
                 (($3 > 0 AND heartbeat_ms < {} - lease_ms * $3) OR $2)",
                self.dialect.now_ms()
            );
            let gone = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .bind(gone.contains(&id))
                .bind(leases)
                .execute(&mut *tx)
                .await
                .context("remove a dead instance")?;
            if gone.rows_affected() == 0 {
                tx.rollback().await.context("leave a live instance")?;
                continue;
            }
            let (in_flight, returned, runs) = settle_owner(&mut tx, &id, leftover).await?;
            tx.commit().await.context("commit a rescue")?;
            // Drains waiting on the dead one look again now (a hint, after the
            // commit, so that a failed notice never undoes the rescue): one
            // notice per job, however many of its runs the dead one held.
            let jobs: std::collections::BTreeSet<&str> =
                runs.iter().map(|r| r.job.as_str()).collect();
            for job in jobs {
                self.signal(job).await;
            }
            rescue.in_flight += in_flight;
            rescue.returned += returned;
            for run in runs {
                if !rescue.runs.contains(&run) {
                    rescue.runs.push(run);
                }
            }
            rescue.instances.push(id);
        }
        Ok(rescue)
    }

    /// Removes this process's row on a clean exit, giving back the deliveries it
    /// took and did not send, so that others need not wait out its lease.
    pub async fn deregister_instance(&self, me: &InstanceInfo) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(&me.id)
            .execute(&mut *tx)
            .await
            .context("deregister this instance")?;
        // Nothing of ours is in flight on a clean exit; should something be, it
        // is unknown, never resent.
        let (_, returned, _) = settle_owner(&mut tx, &me.id, Status::Unknown).await?;
        tx.commit().await.context("commit a deregistration")?;
        if returned > 0 {
            // What it gave back is anyone's now: an empty job wakes every waiter.
            self.signal("").await;
        }
        Ok(())
    }

    /// Every instance on record, with what each holds.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StorageError> {
        let sql = format!(
            "SELECT id, host, pid, version, role, started_at, {} - heartbeat_ms AS age, lease_ms \
             FROM instances ORDER BY started_at, id",
            self.dialect.now_ms()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .context("list instances")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get("id");
            let held = sqlx::query(
                "SELECT d.run_id, \
                 COALESCE(SUM(CASE WHEN d.status IN ('pending', 'claimed') THEN 1 ELSE 0 END), 0) AS taken, \
                 COALESCE(SUM(CASE WHEN d.status = 'sending' THEN 1 ELSE 0 END), 0) AS sending \
                 FROM deliveries d WHERE d.owner = $1 \
                 AND d.status IN ('pending', 'claimed', 'sending') \
                 AND d.run_id IN (SELECT id FROM runs WHERE status IN ('running', 'interrupted', 'stopped')) \
                 GROUP BY d.run_id ORDER BY d.run_id",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .context("list what an instance holds")?;
            out.push(InstanceRow {
                host: r.get("host"),
                pid: r.get("pid"),
                version: r.get("version"),
                role: r.get("role"),
                started_at: r.get("started_at"),
                heartbeat_age_ms: r.get("age"),
                lease_ms: r.get("lease_ms"),
                taken: held.iter().map(|h| h.get::<i64, _>("taken")).sum(),
                sending: held.iter().map(|h| h.get::<i64, _>("sending")).sum(),
                runs: held.iter().map(|h| h.get("run_id")).collect(),
                id,
            });
        }
        Ok(out)
    }
}

/// Settles the deliveries `owner` held in unfinished runs (see `settle`).
/// Returns the in-flight and returned counts and the runs it held deliveries
/// of, which someone must now drain and finish.
async fn settle_owner(
    tx: &mut super::WriteTx,
    owner: &str,
    leftover: Status,
) -> Result<(u64, u64, Vec<RescuedRun>), StorageError> {
    // Read before the settlement takes the rows from their owner.
    let runs = sqlx::query(
        "SELECT DISTINCT r.id, r.job FROM deliveries d JOIN runs r ON r.id = d.run_id \
         WHERE d.owner = $1 AND d.status IN ('pending', 'claimed', 'sending') \
         AND r.status IN ('running', 'interrupted', 'stopped') ORDER BY r.id",
    )
    .bind(owner)
    .fetch_all(&mut **tx)
    .await
    .context("find a dead instance's runs")?
    .into_iter()
    .map(|r| RescuedRun {
        run_id: r.get("id"),
        job: r.get("job"),
    })
    .collect();
    let settled = settle(tx, Holders::Owner(owner), leftover).await?;
    // Its sends on demand in flight are never sent again, whatever `leftover`.
    let sends = super::sends::settle_owner_sends(tx, owner).await?;
    Ok((settled.in_flight + sends, settled.returned, runs))
}
