//! Consent: the account's templates, the people who subscribed, and what each of
//! them said to each template (one-time credits or a long-term status).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Context, StorageError, Store, now};
use crate::domain::{
    AppId, AppTemplate, ConsentResult, ConsentSource, JobName, OpenId, PAIRING, Tally, TemplateId,
    TemplateKind, tally_after,
};

/// One of the account's templates, as gettemplate lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRow {
    /// `priTmplId`.
    pub template_id: String,
    /// One-time or long-term.
    pub kind: TemplateKind,
    /// Its title.
    pub title: String,
    /// Its `data` keys (`thing1`, `date2` ...), in the order of its content.
    pub keywords: Vec<String>,
}

/// One person's consent to one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRow {
    /// The template.
    pub template_id: String,
    /// Its kind, when the template list has been fetched.
    pub kind: Option<TemplateKind>,
    /// The last result: accept, reject or ban.
    pub status: String,
    /// One-time messages still allowed (credits not held by a send in flight).
    pub credits: i64,
    /// Credits held by sends in flight.
    pub reserved: i64,
    /// `intake` (the mini program's report) or `event` (WeChat's push).
    pub source: String,
    /// Last change.
    pub updated_at: String,
}

/// Which jobs' entries an erasure covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSet {
    /// These jobs.
    Only(Vec<JobName>),
    /// Every job but these (the default app: jobs no longer in the file were
    /// its own, since apps came later).
    AllBut(Vec<JobName>),
}

/// A person who came through the intake API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberRow {
    /// Their openid.
    pub openid: String,
    /// A display name.
    pub name: Option<String>,
    /// Variables for their messages.
    pub vars: BTreeMap<String, String>,
}

/// Who a `subscribed` run sends to, on `consents c`: a credit, or for a template
/// not known to be one-time, an acceptance. Binds `$n`: the template id, then
/// `$n+1`: 1 if one-time.
pub(super) fn subscribed(n: usize) -> String {
    format!(
        "c.template_id = ${n} AND (c.credits > 0 OR (${} = 0 AND c.status = 'accept'))",
        n + 1
    )
}

pub(super) async fn apply(
    tx: &mut super::db::Conn,
    appid: &AppId,
    openid: &OpenId,
    template_id: &TemplateId,
    result: ConsentResult,
    from: ConsentSource,
) -> Result<(), StorageError> {
    // `filter` says nothing about the template.
    if result == ConsentResult::Filter {
        return Ok(());
    }
    let now = chrono::Utc::now();
    // The new tally is worked out from the row as read, so the row is locked
    // first (created if missing): where instances share a database, a send
    // spending a credit or the other path's copy of this tap must wait for this
    // transaction instead of being overwritten by it. (On SQLite the write
    // transaction already excludes them.)
    sqlx::query(
        "INSERT INTO consents (appid, openid, template_id, status, source, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (appid, openid, template_id) DO UPDATE SET updated_at = consents.updated_at",
    )
    .bind(appid.as_ref())
    .bind(openid.as_ref())
    .bind(template_id.as_ref())
    .bind(result.as_str())
    .bind(from.as_str())
    .bind(super::ts(now))
    .execute(&mut *tx)
    .await
    .context("lock consent")?;
    let row = sqlx::query(
        "SELECT credits, unpaired_intake, unpaired_event, pair_until FROM consents \
         WHERE appid = $1 AND openid = $2 AND template_id = $3",
    )
    .bind(appid.as_ref())
    .bind(openid.as_ref())
    .bind(template_id.as_ref())
    .fetch_optional(&mut *tx)
    .await
    .context("read consent")?;
    let (before, lapsed) = match &row {
        Some(r) => {
            let until: Option<String> = r.get("pair_until");
            (
                Tally {
                    credits: r.get("credits"),
                    unpaired_intake: r.get("unpaired_intake"),
                    unpaired_event: r.get("unpaired_event"),
                },
                until.is_none_or(|u| u < super::ts(now)),
            )
        }
        None => (Tally::default(), true),
    };
    let after = tally_after(before, lapsed, result, from);
    sqlx::query(
        "INSERT INTO consents (appid, openid, template_id, status, credits, unpaired_intake, unpaired_event, \
         pair_until, source, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (appid, openid, template_id) DO UPDATE SET status = excluded.status, \
         credits = excluded.credits, unpaired_intake = excluded.unpaired_intake, \
         unpaired_event = excluded.unpaired_event, pair_until = excluded.pair_until, \
         source = excluded.source, updated_at = excluded.updated_at",
    )
    .bind(appid.as_ref())
    .bind(openid.as_ref())
    .bind(template_id.as_ref())
    .bind(result.as_str())
    .bind(after.credits)
    .bind(after.unpaired_intake)
    .bind(after.unpaired_event)
    .bind((result == ConsentResult::Accept).then(|| super::ts(now + PAIRING)))
    .bind(from.as_str())
    .bind(super::ts(now))
    .execute(&mut *tx)
    .await
    .context("record consent")?;
    Ok(())
}

