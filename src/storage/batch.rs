//! The send path's writes: claims (with the consent gate and the guarded credit
//! hold), `sending` marks and outcomes, folded into as few statements and
//! transactions as possible by the recorder.

use std::collections::HashSet;

use sqlx::Row;

use super::dialect::Dialect;
use super::sets::{CHUNK, bind_ids, bind_outcomes, outcome_set};
use super::settle::settle_credit;
use super::{Context, StorageError, Store, now};
use crate::domain::{ConsentGate, NO_CONSENT, Outcome, Status};

/// Marks the deliveries bound as `$ids` `sending` for instance `$me` at `$now`,
/// each only if still pending or claimed and nobody else's; returns their ids.
pub(super) fn mark_sending_sql(d: &dyn Dialect, ids: usize, now: usize, me: usize) -> String {
    // A delivery another instance took since (it joined the run, or a rescue
    // gave it back) is not this one's to send any more. The mark carries the
    // owner, so that a rescue finds this request even when the page was only
    // read (see `Store::pending_page`).
    format!(
        "UPDATE deliveries SET status = 'sending', owner = ${me}, updated_at = ${now} WHERE id {} \
         AND status IN ('pending', 'claimed') AND (owner IS NULL OR owner = ${me}) RETURNING id",
        d.in_ids(ids)
    )
}

/// Writes the outcomes of the set `v` (see `outcome_set`) at `$now`, each only
/// on a delivery still open and not another instance's than `$me`'s.
pub(super) fn record_outcomes_sql(d: &dyn Dialect, now: usize, me: usize) -> String {
    format!(
        "UPDATE deliveries SET status = v.status, errcode = v.errcode, errmsg = v.errmsg, \
         msgid = v.msgid, attempts = deliveries.attempts + v.attempts, \
         credit = 0, owner = NULL, updated_at = ${now} \
         FROM v WHERE deliveries.id = v.id{} AND deliveries.status IN ('pending', 'claimed', 'sending') \
         AND (deliveries.owner IS NULL OR deliveries.owner = ${me})",
        d.among_outcomes("deliveries.id")
    )
}

/// Marks a chunk of taken deliveries `sending` (they keep their credit), each
/// only if it is still pending or claimed; returns the ones marked. A narrower
/// statement than an outcome's, since it is one per request.
async fn mark_sending(
    conn: &mut super::db::Conn,
    dialect: &dyn Dialect,
    chunk: &[i64],
    now: &str,
    me: Option<&str>,
    marked: &mut HashSet<i64>,
) -> Result<(), StorageError> {
    let sql = mark_sending_sql(dialect, 1, 2, 3);
    let rows = bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
        .bind(now)
        .bind(me)
        .fetch_all(conn)
        .await
        .context("mark deliveries sending")?;
    marked.extend(rows.iter().map(|r| r.get::<i64, _>(0)));
    Ok(())
}

/// What one batch wrote: the claims taken and the marks made.
#[derive(Debug, Default)]
pub struct Written {
    /// Claimed deliveries that may be sent (under a one-time template: pending,
    /// and holding a credit; under any other gate, all of them).
    pub taken: HashSet<i64>,
    /// Deliveries marked `sending`, whose requests may start.
    pub marked: HashSet<i64>,
}

