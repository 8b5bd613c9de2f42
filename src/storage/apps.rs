//! Rows from before several mini programs could share a database carry no
//! AppID (`''`); they are the default app's, named once a config says which.

use super::{Context, StorageError, Store};
use crate::domain::AppId;

/// The tables whose rows are kept per mini program.
const KEYED: [&str; 5] = [
    "runs",
    "subscribers",
    "consents",
    "templates",
    "sent_events",
];

impl Store {
    /// Gives rows written before apps were kept apart to `default_appid`, the
    /// `[wechat]` app (the only one there was). Idempotent, and a no-op once done.
    pub async fn adopt_unkeyed(&self, default_appid: &AppId) -> Result<u64, StorageError> {
        // Read first: once done, reading commands (`runs`, `recipients show`)
        // must not need write access to the database.
        let any = KEYED
            .map(|t| format!("EXISTS (SELECT 1 FROM {t} WHERE appid = '')"))
            .join(" OR ");
        let found: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CASE WHEN {any} THEN 1 ELSE 0 END"
        )))
        .fetch_one(&self.pool)
        .await
        .map(|n: i64| n == 1)
        .context("look for rows without an app")?;
        if !found {
            return Ok(0);
        }
        let mut tx = self.write().await?;
        let mut adopted = 0;
        for table in KEYED {
            let sql = format!("UPDATE {table} SET appid = $1 WHERE appid = ''");
            adopted += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(default_appid.as_ref())
                .execute(&mut *tx)
                .await
                .context("give rows without an app to the default app")?
                .rows_affected();
        }
        tx.commit()
            .await
            .context("commit giving rows to the default app")?;
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_stores::{each_backend, postgres_url};
    use super::Store;
    use crate::domain::test_ids::{app, oid, tmpl};
    use crate::domain::{ConsentResult, TemplateKind};
    use crate::storage::TemplateRow;

    fn listed(id: &str) -> Vec<TemplateRow> {
        vec![TemplateRow {
            template_id: id.into(),
            kind: TemplateKind::OneTime,
            title: "t".into(),
            keywords: vec!["thing1".into()],
        }]
    }

    #[tokio::test]
    async fn each_apps_template_list_replaces_only_its_own() {
        // Before, the second app's refresh deleted the first's list: its job
        // then lost the template's kind (and with it the credit gate).
        for store in each_backend("each_apps_template_list_replaces_only_its_own").await {
            let (a, b) = (app("A"), app("B"));
            store.save_templates(&a, &listed("ta")).await.unwrap();
            store.save_templates(&b, &listed("tb")).await.unwrap();
            assert!(store.template(&a, &tmpl("ta")).await.unwrap().is_some());
            assert!(store.template(&b, &tmpl("tb")).await.unwrap().is_some());
            assert!(store.template(&b, &tmpl("ta")).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn rows_from_before_apps_become_the_default_apps_once() {
        for store in each_backend("rows_from_before_apps_become_the_default_apps_once").await {
            let who = oid("oUser00000000000000000000000");
            let (old, d) = (app("0"), app("D"));
            // As the migration leaves a database written by an older wxpush:
            // written as any app's, then its AppID taken away.
            store
                .record_subscription(
                    &old,
                    &who,
                    Some("Old"),
                    None,
                    &[(tmpl("t"), ConsentResult::Accept)],
                )
                .await
                .unwrap();
            store.save_templates(&old, &listed("t")).await.unwrap();
            for table in ["subscribers", "consents", "templates"] {
                let sql = format!("UPDATE {table} SET appid = '' WHERE appid = $1");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(old.as_ref())
                    .execute(&store.pool)
                    .await
                    .unwrap();
            }
            assert!(store.consents_of(&d, &who).await.unwrap().is_empty());
            assert_eq!(store.adopt_unkeyed(&d).await.unwrap(), 3);
            assert_eq!(store.adopt_unkeyed(&d).await.unwrap(), 0, "once");
            let consents = store.consents_of(&d, &who).await.unwrap();
            assert_eq!(consents.len(), 1);
            assert_eq!(consents[0].kind, Some(TemplateKind::OneTime));
            let person = store.subscriber(&d, &who).await.unwrap().unwrap();
            assert_eq!(person.name.as_deref(), Some("Old"));
            assert!(store.subscriber(&app("E"), &who).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn people_written_before_apps_keep_their_consent_through_the_upgrade() {
        let test = "people_written_before_apps_keep_their_consent_through_the_upgrade";
        let dir = tempfile::tempdir().unwrap();
        let file = format!("sqlite://{}", dir.path().join("old.db").display());
        let mut old = vec![(file.clone(), &super::super::sqlite::MIGRATOR, "?mode=rwc")];
        if let Some(url) = postgres_url(test) {
            old.push((url, &super::super::postgres::MIGRATOR, ""));
        }
        let who = "oUser00000000000000000000000";
        for (url, migrator, create) in old {
            // A database as the release before apps left it.
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&format!("{url}{create}"))
                .await
                .unwrap();
            migrator.run_to(20261125000005, &pool).await.unwrap();
            for sql in [
                "INSERT INTO subscribers (openid, name, vars, created_at, updated_at) \
                 VALUES ($1, 'Old', '{}', 'x', 'x')",
                "INSERT INTO consents (openid, template_id, status, credits, source, updated_at) \
                 VALUES ($1, 't', 'accept', 2, 'intake', 'x')",
            ] {
                sqlx::query(sql).bind(who).execute(&pool).await.unwrap();
            }
            pool.close().await;

            let store = Store::open(&url).await.unwrap();
            let d = app("D");
            store.adopt_unkeyed(&d).await.unwrap();
            let consents = store.consents_of(&d, &oid(who)).await.unwrap();
            assert_eq!(
                (consents[0].status.as_str(), consents[0].credits),
                ("accept", 2),
                "{url}"
            );
            let person = store.subscriber(&d, &oid(who)).await.unwrap().unwrap();
            assert_eq!(person.name.as_deref(), Some("Old"));
        }
    }
}
