//! The account's templates as gettemplate lists them, cached: a template's kind
//! never changes once it exists.

use sqlx::Row;

use super::consents::TemplateRow;
use super::{Context, StorageError, Store, now};
use crate::domain::{AppId, TemplateId, TemplateKind};

impl Store {
    /// Replaces the cached template list with a freshly fetched one. Several
    /// processes may refresh it at the same moment (two `send`s, instances on
    /// PostgreSQL): each row is upserted, and only rows this refresh did not
    /// write are deleted, so two refreshes never collide on a key. (A delete of
    /// everything followed by inserts failed the second one with a duplicate
    /// key on PostgreSQL, and its job then ran without knowing the template was
    /// one-time.)
    pub async fn save_templates(
        &self,
        appid: &AppId,
        templates: &[TemplateRow],
    ) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        for t in templates {
            sqlx::query(
                "INSERT INTO templates (appid, template_id, kind, title, keywords, fetched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (appid, template_id) DO UPDATE SET kind = excluded.kind, title = excluded.title, \
                 keywords = excluded.keywords, fetched_at = excluded.fetched_at",
            )
            .bind(appid.as_ref())
            .bind(&t.template_id)
            .bind(t.kind.as_str())
            .bind(&t.title)
            .bind(serde_json::to_string(&t.keywords).expect("strings serialise"))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .context("save the template list")?;
        }
        // Templates the account no longer lists: older than this refresh. Only
        // this app's: each mini program is its own account with its own list.
        sqlx::query("DELETE FROM templates WHERE appid = $1 AND fetched_at < $2")
            .bind(appid.as_ref())
            .bind(&now)
            .execute(&mut *tx)
            .await
            .context("replace the template list")?;
        tx.commit().await.context("commit the template list")?;
        Ok(())
    }

    /// The cached template `id` of the mini program `appid`, and when the list it
    /// came from was fetched.
    pub async fn template(
        &self,
        appid: &AppId,
        id: &TemplateId,
    ) -> Result<Option<(TemplateRow, String)>, StorageError> {
        let row = sqlx::query(
            "SELECT template_id, kind, title, keywords, fetched_at FROM templates \
             WHERE appid = $1 AND template_id = $2",
        )
        .bind(appid.as_ref())
        .bind(id.as_ref())
        .fetch_optional(&self.pool)
        .await
        .context("read the template list")?;
        Ok(row.and_then(|r| {
            let kind = TemplateKind::parse(r.get("kind"))?;
            let keywords: String = r.get("keywords");
            Some((
                TemplateRow {
                    template_id: r.get("template_id"),
                    kind,
                    title: r.get("title"),
                    keywords: serde_json::from_str(&keywords).unwrap_or_default(),
                },
                r.get("fetched_at"),
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_stores::postgres_url;
    use super::*;
    use crate::domain::test_ids::{app, tmpl};

    fn listed(title: &str) -> Vec<TemplateRow> {
        ["t1", "t2", "t3"]
            .map(|id| TemplateRow {
                template_id: id.into(),
                kind: TemplateKind::OneTime,
                title: title.into(),
                keywords: vec!["thing1".into()],
            })
            .into()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_refreshing_the_template_list_at_once_both_succeed() {
        // Two `send`s (or instances) refreshing at the same moment: before, the
        // second failed with a duplicate key and its job lost the template's kind.
        let Some(url) =
            postgres_url("two_processes_refreshing_the_template_list_at_once_both_succeed")
        else {
            return;
        };
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let (list_a, list_b) = (listed("a"), listed("b"));
        let wx1 = app("1");
        for round in 0..20 {
            let (ra, rb) = tokio::join!(
                a.save_templates(&wx1, &list_a),
                b.save_templates(&wx1, &list_b)
            );
            ra.unwrap_or_else(|e| panic!("round {round}: {e}"));
            rb.unwrap_or_else(|e| panic!("round {round}: {e}"));
            for id in ["t1", "t2", "t3"] {
                let (t, _) = a.template(&wx1, &tmpl(id)).await.unwrap().expect("listed");
                assert_eq!(t.kind, TemplateKind::OneTime);
            }
        }
        // A template the account no longer lists is dropped.
        a.save_templates(&wx1, &listed("c")[..2]).await.unwrap();
        assert!(a.template(&wx1, &tmpl("t3")).await.unwrap().is_none());
    }
}