impl Store {
    /// Records a report from the mini program in one transaction: the person (name
    /// and data replaced only when given) and each template's result.
    pub async fn record_subscription(
        &self,
        appid: &AppId,
        openid: &OpenId,
        name: Option<&str>,
        vars: Option<&BTreeMap<String, String>>,
        results: &[(TemplateId, ConsentResult)],
    ) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        let vars = vars.map(|v| serde_json::to_string(v).expect("strings serialise"));
        sqlx::query(
            "INSERT INTO subscribers (appid, openid, name, vars, created_at, updated_at) \
             VALUES ($1, $2, $3, COALESCE($4, '{}'), $5, $6) \
             ON CONFLICT (appid, openid) DO UPDATE SET name = COALESCE(excluded.name, subscribers.name), \
             vars = CASE WHEN $7 IS NULL THEN subscribers.vars ELSE excluded.vars END, updated_at = excluded.updated_at",
        )
        .bind(appid.as_ref())
        .bind(openid.as_ref())
        .bind(name)
        .bind(vars.as_deref())
        .bind(&now)
        .bind(&now)
        .bind(vars.as_deref())
        .execute(&mut *tx)
        .await
        .context("record a subscriber")?;
        for (template_id, result) in results {
            apply(
                &mut tx,
                appid,
                openid,
                template_id,
                *result,
                ConsentSource::Intake,
            )
            .await?;
        }
        tx.commit().await.context("commit a subscription")?;
        Ok(())
    }

    /// Every template consent of one person of the mini program `appid`, by template.
    pub async fn consents_of(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<ConsentRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT c.template_id, t.kind, c.status, c.credits, c.reserved, c.source, c.updated_at \
             FROM consents c LEFT JOIN templates t ON t.appid = c.appid AND t.template_id = c.template_id \
             WHERE c.appid = $1 AND c.openid = $2 ORDER BY c.template_id",
        )
        .bind(appid.as_ref())
        .bind(openid.as_ref())
        .fetch_all(&self.pool)
        .await
        .context("read consents")?;
        Ok(rows
            .into_iter()
            .map(|r| ConsentRow {
                template_id: r.get("template_id"),
                kind: r
                    .get::<Option<String>, _>("kind")
                    .as_deref()
                    .and_then(TemplateKind::parse),
                status: r.get("status"),
                credits: r.get("credits"),
                reserved: r.get("reserved"),
                source: r.get("source"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    /// The intake record of one person of the mini program `appid`, if they came
    /// through the intake API.
    pub async fn subscriber(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Option<SubscriberRow>, StorageError> {
        let row = sqlx::query(
            "SELECT openid, name, vars FROM subscribers WHERE appid = $1 AND openid = $2",
        )
        .bind(appid.as_ref())
        .bind(openid.as_ref())
        .fetch_optional(&self.pool)
        .await
        .context("read a subscriber")?;
        Ok(row.map(|r| {
            let vars: String = r.get("vars");
            SubscriberRow {
                openid: r.get("openid"),
                name: r.get("name"),
                vars: serde_json::from_str(&vars).unwrap_or_default(),
            }
        }))
    }

    /// Erases one person of the mini program `appid` in one transaction: their
    /// entries in `jobs` (that app's jobs), intake data and consent, and their openid
    /// in that app's delivery, send and push history (the rows stay, for the counts,
    /// under a placeholder; a send not taken yet is cancelled). The same openid string in another app is another
    /// person and is kept. Returns the rows touched.
    pub async fn forget(
        &self,
        appid: &AppId,
        openid: &OpenId,
        jobs: &JobSet,
    ) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let mut touched = 0;
        let (op, jobs) = match jobs {
            JobSet::Only(jobs) => ("IN", jobs),
            JobSet::AllBut(jobs) => ("NOT IN", jobs),
        };
        let in_jobs = format!("job {op} ({})", super::sets::text_set(2));
        let by_job = [
            format!("DELETE FROM recipients WHERE openid = $1 AND {in_jobs}"),
            format!("DELETE FROM test_sends WHERE openid = $1 AND {in_jobs}"),
        ];
        for sql in &by_job {
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(openid.as_ref());
            touched += super::sets::bind_texts(q, jobs)
                .execute(&mut *tx)
                .await
                .context("forget a person")?
                .rows_affected();
        }
        for sql in [
            "DELETE FROM subscribers WHERE openid = $1 AND appid = $2",
            "DELETE FROM consents WHERE openid = $1 AND appid = $2",
            // Unique per run, so the placeholder carries the row's own id.
            "UPDATE deliveries SET openid = 'forgotten-' || id WHERE openid = $1 \
             AND run_id IN (SELECT id FROM runs WHERE appid = $2)",
            "UPDATE sent_events SET openid = 'forgotten' WHERE openid = $1 AND appid = $2",
            // What the delivery policy recorded of them (caps, dedupe).
            "DELETE FROM policy_history WHERE openid = $1 AND appid = $2",
            // Sends on demand: what has not gone yet never goes; the request,
            // body and metadata (which name the person) are dropped.
            "UPDATE sends SET openid = 'forgotten-' || id, request = '{}', message = '{}', \
             metadata = NULL, status = CASE WHEN status = 'pending' THEN 'cancelled' \
             ELSE status END WHERE openid = $1 AND appid = $2",
        ] {
            touched += sqlx::query(sql)
                .bind(openid.as_ref())
                .bind(appid.as_ref())
                .execute(&mut *tx)
                .await
                .context("forget a person")?
                .rows_affected();
        }
        tx.commit().await.context("commit forgetting a person")?;
        Ok(touched)
    }

    /// Everyone a `subscribed` run of `template_id` would send to, with their
    /// intake variables (`name` included), by openid.
    pub async fn subscribed(
        &self,
        template: &AppTemplate,
        one_time: bool,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, StorageError> {
        let sql = format!(
            "SELECT c.openid, s.name, s.vars FROM consents c \
             LEFT JOIN subscribers s ON s.appid = c.appid AND s.openid = c.openid \
             WHERE c.appid = $1 AND {} ORDER BY c.openid",
            subscribed(2)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(template.appid.as_ref())
            .bind(template.template_id.as_ref())
            .bind(i64::from(one_time))
            .fetch_all(&self.pool)
            .await
            .context("read a subscribed audience")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get("openid"),
                    super::deliveries::vars_of(r.get("name"), r.get("vars")),
                )
            })
            .collect())
    }
}