/// Writes a chunk of outcomes, each only on a delivery still open and not
/// another instance's: a sender gives back (as pending) deliveries it read but
/// never marked, and one read without being taken may meanwhile have been
/// taken, sent and finished by an instance that joined the run.
async fn record_outcomes(
    conn: &mut super::db::Conn,
    dialect: &dyn Dialect,
    chunk: &[Outcome],
    now: &str,
    me: Option<&str>,
) -> Result<(), StorageError> {
    let sql = format!("{} {}", outcome_set(1), record_outcomes_sql(dialect, 2, 3));
    bind_outcomes(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
        .bind(now)
        .bind(me)
        .execute(conn)
        .await
        .context("record delivery outcomes")?;
    Ok(())
}

/// Takes the pending deliveries among `claims` under `gate` into `taken`: under
/// a one-time template each holds a credit (`claimed`); those whose person lacks
/// one become `skipped`. Otherwise nothing is read: the `sending` mark checks,
/// guarded, that a delivery is still pending and nobody else's, and a rejection
/// on record was read with its page (`Store::pending_page`), which saves the send
/// path a statement per chunk.
async fn take_claims(
    conn: &mut super::db::Conn,
    dialect: &dyn Dialect,
    gate: &ConsentGate,
    claims: &[i64],
    now: &str,
    me: Option<&str>,
    taken: &mut HashSet<i64>,
) -> Result<(), StorageError> {
    let ConsentGate::Credit(t) = gate else {
        taken.extend(claims);
        return Ok(());
    };
    for chunk in claims.chunks(CHUNK) {
        // Another instance's deliveries are left alone, and a claim carries
        // its owner, as a mark does, for a rescue to find.
        let sql = format!(
            "UPDATE deliveries SET status = 'claimed', credit = 1, owner = $2, updated_at = $1 \
             WHERE status = 'pending' AND (owner IS NULL OR owner = $2) AND id {} \
             AND EXISTS (SELECT 1 FROM consents c WHERE c.appid = $5 AND c.openid = deliveries.openid \
             AND c.template_id = $4 AND c.credits > c.reserved) RETURNING id, openid",
            dialect.in_ids(3)
        );
        let q = bind_ids(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now.to_owned())
                .bind(me),
            chunk,
        )
        .bind(t.template_id.as_ref().to_owned())
        .bind(t.appid.as_ref().to_owned());
        let mut mine: Vec<(i64, String)> = q
            .fetch_all(&mut *conn)
            .await
            .context("claim deliveries")?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        if !mine.is_empty() {
            // Each claimed delivery holds one credit until its outcome settles it.
            // The guard `credits > reserved` is what spends a credit once: it
            // holds under row-level locking too, where two claims could both
            // have passed the check above.
            let ids: Vec<i64> = mine.iter().map(|(id, _)| *id).collect();
            let sql = format!(
                "UPDATE consents SET reserved = reserved + 1 WHERE appid = $1 AND template_id = $2 \
                 AND credits > reserved AND openid IN \
                 (SELECT openid FROM deliveries WHERE id {}) RETURNING openid",
                dialect.in_ids(3)
            );
            let q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(t.appid.as_ref().to_owned())
                .bind(t.template_id.as_ref().to_owned());
            let held: HashSet<String> = bind_ids(q, &ids)
                .fetch_all(&mut *conn)
                .await
                .context("hold consent credits")?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // One held credit pays for one delivery, even when one person has
            // several among these claims (the statement holds once per row).
            let mut paid = HashSet::with_capacity(held.len());
            let lost: Vec<i64> = mine
                .iter()
                .filter(|(_, o)| !(held.contains(o) && paid.insert(o.clone())))
                .map(|(id, _)| *id)
                .collect();
            if !lost.is_empty() {
                // Lost the credit to another claim: back to pending, then
                // skipped below like everyone else without consent.
                let sql = format!(
                    "UPDATE deliveries SET status = 'pending', credit = 0 WHERE id {}",
                    dialect.in_ids(1)
                );
                bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), &lost)
                    .execute(&mut *conn)
                    .await
                    .context("release lost claims")?;
                mine.retain(|(id, _)| !lost.contains(id));
            }
        }
        // Only when some were not taken: pending ones among them lack consent.
        if mine.len() < chunk.len() {
            let mine: HashSet<i64> = mine.iter().map(|(id, _)| *id).collect();
            let left: Vec<i64> = chunk
                .iter()
                .filter(|id| !mine.contains(id))
                .copied()
                .collect();
            // Those another instance holds were passed over for that, not
            // for consent: theirs to claim.
            let sql = format!(
                "UPDATE deliveries SET status = 'skipped', errmsg = $1, updated_at = $2 \
                 WHERE status = 'pending' AND (owner IS NULL OR owner = $3) AND id {}",
                dialect.in_ids(4)
            );
            let q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(NO_CONSENT)
                .bind(now.to_owned())
                .bind(me);
            bind_ids(q, &left)
                .execute(&mut *conn)
                .await
                .context("skip deliveries without consent")?;
        }
        taken.extend(mine.into_iter().map(|(id, _)| id));
    }
    Ok(())
}

