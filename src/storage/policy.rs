//! The delivery policy's half in the store: in the claim's own transaction, the
//! people are locked (each backend its way), their history read, every claim
//! decided (`domain::policy`), and what goes recorded, so that two instances
//! racing for one person's last cap slot decide in turn and one message goes.
//! Held run deliveries end `suppressed` or `expired`, or become deferred sends
//! (`deferred` in the run), which the on-demand sender sends when their time
//! comes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::dialect::Dialect;
use super::history::{COUNTS, Kind, Lookup, Ref, forget, read_history, record};
use super::send_claims::{Claim, hold_send_credit};
use super::sets::bind_texts;
use super::tx::WriteTx;
use super::{Context, StorageError, Store, now, ts};
use crate::domain::policy::{Action, Candidate, Policy, Rule, Sent, Verdict};

/// Decides each of `claims` (ids of `kind`) of app `appid` under `policy` at
/// `now`, in `tx`: quiet hours first, then (if the policy needs it) caps and
/// dedupe against the people's history; each that goes is recorded.
pub(super) async fn decide(
    tx: &mut WriteTx,
    dialect: &dyn Dialect,
    appid: &str,
    kind: Kind,
    policy: &Policy,
    claims: &[(i64, Candidate<'_>)],
    now: DateTime<Utc>,
) -> Result<Vec<Verdict>, StorageError> {
    let mut verdicts: Vec<Verdict> = claims.iter().map(|(_, c)| policy.quiet(c, now)).collect();
    if !policy.needs_history() {
        return Ok(verdicts);
    }
    let open: Vec<usize> = (0..claims.len())
        .filter(|i| verdicts[*i] == Verdict::Go)
        .collect();
    if open.is_empty() {
        return Ok(verdicts);
    }
    let mut people: Vec<&str> = open.iter().map(|i| claims[*i].1.openid).collect();
    people.sort_unstable();
    // The most claims one person has in this batch (one per person in a run's page).
    let most = people
        .chunk_by(|a, b| a == b)
        .map(<[_]>::len)
        .max()
        .unwrap_or(1);
    people.dedup();
    if let Some(sql) = dialect.lock_people() {
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(appid.to_owned());
        bind_texts(q, &people)
            .execute(&mut **tx)
            .await
            .context("lock the people claimed")?;
    }
    let since =
        now - chrono::Duration::from_std(policy.lookback()).unwrap_or(chrono::Duration::MAX);
    let ids = open.iter().map(|i| claims[*i].0);
    let range = (ids.clone().min().unwrap_or(0), ids.max().unwrap_or(0));
    let lookup = Lookup {
        dialect,
        appid,
        kind,
        since,
    };
    let rows = lookup
        .records_to_weigh(tx, policy, most, range, &people)
        .await?;
    // A claim's own record (decided before, then resumed) neither counts
    // against it nor is written twice.
    let mine: HashSet<i64> = claims.iter().map(|(id, _)| *id).collect();
    let mut recorded = HashSet::new();
    // Each person's records, by their place in `people` (sorted).
    let place = |who: &str| {
        people
            .binary_search(&who)
            .expect("every person is in people")
    };
    let mut history: Vec<(Vec<Sent>, Vec<Ref>)> = vec![Default::default(); people.len()];
    for (openid, reference, sent) in rows {
        if reference.0 == kind.as_str() && mine.contains(&reference.1) {
            recorded.insert(reference.1);
        } else if let Ok(at) = people.binary_search(&openid.as_str()) {
            let (sents, refs) = &mut history[at];
            sents.push(sent);
            refs.push(reference);
        }
    }
    // First with every record, whatever became of it: what failed or was
    // refused only ever adds, so a claim that goes under all of them goes.
    // Only where one is held are those people's records checked, those that
    // no longer count (failed, refused…) left out, and the batch decided again.
    let twice = most > 1;
    let mut checked = false;
    let going = loop {
        let mut going: Vec<(i64, &Candidate<'_>)> = Vec::new();
        let mut held: Vec<&str> = Vec::new();
        for i in &open {
            let (id, c) = &claims[*i];
            let (sent, _) = &mut history[place(c.openid)];
            verdicts[*i] = policy.against(c, sent, now);
            if verdicts[*i] != Verdict::Go {
                held.push(c.openid);
                continue;
            }
            // A second claim for the same person in this batch sees this one
            // (taken off again below, should the batch be decided again).
            if twice {
                sent.push(Sent {
                    template_id: c.template_id.to_owned(),
                    job: c.job.map(str::to_owned),
                    digest: c.digest.to_owned(),
                    counted: policy.count,
                    at: now,
                });
            }
            if !recorded.contains(id) {
                going.push((*id, c));
            }
        }
        if checked || held.is_empty() {
            break going;
        }
        checked = true;
        for (sent, refs) in &mut history {
            sent.truncate(refs.len());
        }
        held.sort_unstable();
        held.dedup();
        let valid: HashSet<Ref> = read_history(
            tx,
            dialect,
            appid,
            &held,
            since,
            Some(COUNTS),
            (false, false, false),
        )
        .await?
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
        for who in &held {
            let (sent, refs) = &mut history[place(who)];
            let keep: Vec<bool> = refs.iter().map(|r| valid.contains(r)).collect();
            let mut k = keep.iter();
            sent.retain(|_| *k.next().expect("one flag per record"));
            refs.retain(|r| valid.contains(r));
        }
    };
    let mut going = going;
    record(tx, dialect, appid, kind, policy.count, &mut going, now).await?;
    Ok(verdicts)
}

/// One of a run's deliveries, rendered, for the policy.
#[derive(Debug, Clone)]
pub struct PolicyDelivery {
    /// The delivery.
    pub id: i64,
    /// Who.
    pub openid: String,
    /// The recipient's zone.
    pub tz: chrono_tz::Tz,
    /// The digest of its template and rendered data (empty where no policy dedupes).
    pub digest: String,
}

/// The run a chunk of deliveries belongs to, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRun<'a> {
    /// The run.
    pub run_id: i64,
    /// Its app.
    pub appid: &'a str,
    /// Its job.
    pub job: &'a str,
    /// Its template.
    pub template_id: &'a str,
    /// Whether the template is one-time (a deferred send holds a credit when it goes).
    pub one_time: bool,
    /// When its send window closes: nothing is deferred past it.
    pub deadline: DateTime<Utc>,
}

/// A delivery a policy held, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDelivery {
    /// The delivery.
    pub id: i64,
    /// The rule.
    pub rule: Rule,
    /// What became of it: `Drop` (suppressed), `Defer` (a deferred send), or
    /// `None` when the time it could go was past the run's window (expired).
    pub action: Option<Action>,
}

/// A delivery to defer: the send that carries it goes at `until`.
struct Deferred<'a> {
    d: &'a PolicyDelivery,
    rule: Rule,
    until: DateTime<Utc>,
    message: String,
}

