//! Recipients of each job, from the config file, the command line or a CSV import.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sqlx::Row;

use super::deliveries::vars_of;
use super::{Context, StorageError, Store, now};
use crate::domain::{JobName, OpenId};

/// A recipient to write: one job, one openid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecipient {
    /// The job.
    pub job: JobName,
    /// The openid.
    pub openid: OpenId,
    /// A display name.
    pub name: Option<String>,
    /// Variables and keyword overrides.
    pub vars: BTreeMap<String, String>,
}

/// A recipient as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientRow {
    /// The job.
    pub job: String,
    /// The openid.
    pub openid: String,
    /// A display name.
    pub name: Option<String>,
    /// Variables, `name` included.
    pub vars: BTreeMap<String, String>,
    /// `config`, `cli` or `import`.
    pub source: String,
    /// False once removed from the config file.
    pub active: bool,
}

/// What a config sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// New recipients.
    pub added: u64,
    /// Recipients whose name, variables or activity changed.
    pub updated: u64,
    /// Config recipients no longer in the file.
    pub deactivated: u64,
}

/// A stored recipient's name, vars JSON, source and activity.
type Existing = (Option<String>, String, String, bool);

const UPSERT: &str = "INSERT INTO recipients (job, openid, name, vars, source, active, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (job, openid) DO UPDATE SET \
     name = excluded.name, vars = excluded.vars, source = excluded.source, active = 1, updated_at = excluded.updated_at";

impl Store {
    /// Makes the database's config-file recipients match `wanted`: adds, updates,
    /// and deactivates the ones no longer listed. Recipients added by other means
    /// are left alone unless the file now lists them too.
    pub async fn sync_config_recipients(
        &self,
        wanted: &[StoredRecipient],
    ) -> Result<SyncReport, StorageError> {
        let mut tx = self.write().await?;
        // Only the file's own rows: imported audiences can be millions of rows.
        let existing = sqlx::query(
            "SELECT job, openid, name, vars, source, active FROM recipients WHERE source = 'config'",
        )
        .fetch_all(&mut *tx)
        .await
        .context("read config recipients")?;
        let mut current: BTreeMap<(String, String), Existing> = BTreeMap::new();
        for r in existing {
            current.insert(
                (r.get("job"), r.get("openid")),
                (
                    r.get("name"),
                    r.get("vars"),
                    r.get("source"),
                    r.get::<i64, _>("active") == 1,
                ),
            );
        }
        let now = now();
        let mut report = SyncReport::default();
        let mut keep = BTreeSet::new();
        for w in wanted {
            let vars = serde_json::to_string(&w.vars).expect("a string map serialises");
            let key = (w.job.to_string(), w.openid.to_string());
            let unchanged = current.get(&key).is_some_and(|(name, v, source, active)| {
                *name == w.name && *v == vars && source == "config" && *active
            });
            keep.insert(key.clone());
            if unchanged {
                continue;
            }
            // created_at is kept on conflict, so it tells an insert from an update.
            let created: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "{UPSERT} RETURNING created_at"
            )))
            .bind(w.job.as_ref())
            .bind(w.openid.as_ref())
            .bind(&w.name)
            .bind(&vars)
            .bind("config")
            .bind(&now)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await
            .context("save a config recipient")?;
            if created == now {
                report.added += 1;
            } else {
                report.updated += 1;
            }
        }
        for ((job, openid), (_, _, source, active)) in &current {
            if source == "config" && *active && !keep.contains(&(job.clone(), openid.clone())) {
                sqlx::query(
                    "UPDATE recipients SET active = 0, updated_at = $1 WHERE job = $2 AND openid = $3",
                )
                .bind(&now)
                .bind(job)
                .bind(openid)
                .execute(&mut *tx)
                .await
                .context("deactivate a config recipient")?;
                report.deactivated += 1;
            }
        }
        tx.commit().await.context("commit the recipient sync")?;
        Ok(report)
    }

    /// Adds or updates recipients from `source` (`cli` or `import`), all or nothing.
    pub async fn upsert_recipients(
        &self,
        rows: &[StoredRecipient],
        source: &str,
    ) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        for w in rows {
            sqlx::query(UPSERT)
                .bind(w.job.as_ref())
                .bind(w.openid.as_ref())
                .bind(&w.name)
                .bind(serde_json::to_string(&w.vars).expect("a string map serialises"))
                .bind(source)
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .context("save a recipient")?;
        }
        tx.commit().await.context("commit recipients")?;
        Ok(rows.len() as u64)
    }

    /// Deletes a recipient from one job, or from every job; returns rows removed.
    pub async fn remove_recipient(
        &self,
        openid: &OpenId,
        job: Option<&JobName>,
    ) -> Result<u64, StorageError> {
        let job: Option<&str> = job.map(AsRef::as_ref);
        let r =
            sqlx::query("DELETE FROM recipients WHERE openid = $1 AND ($2 IS NULL OR job = $3)")
                .bind(openid.as_ref())
                .bind(job)
                .bind(job)
                .execute(&self.pool)
                .await
                .context("remove a recipient")?;
        Ok(r.rows_affected())
    }

    /// Recipients, optionally of one job, ordered by job and openid.
    pub async fn recipients(
        &self,
        job: Option<&JobName>,
    ) -> Result<Vec<RecipientRow>, StorageError> {
        let job: Option<&str> = job.map(AsRef::as_ref);
        let rows = sqlx::query(
            "SELECT job, openid, name, vars, source, active FROM recipients \
             WHERE ($1 IS NULL OR job = $2) ORDER BY job, openid",
        )
        .bind(job)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .context("list recipients")?;
        Ok(rows.iter().map(recipient_row).collect())
    }

    /// Where `openid` is listed: one row per job, ordered by job.
    pub async fn listed_in(&self, openid: &str) -> Result<Vec<RecipientRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, openid, name, vars, source, active FROM recipients \
             WHERE openid = $1 ORDER BY job",
        )
        .bind(openid.to_owned())
        .fetch_all(&self.pool)
        .await
        .context("find a recipient's jobs")?;
        Ok(rows.iter().map(recipient_row).collect())
    }
}

fn recipient_row(r: &super::db::Row) -> RecipientRow {
    let name: Option<String> = r.get("name");
    RecipientRow {
        job: r.get("job"),
        openid: r.get("openid"),
        vars: vars_of(name.clone(), r.get("vars")),
        name,
        source: r.get("source"),
        active: r.get::<i64, _>("active") == 1,
    }
}