/// A connection kept between batches by one writer (see
/// `Store::write_batch_on`): taking one from the pool and giving it back costs
/// two round trips to the database (sqlx tests it each way), which a batch on
/// the send path, a round trip itself, cannot afford.
#[derive(Default)]
pub struct Held(Option<sqlx::pool::PoolConnection<super::db::Db>>);

impl Store {
    /// Takes `claims` (each only if still pending and, under `gate`, only with
    /// consent; the others become `skipped`; a one-time template's become
    /// `claimed`, each holding a credit), marks `marks` (claimed deliveries whose
    /// requests are about to start) `sending`, and records `outcomes`, settling
    /// the credits they held: in one transaction whenever credits or refusals
    /// are involved. Returns the claims taken and the marks made.
    ///
    /// Rows are written a chunk per statement: one statement per row would cost a
    /// round trip to SQLite's thread each, which dominated the send path.
    pub async fn write_batch(
        &self,
        gate: &ConsentGate,
        claims: &[i64],
        marks: &[i64],
        outcomes: &[Outcome],
    ) -> Result<Written, StorageError> {
        self.write_batch_on(&mut Held::default(), gate, claims, marks, outcomes)
            .await
    }

    /// `write_batch`, on the connection in `held` when the batch needs no
    /// transaction (taken from the pool when `held` is empty, and kept there).
    pub async fn write_batch_on(
        &self,
        held: &mut Held,
        gate: &ConsentGate,
        claims: &[i64],
        marks: &[i64],
        outcomes: &[Outcome],
    ) -> Result<Written, StorageError> {
        // Most batches are marks and outcomes of one chunk (claims under no
        // credit write nothing), a statement each: each is its own transaction
        // (a write statement takes the write lock when it starts, as BEGIN
        // IMMEDIATE does; see below for their order), which saves the round
        // trips of BEGIN and COMMIT on the send path.
        if claims.is_empty() && marks.is_empty() && outcomes.is_empty() {
            return Ok(Written::default());
        }
        // Consent is written in the same transaction as what changes it: a
        // one-time template's claims hold credits, and some outcomes settle
        // them or record a refusal (`ConsentGate::touched_by`).
        let touches_consent = outcomes.iter().any(|o| gate.touched_by(o.status))
            || (matches!(gate, ConsentGate::Credit(_)) && !claims.is_empty());
        let one_statement = marks.len() <= CHUNK && outcomes.len() <= CHUNK && !touches_consent;
        if one_statement {
            self.check_identity()?;
            let conn = match held.0.as_mut() {
                Some(conn) => conn,
                None => held.0.insert(
                    self.pool
                        .acquire()
                        .await
                        .context("record delivery outcomes")?,
                ),
            };
            let written = self
                .write_statements(conn, gate, claims, marks, outcomes)
                .await;
            if written.is_err() {
                // It may be broken (a restarted server): the next batch takes
                // a fresh one from the pool, which tests it first.
                if let Some(mut conn) = held.0.take() {
                    conn.close_on_drop();
                }
            }
            return written;
        }
        self.write_in_transaction(gate, claims, marks, outcomes)
            .await
    }

