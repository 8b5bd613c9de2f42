//! Settling held deliveries: the one place the settlement rule
//! (`domain::credit_after`) becomes SQL, and the one routine that settles what
//! a holder left behind, for crash recovery (a run's rows) and for a dead
//! instance's rescue (its rows).

use super::tx::WriteTx;
use super::{Context, StorageError, now};
use crate::domain::{CreditEffect, Status, credit_after};

/// The `credits` and `reserved` assignments of a consent row whose held credit
/// settles as a delivery ending in `status` (an SQL expression) says.
pub(super) fn settle_credit(status: &str) -> String {
    let of = |effect: CreditEffect| -> String {
        Status::ALL
            .iter()
            .filter(|s| credit_after(**s) == effect)
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "credits = CASE WHEN {status} IN ({spend}) \
         THEN CASE WHEN consents.credits > 0 THEN consents.credits - 1 ELSE 0 END \
         WHEN {status} IN ({forfeit}) THEN 0 ELSE consents.credits END, \
         reserved = CASE WHEN consents.reserved > 0 THEN consents.reserved - 1 ELSE 0 END",
        spend = of(CreditEffect::Spend),
        forfeit = of(CreditEffect::Forfeit),
    )
}

/// Whose held deliveries a settlement is of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Holders<'a> {
    /// A run's, after a crash: those of nobody, of `me` (none of them in flight
    /// in this process: the caller holds the job), or of an instance no longer
    /// registered.
    Run {
        /// The run.
        run_id: i64,
        /// This store's instance.
        me: Option<&'a str>,
    },
    /// An instance's (dead, or leaving), in every unfinished run.
    Owner(&'a str),
}

impl Holders<'_> {
    /// The condition on deliveries (columns prefixed by `p`), from `$1` on.
    fn held(self, p: &str) -> String {
        match self {
            Self::Run { .. } => format!(
                "{p}run_id = $1 AND ({p}owner IS NULL OR {p}owner = $2 \
                 OR {p}owner NOT IN (SELECT id FROM instances))"
            ),
            // Through the unfinished runs (a run is finished only when none of
            // its deliveries is pending, claimed or sending), so that no index
            // on `owner` has to be kept on the send path.
            Self::Owner(_) => format!(
                "{p}owner = $1 AND {p}run_id IN \
                 (SELECT id FROM runs WHERE status IN ('running', 'interrupted', 'stopped'))"
            ),
        }
    }

    /// How many parameters `held` binds.
    fn params(self) -> usize {
        match self {
            Self::Run { .. } => 2,
            Self::Owner(_) => 1,
        }
    }

    /// Binds `held`'s parameters.
    fn bind<'q>(self, q: super::db::Query<'q>) -> super::db::Query<'q>
    where
        Self: 'q,
    {
        match self {
            Self::Run { run_id, me } => q.bind(run_id).bind(me),
            Self::Owner(owner) => q.bind(owner),
        }
    }

    /// What a settled request's row says.
    fn errmsg(self) -> &'static str {
        match self {
            Self::Run { .. } => "interrupted while sending: outcome unknown",
            Self::Owner(_) => "its instance died while sending: outcome unknown",
        }
    }

    /// Which rows not in flight go back to pending: a run's claimed ones (its
    /// pending ones are anyone's already), an instance's taken ones too.
    fn returned(self) -> &'static str {
        match self {
            Self::Run { .. } => "status = 'claimed'",
            Self::Owner(_) => "status IN ('pending', 'claimed')",
        }
    }
}

/// What a settlement did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Settled {
    /// `sending` rows (a request may have gone out) that became the leftover status.
    pub(super) in_flight: u64,
    /// Rows no request was made for, given back as pending.
    pub(super) returned: u64,
}

/// Settles `holders`' rows in `tx`: `sending` ones become `leftover` (unknown,
/// or pending when unknown outcomes are retried), the others go back to
/// pending, none keeps its owner, and each held credit settles as
/// `credit_after` says of where its row ends.
pub(super) async fn settle(
    tx: &mut WriteTx,
    holders: Holders<'_>,
    leftover: Status,
) -> Result<Settled, StorageError> {
    let n = holders.params();
    let ends = format!(
        "CASE WHEN d.status = 'sending' THEN CAST(${} AS TEXT) ELSE 'pending' END",
        n + 1
    );
    let sql = format!(
        "UPDATE consents SET {} FROM deliveries d JOIN runs r ON r.id = d.run_id \
         WHERE {} AND d.status IN ('sending', 'claimed') AND d.credit = 1 \
         AND consents.appid = r.appid AND consents.openid = d.openid \
         AND consents.template_id = r.template_id",
        settle_credit(&ends),
        holders.held("d.")
    );
    holders
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(leftover.as_str())
        .execute(&mut **tx)
        .await
        .context("settle the credits of held deliveries")?;
    let now = now();
    let sql = format!(
        "UPDATE deliveries SET status = ${}, credit = 0, owner = NULL, errmsg = ${}, \
         updated_at = ${} WHERE {} AND status = 'sending'",
        n + 1,
        n + 2,
        n + 3,
        holders.held("")
    );
    let in_flight = holders
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(leftover.as_str())
        .bind(holders.errmsg())
        .bind(&now)
        .execute(&mut **tx)
        .await
        .context("settle interrupted requests")?
        .rows_affected();
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', credit = 0, owner = NULL, updated_at = ${} \
         WHERE {} AND {}",
        n + 1,
        holders.held(""),
        holders.returned()
    );
    let returned = holders
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(&now)
        .execute(&mut **tx)
        .await
        .context("give back held deliveries")?
        .rows_affected();
    Ok(Settled {
        in_flight,
        returned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settlement_case_lists_each_status_under_its_effect_once() {
        let sql = settle_credit("x");
        assert!(
            sql.contains("WHEN x IN ('sent', 'unknown') THEN CASE"),
            "{sql}"
        );
        assert!(sql.contains("WHEN x IN ('refused') THEN 0"), "{sql}");
        for s in Status::ALL {
            let quoted = format!("'{}'", s.as_str());
            let listed = sql.matches(&quoted).count();
            let expected = usize::from(credit_after(s) != CreditEffect::Release);
            assert_eq!(listed, expected, "{s:?} in {sql}");
        }
    }
}
