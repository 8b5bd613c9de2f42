//! Deliveries: one row per recipient per run, moved through its statuses.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::settle::{Holders, settle};
use super::{Audience, Context, StorageError, Store};
use crate::domain::{AppTemplate, JobName, Status};

/// A run's books, from `Store::audit_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAudit {
    /// Deliveries.
    pub total: i64,
    /// Sent ones.
    pub sent: i64,
    /// Distinct openids among the sent ones.
    pub distinct_sent: i64,
    /// The most sent deliveries any one openid has: 1 when all is well.
    pub max_per_openid: i64,
}

/// A delivery waiting to be sent, with its recipient's data.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    /// The delivery.
    pub id: i64,
    /// The recipient (as stored; parsed by the caller).
    pub openid: String,
    /// Their variables, `name` included.
    pub vars: BTreeMap<String, String>,
    /// A rejection or ban of the template is on record for them (read only when
    /// the page was asked about a template): not to be sent.
    pub refused: bool,
}

/// An instance holding deliveries of a run that are not final yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The instance (empty: a process that took them without registering).
    pub instance: String,
    /// Taken and not sent yet (pending or claimed).
    pub taken: i64,
    /// With a request in flight, or an outcome not yet written (`sending`).
    pub sending: i64,
}

/// One delivery, for history.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    /// The delivery.
    pub id: i64,
    /// The recipient.
    pub openid: String,
    /// Where it stands.
    pub status: Status,
    /// WeChat's errcode.
    pub errcode: Option<i64>,
    /// WeChat's errmsg or the local reason.
    pub errmsg: Option<String>,
    /// The msgid, as text (it does not fit a double).
    pub msgid: Option<String>,
    /// Requests made.
    pub attempts: i64,
    /// WeChat's later `subscribe_msg_sent_event` for it: `0 success`, or the failure.
    pub push_event: Option<String>,
    /// Last change.
    pub updated_at: String,
}

/// A deferred delivery's reason, with where the send that carries it stands.
fn with_send(errmsg: Option<String>, row: &super::db::Row) -> Option<String> {
    let Some(id) = row.get::<Option<i64>, _>("send_id") else {
        return errmsg;
    };
    let status: String = row.get("send_status");
    let held: Option<String> = row.get("send_held");
    let now = if status == "pending" && held.is_some() {
        format!("deferred until {}", row.get::<String, _>("send_at"))
    } else {
        status
    };
    Some(format!("{}; send {id}: {now}", errmsg.unwrap_or_default()))
}

/// Reads a recipient's stored variables, adding `name` when it has one.
pub(super) fn vars_of(name: Option<String>, vars: Option<String>) -> BTreeMap<String, String> {
    let map: BTreeMap<String, String> = vars
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    crate::domain::with_name(map, name.as_deref())
}

/// A column that is 1 when the person of the delivery aliased `d` has rejected
/// or been banned from the template `$t` of app `$a` (parameters `(t, a)`), 0
/// otherwise or without them. Read with the page, so that a long-term
/// template's claims need no statement of their own on the send path: the
/// rejection is checked up to two pages before the request (the next page is
/// read while one is sent) instead of a chunk before, and one that comes in
/// between is WeChat's to refuse (43101), as one after the send would be.
pub(in crate::storage) fn refused_column(d: &str, params: Option<(usize, usize)>) -> String {
    match params {
        None => "CAST(0 AS BIGINT)".to_owned(),
        Some((t, a)) => format!(
            "CAST(CASE WHEN EXISTS (SELECT 1 FROM consents c WHERE c.appid = ${a} \
             AND c.openid = {d}.openid AND c.template_id = ${t} AND c.status IN ('reject', 'ban')) \
             THEN 1 ELSE 0 END AS BIGINT)"
        ),
    }
}

/// Binds the template and its app for `refused_column`, after the statement's
/// own parameters, when a page asks about one.
fn bind_refusals<'q>(
    q: super::db::Query<'q>,
    refusals: Option<&AppTemplate>,
) -> super::db::Query<'q> {
    match refusals {
        Some(t) => q
            .bind(t.template_id.as_ref().to_owned())
            .bind(t.appid.as_ref().to_owned()),
        None => q,
    }
}

impl Store {
    /// Settles what a crash left of a run: `sending` rows (a request may have gone
    /// out) become `to` (unknown, or pending when unknown outcomes are retried),
    /// `claimed` rows (no request was made) go back to pending. Credits follow: an
    /// unknown send may have used its credit, so it is spent; the rest are released.
    /// Rows held by another registered instance are its own (it may be sending
    /// them now): a rescue settles them once it is dead. This store's own
    /// instance's rows are settled too: the caller holds the job's lease, so
    /// none of them is in flight in this process (the drain that marked them
    /// wrote or kept every answer it had: see `RecordWriter::settle`). Returns
    /// the `sending` rows settled.
    pub async fn recover_sending(&self, run_id: i64, to: Status) -> Result<u64, StorageError> {
        let me = self.instance.as_deref();
        let mut tx = self.write().await?;
        let settled = settle(&mut tx, Holders::Run { run_id, me }, to).await?;
        tx.commit().await.context("commit recovered deliveries")?;
        Ok(settled.in_flight)
    }

