//! Taking a due send: the claim (one guarded UPDATE of its row, so that of a
//! cancel and a claim exactly one wins), under the delivery policy when one
//! applies (`policy`), with a one-time template's credit held in the same
//! transaction.

use chrono::{DateTime, Utc};

use super::sends::{COLUMNS, SendRow, send_row};
use super::tx::WriteTx;
use super::{Context, StorageError, Store, now, ts};
use crate::domain::policy::Policy;

/// What a sender's claim of one due send got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Marked `sending` (and its credit held) and committed: request it now.
    Claimed(Box<SendRow>),
    /// Ended `skipped`: a one-time template and no credit (no request is made).
    Skipped,
    /// Someone else took it, it was cancelled, or it is not due.
    Lost,
    /// A policy held it: deferred (`Some(Defer)`, pending again at a later
    /// `send_at`), dropped (`Some(Drop)`, `suppressed`), or held past its
    /// `expires_at` (`None`, `expired`).
    Held(
        crate::domain::policy::Rule,
        Option<crate::domain::policy::Action>,
    ),
}

/// A due send, as a sender finds it before claiming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSend {
    /// Its id.
    pub id: i64,
    /// The AppID it is sent for.
    pub appid: String,
    /// Whether its claim holds a one-time credit.
    pub one_time: bool,
    /// The job whose defaults (and policy) it took.
    pub job: Option<String>,
    /// Its own policy layer, in JSON.
    pub policy: Option<String>,
}

impl Store {
    /// Takes send `id` for `owner` if it is pending, due at `at` and not
    /// expired: committed `sending` before its request (record before send),
    /// with a one-time template's credit held in the same transaction, or
    /// ended `skipped` without one.
    pub async fn claim_send(
        &self,
        due: &DueSend,
        owner: &str,
        at: DateTime<Utc>,
        policy: Option<(&Policy, chrono_tz::Tz)>,
    ) -> Result<Claim, StorageError> {
        if let Some((policy, tz)) = policy.filter(|(p, _)| !p.is_off()) {
            return self.claim_send_under(due.id, owner, at, policy, tz).await;
        }
        let _turn = self.sends_turn().await;
        let id = due.id;
        if !due.one_time {
            // No credit to hold: one statement, committed on its own (the
            // guard keeps a one-time send from going without its credit).
            let sql = claim_sql().replace("RETURNING", "AND one_time = 0 RETURNING");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(owner)
                .bind(ts(at))
                .bind(now())
                .fetch_optional(&self.pool)
                .await
                .context("claim a send")?;
            return match row {
                Some(row) => Ok(Claim::Claimed(Box::new(send_row(&row)?))),
                None => Ok(Claim::Lost),
            };
        }
        let Some((mut tx, send)) = self.claim_in_transaction(id, owner, at).await? else {
            return Ok(Claim::Lost);
        };
        if !hold_send_credit(&mut tx, &send).await? {
            tx.commit().await.context("claim a send")?;
            return Ok(Claim::Skipped);
        }
        tx.commit().await.context("claim a send")?;
        Ok(Claim::Claimed(Box::new(send)))
    }

    /// Marks send `id` `sending` for `owner` as of `at` in a transaction left
    /// open for what the claim does next; `None` (rolled back) when it is not
    /// a pending, due, unexpired send any more.
    pub(super) async fn claim_in_transaction(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(WriteTx, SendRow)>, StorageError> {
        let mut tx = WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("claim a send")?;
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(claim_sql()))
            .bind(id)
            .bind(owner)
            .bind(ts(at))
            .bind(now())
            .fetch_optional(&mut *tx)
            .await
            .context("claim a send")?
        else {
            tx.rollback().await.context("claim a send")?;
            return Ok(None);
        };
        Ok(Some((tx, send_row(&row)?)))
    }
}

/// Marks one due send (`$1`) `sending` for `$2` as of `$3` at `$4`, if it is
/// still pending, due and not expired.
pub(super) fn claim_sql() -> String {
    format!(
        "UPDATE sends SET status = 'sending', owner = $2, attempts = attempts + 1, held = NULL, \
         updated_at = $4 WHERE id = $1 AND status = 'pending' AND send_at <= $3 \
         AND expires_at > $3 RETURNING {COLUMNS}"
    )
}

/// Holds a one-time credit for a claimed `send` (nothing to hold otherwise);
/// without one it ends `skipped` and this is false.
pub(super) async fn hold_send_credit(
    tx: &mut WriteTx,
    send: &SendRow,
) -> Result<bool, StorageError> {
    if !send.one_time {
        return Ok(true);
    }
    // The guard `credits > reserved` spends a credit once, however
    // many sends and runs contend for it.
    let held = sqlx::query(
        "UPDATE consents SET reserved = reserved + 1 WHERE appid = $1 AND openid = $2 \
         AND template_id = $3 AND credits > reserved",
    )
    .bind(&send.appid)
    .bind(&send.openid)
    .bind(&send.template_id)
    .execute(&mut **tx)
    .await
    .context("hold a consent credit")?
    .rows_affected();
    let sql = if held == 1 {
        "UPDATE sends SET held_credit = 1 WHERE id = $1"
    } else {
        "UPDATE sends SET status = 'skipped', owner = NULL, \
         errmsg = 'no consent recorded for this one-time template' WHERE id = $1"
    };
    sqlx::query(sql)
        .bind(send.id)
        .execute(&mut **tx)
        .await
        .context("claim a send")?;
    Ok(held == 1)
}