/// Why a held delivery or send ended, in its `errmsg`.
pub(crate) fn held_reason(rule: Rule, expired: bool) -> String {
    if expired {
        format!("held by {} past its deadline", rule.as_str())
    } else {
        format!("held by {}", rule.as_str())
    }
}

impl Store {
    /// Decides a chunk of a run's deliveries under `policy` in one transaction:
    /// those held end `suppressed`, `expired` (their time past the window) or
    /// `deferred` (each with a send that goes at its time); those that go are
    /// recorded for later caps. Returns the held ones (only those still
    /// pending and not another instance's).
    pub async fn hold_deliveries(
        &self,
        run: PolicyRun<'_>,
        policy: &Policy,
        chunk: &[PolicyDelivery],
        message: &(dyn Fn(i64) -> String + Sync),
    ) -> Result<Vec<HeldDelivery>, StorageError> {
        let now_t = Utc::now();
        let claims: Vec<(i64, Candidate<'_>)> = chunk
            .iter()
            .map(|d| {
                (
                    d.id,
                    Candidate {
                        openid: &d.openid,
                        template_id: run.template_id,
                        job: Some(run.job),
                        digest: &d.digest,
                        tz: d.tz,
                    },
                )
            })
            .collect();
        if !policy.needs_history()
            && claims
                .iter()
                .all(|(_, c)| policy.quiet(c, now_t) == Verdict::Go)
        {
            // Quiet hours alone, holding nobody: no transaction at all.
            return Ok(Vec::new());
        }
        let mut tx = WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("apply the delivery policy")?;
        let verdicts = decide(
            &mut tx,
            self.dialect,
            run.appid,
            Kind::Delivery,
            policy,
            &claims,
            now_t,
        )
        .await?;
        let mut held = Vec::new();
        let me = self.instance.as_deref();
        let at = now();
        for (d, v) in chunk.iter().zip(verdicts) {
            let Verdict::Held {
                rule,
                action,
                until,
            } = v
            else {
                continue;
            };
            let late = until.is_some_and(|u| u >= run.deadline);
            let (status, action) = match (action, late) {
                (Action::Drop, _) => ("suppressed", Some(Action::Drop)),
                (Action::Defer, true) => ("expired", None),
                (Action::Defer, false) => ("deferred", Some(Action::Defer)),
            };
            let taken = sqlx::query(
                "UPDATE deliveries SET status = $1, errmsg = $2, updated_at = $3 \
                 WHERE id = $4 AND status = 'pending' AND (owner IS NULL OR owner = $5)",
            )
            .bind(status)
            .bind(held_reason(rule, late))
            .bind(&at)
            .bind(d.id)
            .bind(me)
            .execute(&mut *tx)
            .await
            .context("hold a delivery")?
            .rows_affected();
            if taken == 0 {
                continue;
            }
            if let (Some(Action::Defer), Some(until)) = (action, until) {
                let deferred = Deferred {
                    d,
                    rule,
                    until,
                    message: message(d.id),
                };
                self.defer_delivery(&mut tx, &run, &deferred, &at).await?;
            }
            held.push(HeldDelivery {
                id: d.id,
                rule,
                action,
            });
        }
        tx.commit().await.context("apply the delivery policy")?;
        Ok(held)
    }

    /// The send that carries deferred delivery `d` at `until`, within the run's window.
    async fn defer_delivery(
        &self,
        tx: &mut WriteTx,
        run: &PolicyRun<'_>,
        deferred: &Deferred<'_>,
        at: &str,
    ) -> Result<(), StorageError> {
        let Deferred {
            d,
            rule,
            until,
            message,
        } = deferred;
        // The key is the delivery's: one send per delivery, however often this runs.
        sqlx::query(
            "INSERT INTO sends (appid, idem_key, request, openid, template_id, job, one_time, message, \
             send_at, expires_at, status, created_at, updated_at, tz, held, digest, delivery_id) \
             VALUES ($1, $2, '{}', $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10, $11, $12, $13, $14) \
             ON CONFLICT (appid, idem_key) DO NOTHING",
        )
        .bind(run.appid.to_owned())
        .bind(format!("run-{}-delivery-{}", run.run_id, d.id))
        .bind(&d.openid)
        .bind(run.template_id.to_owned())
        .bind(run.job.to_owned())
        .bind(i64::from(run.one_time))
        .bind(message)
        .bind(ts(*until))
        .bind(ts(run.deadline))
        .bind(at)
        .bind(d.tz.name())
        .bind(rule.as_str())
        .bind(&d.digest)
        .bind(d.id)
        .execute(&mut **tx)
        .await
        .context("defer a delivery")?;
        Ok(())
    }

    /// `claim_send` under a policy: the claim, the policy's decision and the
    /// credit in one transaction. A held send is given back deferred (pending
    /// at its new `send_at`), or ends `suppressed`, or `expired` when its time
    /// would be past its `expires_at`; its attempt is not counted.
    pub(super) async fn claim_send_under(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
        policy: &Policy,
        default_tz: chrono_tz::Tz,
    ) -> Result<Claim, StorageError> {
        let _turn = self.sends_turn().await;
        let Some((mut tx, send)) = self.claim_in_transaction(id, owner, at).await? else {
            return Ok(Claim::Lost);
        };
        let tz = send
            .tz
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(default_tz);
        let digest = send
            .digest
            .clone()
            .unwrap_or_else(|| crate::domain::policy::digest(&send.template_id, &send.message));
        let candidate = Candidate {
            openid: &send.openid,
            template_id: &send.template_id,
            job: send.job.as_deref(),
            digest: &digest,
            tz,
        };
        let verdict = decide(
            &mut tx,
            self.dialect,
            &send.appid,
            Kind::Send,
            policy,
            &[(id, candidate)],
            at,
        )
        .await?
        .remove(0);
        let Verdict::Held {
            rule,
            action,
            until,
        } = verdict
        else {
            if !hold_send_credit(&mut tx, &send).await? {
                tx.commit().await.context("claim a send")?;
                return Ok(Claim::Skipped);
            }
            tx.commit().await.context("claim a send")?;
            return Ok(Claim::Claimed(Box::new(send)));
        };
        forget(&mut tx, &send.appid, &send.openid, id).await?;
        let expires = send.expires_at.parse::<DateTime<Utc>>().unwrap_or(at);
        let (status, send_at, ended) = match (action, until) {
            (Action::Defer, Some(u)) if u < expires => ("pending", ts(u), Some(Action::Defer)),
            (Action::Defer, _) => ("expired", send.send_at.clone(), None),
            (Action::Drop, _) => ("suppressed", send.send_at.clone(), Some(Action::Drop)),
        };
        let errmsg = (status != "pending").then(|| held_reason(rule, ended.is_none()));
        sqlx::query(
            "UPDATE sends SET status = $2, owner = NULL, attempts = attempts - 1, send_at = $3, \
             held = $4, errmsg = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(send_at)
        .bind(rule.as_str())
        .bind(errmsg)
        .bind(now())
        .execute(&mut *tx)
        .await
        .context("hold a send")?;
        tx.commit().await.context("claim a send")?;
        Ok(Claim::Held(rule, ended))
    }

    /// How many sends wait deferred by a policy (a partial index's count).
    pub async fn deferred_count(&self) -> Result<i64, StorageError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM sends WHERE status = 'pending' AND held IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .context("count deferred sends")
    }
}