    /// Up to `limit` pending deliveries of a run with ids above `after`, in id
    /// order, each saying whether its person refused `refusals` when given.
    /// Where instances share runs (see `Topology`) another instance's
    /// are passed over, and the rest are taken for this store's instance while
    /// another is live. Alone, it only reads them: their claims and `sending`
    /// marks take them, guarded, so an instance that joins meanwhile and takes
    /// some first simply wins those, and each is re-checked per page.
    pub async fn pending_page(
        &self,
        job: &JobName,
        audience: Audience,
        refusals: Option<&AppTemplate>,
        run_id: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StorageError> {
        // Names and variables come from where the audience came from: the job's
        // recipients, or what people sent through the intake API.
        let shared = match &self.instance {
            Some(me) if self.dialect.shares_runs() => {
                let take = self.others_live().await?;
                self.dialect
                    .shared_page(audience, refusals.is_some(), take)
                    .map(|page| (me, page))
            }
            _ => None,
        };
        let rows = match shared {
            Some((me, page)) => {
                let q = sqlx::query(sqlx::AssertSqlSafe(page.sql))
                    .bind(me.as_ref())
                    .bind(run_id)
                    .bind(after)
                    .bind(i64::from(limit));
                let q = match audience {
                    Audience::Listed => q.bind(job.as_ref()),
                    Audience::Subscribed { .. } | Audience::Query => q,
                };
                let q = bind_refusals(q, refusals);
                // In a transaction of its own, which `page.setup` sets up.
                let mut tx = self.write().await?;
                sqlx::query(page.setup)
                    .execute(&mut *tx)
                    .await
                    .context("read pending deliveries")?;
                let rows = q.fetch_all(&mut *tx).await;
                if rows.is_ok() {
                    tx.commit().await.context("read pending deliveries")?;
                }
                rows
            }
            None => {
                // The template and its app follow the statement's own parameters.
                let first = if matches!(audience, Audience::Listed) { 5 } else { 4 };
                let refused = refused_column("d", refusals.map(|_| (first, first + 1)));
                let sql = match audience {
                    Audience::Listed => format!(
                        "SELECT d.id, d.openid, r.name, r.vars, {refused} AS refused FROM deliveries d \
                         LEFT JOIN recipients r ON r.job = $1 AND r.openid = d.openid \
                         WHERE d.run_id = $2 AND d.status = 'pending' AND d.id > $3 ORDER BY d.id LIMIT $4"
                    ),
                    Audience::Query => format!(
                        "SELECT d.id, d.openid, NULL AS name, d.vars, {refused} AS refused FROM deliveries d \
                         WHERE d.run_id = $1 AND d.status = 'pending' AND d.id > $2 ORDER BY d.id LIMIT $3"
                    ),
                    Audience::Subscribed { .. } => format!(
                        "SELECT d.id, d.openid, s.name, s.vars, {refused} AS refused FROM deliveries d \
                         LEFT JOIN subscribers s ON s.appid = (SELECT appid FROM runs WHERE id = $1) \
                         AND s.openid = d.openid \
                         WHERE d.run_id = $1 AND d.status = 'pending' AND d.id > $2 ORDER BY d.id LIMIT $3"
                    ),
                };
                let q = sqlx::query(sqlx::AssertSqlSafe(sql));
                let q = match audience {
                    Audience::Listed => q.bind(job.as_ref()),
                    Audience::Subscribed { .. } | Audience::Query => q,
                };
                let q = q.bind(run_id).bind(after).bind(i64::from(limit));
                bind_refusals(q, refusals).fetch_all(&self.pool).await
            }
        }
        .context("read pending deliveries")?;
        Ok(rows
            .into_iter()
            .map(|row| PendingDelivery {
                id: row.get("id"),
                openid: row.get("openid"),
                vars: vars_of(row.get("name"), row.get("vars")),
                refused: row.get::<i64, _>("refused") != 0,
            })
            .collect())
    }

    /// Gives back the deliveries of a run this store's instance took and did not
    /// send (a drain that stopped early), so that any instance may take them.
    pub async fn release_taken(&self, run_id: i64) -> Result<(), StorageError> {
        let Some(me) = &self.instance else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE deliveries SET owner = NULL WHERE run_id = $1 AND owner = $2 AND status = 'pending'",
        )
        .bind(run_id)
        .bind(me.as_ref())
        .execute(&self.pool)
        .await
        .context("give back taken deliveries")?;
        Ok(())
    }