    /// A batch that needs no transaction, as autocommitted statements on `conn`.
    async fn write_statements(
        &self,
        conn: &mut super::db::Conn,
        gate: &ConsentGate,
        claims: &[i64],
        marks: &[i64],
        outcomes: &[Outcome],
    ) -> Result<Written, StorageError> {
        let mut written = Written::default();
        let me = self.instance.as_deref();
        let now = now();
        take_claims(
            conn,
            self.dialect,
            gate,
            claims,
            &now,
            me,
            &mut written.taken,
        )
        .await?;
        let together = (!outcomes.is_empty() && !marks.is_empty())
            .then(|| self.dialect.record_and_mark())
            .flatten();
        if let Some(sql) = together {
            let rows = bind_ids(
                bind_outcomes(sqlx::query(sqlx::AssertSqlSafe(sql)), outcomes).bind(&now),
                marks,
            )
            .bind(me)
            .fetch_all(&mut *conn)
            .await
            .context("record outcomes and mark deliveries sending")?;
            written
                .marked
                .extend(rows.iter().map(|r| r.get::<i64, _>(0)));
            return Ok(written);
        }
        // Outcomes first: a sender queues its outcome before it frees its slot
        // for the next mark, so committing in this order keeps the committed
        // `sending` rows to the requests in flight, even if the process dies
        // between the two statements.
        if !outcomes.is_empty() {
            record_outcomes(conn, self.dialect, outcomes, &now, me).await?;
        }
        if !marks.is_empty() {
            mark_sending(conn, self.dialect, marks, &now, me, &mut written.marked).await?;
        }
        Ok(written)
    }

    /// A batch with credits to hold or settle, refusals to record, or more
    /// than a chunk of rows: one transaction.
    async fn write_in_transaction(
        &self,
        gate: &ConsentGate,
        claims: &[i64],
        marks: &[i64],
        outcomes: &[Outcome],
    ) -> Result<Written, StorageError> {
        let mut written = Written::default();
        let me = self.instance.as_deref();
        let mut tx = self.write().await?;
        let now = now();
        take_claims(
            &mut tx,
            self.dialect,
            gate,
            claims,
            &now,
            me,
            &mut written.taken,
        )
        .await?;
        for chunk in marks.chunks(CHUNK) {
            mark_sending(&mut tx, self.dialect, chunk, &now, me, &mut written.marked).await?;
        }
        for chunk in outcomes.chunks(CHUNK) {
            if let ConsentGate::Credit(template) = gate {
                // Before the deliveries lose their `credit` mark below; the
                // settlement rule is `credit_after`.
                let sql = format!(
                    "{} UPDATE consents SET {} \
                     FROM v JOIN deliveries d ON d.id = v.id \
                     WHERE d.credit = 1 AND (d.owner IS NULL OR d.owner = $4){} \
                     AND consents.openid = d.openid AND consents.template_id = $2 AND consents.appid = $3",
                    outcome_set(1),
                    settle_credit("v.status"),
                    self.dialect.among_outcomes("d.id")
                );
                bind_outcomes(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
                    .bind(template.template_id.as_ref().to_owned())
                    .bind(template.appid.as_ref().to_owned())
                    .bind(me)
                    .execute(&mut *tx)
                    .await
                    .context("settle consent credits")?;
            }
            let refused = chunk.iter().any(|o| o.status == Status::Refused);
            if let (ConsentGate::NotRefused(template), true) = (gate, refused) {
                // 43101 on a long-term template: the subscription is gone. Only rows
                // on record change, so a listed recipient is still tried next time;
                // a ban on record (it may have come while the request was out)
                // stays a ban.
                let sql = format!(
                    "{} UPDATE consents SET status = 'reject', credits = 0, updated_at = $2 \
                     FROM v JOIN deliveries d ON d.id = v.id \
                     WHERE v.status = 'refused'{} AND consents.openid = d.openid AND consents.template_id = $3 \
                     AND consents.appid = $4 AND consents.status <> 'ban'",
                    outcome_set(1),
                    self.dialect.among_outcomes("d.id")
                );
                bind_outcomes(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
                    .bind(&now)
                    .bind(template.template_id.as_ref().to_owned())
                    .bind(template.appid.as_ref().to_owned())
                    .execute(&mut *tx)
                    .await
                    .context("record refused subscriptions")?;
            }
            record_outcomes(&mut tx, self.dialect, chunk, &now, me).await?;
        }
        tx.commit().await.context("commit delivery updates")?;
        Ok(written)
    }
}
