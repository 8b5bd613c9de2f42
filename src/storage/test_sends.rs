//! `wxpush send JOB --to OPENID`: test messages, recorded apart from runs.

use super::{Context, StorageError, Store, now};
use crate::domain::{AppTemplate, JobName, OpenId, Status, TemplateId};

impl Store {
    /// Records a test message to `openid` as `sending`, before its request.
    pub async fn start_test_send(
        &self,
        job: &JobName,
        openid: &OpenId,
        template_id: &TemplateId,
    ) -> Result<i64, StorageError> {
        let now = now();
        sqlx::query_scalar(
            "INSERT INTO test_sends (job, openid, template_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, 'sending', $4, $4) RETURNING id",
        )
        .bind(job.as_ref())
        .bind(openid.as_ref())
        .bind(template_id.as_ref())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .context("record a test send")
    }

    /// Records how test send `id` ended.
    pub async fn finish_test_send(
        &self,
        id: i64,
        status: Status,
        errcode: Option<i64>,
        errmsg: Option<&str>,
        msgid: Option<u64>,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE test_sends SET status = $1, errcode = $2, errmsg = $3, msgid = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(errcode)
        .bind(errmsg)
        .bind(msgid.map(|m| m.to_string()))
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await
        .context("record a test send")?;
        Ok(())
    }

    /// A one-time credit `openid` spent on a test message of `template`:
    /// WeChat delivers one message per tap, test or not.
    pub async fn spend_credit(
        &self,
        openid: &OpenId,
        template: &AppTemplate,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE consents SET credits = credits - 1 \
             WHERE appid = $1 AND openid = $2 AND template_id = $3 AND credits > reserved",
        )
        .bind(template.appid.as_ref())
        .bind(openid.as_ref())
        .bind(template.template_id.as_ref())
        .execute(&self.pool)
        .await
        .context("spend a consent credit")?;
        Ok(())
    }
}