    /// Who holds a run's deliveries that are not final yet, and how many.
    pub async fn holders(&self, run_id: i64) -> Result<Vec<Holder>, StorageError> {
        let rows = sqlx::query(
            "SELECT COALESCE(owner, '') AS owner, \
             COALESCE(SUM(CASE WHEN status IN ('pending', 'claimed') THEN 1 ELSE 0 END), 0) AS taken, \
             COALESCE(SUM(CASE WHEN status = 'sending' THEN 1 ELSE 0 END), 0) AS sending \
             FROM deliveries WHERE run_id = $1 AND status IN ('pending', 'claimed', 'sending') \
             AND (owner IS NOT NULL OR status <> 'pending') \
             GROUP BY COALESCE(owner, '') ORDER BY 1",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .context("find who holds a run's deliveries")?;
        Ok(rows
            .iter()
            .map(|r| Holder {
                instance: r.get("owner"),
                taken: r.get("taken"),
                sending: r.get("sending"),
            })
            .collect())
    }

    /// Every delivery of a run, in id order.
    pub async fn deliveries(&self, run_id: i64) -> Result<Vec<DeliveryRow>, StorageError> {
        self.deliveries_where(run_id, "", "", None, |q| q).await
    }

    /// A run's deliveries whose `conditions` (on `d`, parameters from `$2`,
    /// bound by `bind`) hold, in id order, at most `limit`; `read_by` follows
    /// the alias `d` (an index to read by).
    pub(super) async fn deliveries_where(
        &self,
        run_id: i64,
        read_by: &str,
        conditions: &str,
        limit: Option<u32>,
        bind: impl for<'q> FnOnce(super::db::Query<'q>) -> super::db::Query<'q>,
    ) -> Result<Vec<DeliveryRow>, StorageError> {
        let sql = format!(
            "SELECT d.id, d.openid, d.status, d.errcode, d.errmsg, COALESCE(d.msgid, s.msgid) AS msgid, \
             d.attempts, d.updated_at, e.error_code, e.error_status, s.id AS send_id, s.status AS send_status, \
             s.held AS send_held, s.send_at AS send_at FROM deliveries d{read_by} \
             LEFT JOIN sends s ON s.delivery_id = d.id AND d.status = 'deferred' \
             LEFT JOIN sent_events e ON e.appid = (SELECT appid FROM runs WHERE id = $1) \
             AND e.msgid = COALESCE(d.msgid, s.msgid) \
             WHERE d.run_id = $1{conditions} ORDER BY d.id{}",
            limit.map_or(String::new(), |n| format!(" LIMIT {n}"))
        );
        let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id))
            .fetch_all(&self.pool)
            .await
            .context("list deliveries")?;
        rows.into_iter()
            .map(|row| {
                Ok(DeliveryRow {
                    id: row.get("id"),
                    openid: row.get("openid"),
                    status: Status::parse(row.get("status"))
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
                        .context("decode a delivery's status")?,
                    errcode: row.get("errcode"),
                    errmsg: with_send(row.get("errmsg"), &row),
                    msgid: row.get("msgid"),
                    attempts: row.get("attempts"),
                    push_event: row
                        .get::<Option<i64>, _>("error_code")
                        .map(|c| format!("{c} {}", row.get::<String, _>("error_status"))),
                    updated_at: row.get("updated_at"),
                })
            })
            .collect()
    }

    /// Checks a run's books: deliveries, sent ones, distinct openids among them, and
    /// the most successful deliveries any one openid has (1 when all is well).
    pub async fn audit_run(&self, run_id: i64) -> Result<RunAudit, StorageError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0) AS sent, \
             COUNT(DISTINCT CASE WHEN status = 'sent' THEN openid END) AS distinct_sent, \
             (SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM deliveries \
               WHERE run_id = $1 AND status = 'sent' GROUP BY openid) AS per_openid) AS max_per_openid \
             FROM deliveries WHERE run_id = $2",
        )
        .bind(run_id)
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .context("audit a run")?;
        Ok(RunAudit {
            total: row.get("total"),
            sent: row.get("sent"),
            distinct_sent: row.get("distinct_sent"),
            max_per_openid: row.get("max_per_openid"),
        })
    }

    /// How many successful deliveries each openid has in a run (a test and audit aid).
    pub async fn sent_per_openid(
        &self,
        run_id: i64,
    ) -> Result<BTreeMap<String, i64>, StorageError> {
        let rows = sqlx::query("SELECT openid, COUNT(*) AS n FROM deliveries WHERE run_id = $1 AND status = 'sent' GROUP BY openid")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .context("count sent deliveries")?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get("openid"), r.get("n")))
            .collect())
    }
}
