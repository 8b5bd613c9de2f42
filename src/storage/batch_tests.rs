//! The send path's writes under the races they guard against.

use std::collections::HashSet;

use super::Store;
use super::test_stores::each_backend;
use crate::domain::Trigger;
use crate::domain::test_ids::{self, app, job, tmpl};
use crate::domain::{AppTemplate, ConsentGate, Outcome, Status};
use crate::storage::{Audience, NewRun};

/// Enqueues a run of `job` for `openids` (each listed on it); returns every
/// delivery id in the database, oldest first.
async fn enqueue(store: &Store, job: &str, openids: &[&str]) -> Vec<i64> {
    for who in openids {
        sqlx::query(
            "INSERT INTO recipients (job, openid, source, created_at, updated_at) VALUES ($1, $2, 'cli', '', '')",
        )
        .bind(job)
        .bind(who)
        .execute(&store.pool)
        .await
        .unwrap();
    }
    store
        .enqueue(NewRun {
            job: &test_ids::job(job),
            appid: &app("1"),
            template_id: &tmpl("t"),
            audience: Audience::Listed,
            slot: chrono::Utc::now(),
            trigger: Trigger::Manual,
        })
        .await
        .unwrap();
    sqlx::query_scalar("SELECT id FROM deliveries ORDER BY id")
        .fetch_all(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_credit_pays_for_one_delivery_even_when_two_claims_pass_the_check() {
    // Two runs claim the same person, whose one credit both pre-checks see;
    // under row-level locking (two transactions) this is the race. Only the
    // guarded hold decides, and it pays for one.
    for store in
        each_backend("one_credit_pays_for_one_delivery_even_when_two_claims_pass_the_check").await
    {
        let who = "oUser00000000000000000000001";
        enqueue(&store, "a", &[who]).await;
        let ids = enqueue(&store, "b", &[who]).await;
        sqlx::query(
            "INSERT INTO consents (appid, openid, template_id, status, credits, reserved, source, updated_at) \
             VALUES ('wx0000000000000001', $1, 't', 'accept', 1, 0, 'intake', '')",
        )
        .bind(who)
        .execute(&store.pool)
        .await
        .unwrap();
        assert_eq!(ids.len(), 2);

        let gate = ConsentGate::Credit(AppTemplate::new(&app("1"), &tmpl("t")));
        let taken = store
            .write_batch(&gate, &ids, &[], &[])
            .await
            .unwrap()
            .taken;

        assert_eq!(taken.len(), 1, "one credit, one delivery");
        let reserved: i64 = sqlx::query_scalar("SELECT reserved FROM consents")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(reserved, 1);
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM deliveries ORDER BY status")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(statuses, ["claimed", "skipped"]);
    }
}

#[tokio::test]
async fn a_mark_takes_only_a_delivery_still_pending_or_claimed() {
    // Taking a delivery without credits writes nothing, so the mark is what
    // decides: a row settled meanwhile (another sender, another instance) is
    // not marked, and its request must not start.
    for store in each_backend("a_mark_takes_only_a_delivery_still_pending_or_claimed").await {
        let ids = enqueue(
            &store,
            "a",
            &[
                "oUser00000000000000000000001",
                "oUser00000000000000000000002",
            ],
        )
        .await;
        let gate = ConsentGate::Unchecked;
        let taken = store
            .write_batch(&gate, &ids, &[], &[])
            .await
            .unwrap()
            .taken;
        assert_eq!(taken.len(), 2);
        let statuses = || async {
            sqlx::query_scalar::<_, String>("SELECT status FROM deliveries ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap()
        };
        assert_eq!(
            statuses().await,
            ["pending", "pending"],
            "taking wrote nothing"
        );
        let sent = Outcome::local(ids[0], Status::Sent, None);
        store.write_batch(&gate, &[], &[], &[sent]).await.unwrap();

        let marked = store
            .write_batch(&gate, &[], &ids, &[])
            .await
            .unwrap()
            .marked;

        assert_eq!(marked, HashSet::from([ids[1]]));
        assert_eq!(statuses().await, ["sent", "sending"]);
    }
}

#[tokio::test]
async fn an_outcome_and_the_next_marks_in_one_batch_each_touch_only_their_rows() {
    // The recorder's common batch: one sender's outcome and the marks of the
    // next requests (PostgreSQL writes them in one statement).
    for store in
        each_backend("an_outcome_and_the_next_marks_in_one_batch_each_touch_only_their_rows").await
    {
        let ids = enqueue(
            &store,
            "daily",
            &[
                "oUser00000000000000000000001",
                "oUser00000000000000000000002",
                "oUser00000000000000000000003",
            ],
        )
        .await;
        let gate = ConsentGate::Unchecked;
        store.write_batch(&gate, &[], &ids[..1], &[]).await.unwrap();
        let mut answered = Outcome::local(ids[0], Status::Sent, None);
        answered.attempts = 1;

        // The answered one is marked again too, as a stale mark would be.
        let marked = store
            .write_batch(&gate, &[], &ids, &[answered])
            .await
            .unwrap()
            .marked;

        assert_eq!(marked, HashSet::from([ids[1], ids[2]]));
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, attempts FROM deliveries ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                ("sent".to_string(), 1),
                ("sending".to_string(), 0),
                ("sending".to_string(), 0)
            ]
        );
    }
}

#[tokio::test]
async fn a_page_says_who_refused_its_template_in_its_app_for_every_audience() {
    for store in
        each_backend("a_page_says_who_refused_its_template_in_its_app_for_every_audience").await
    {
        // On PostgreSQL the page statements are an instance's.
        let store = if store.topology() == crate::storage::Topology::Shared {
            let me = super::InstanceInfo {
                id: "me".into(),
                host: "test-host".into(),
                pid: 1,
                version: "test".into(),
                role: "daemon".into(),
                lease: std::time::Duration::from_secs(30),
            };
            store.register_instance(&me).await.unwrap();
            store.as_instance("me")
        } else {
            store
        };
        let people = [
            "oUserA0000000000000000000000",
            "oUserB0000000000000000000000",
            "oUserC0000000000000000000000",
        ];
        let consent = |appid: &str, who: &'static str, template: &'static str| {
            sqlx::query(
                "INSERT INTO consents (appid, openid, template_id, status, credits, reserved, source, updated_at) \
                 VALUES ($1, $2, $3, 'accept', 0, 0, 'intake', '') \
                 ON CONFLICT (appid, openid, template_id) DO NOTHING",
            )
            .bind(appid)
            .bind(who)
            .bind(template)
        };
        for who in people {
            consent(app("1").as_ref(), who, "t")
                .execute(&store.pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO recipients (job, openid, source, created_at, updated_at) VALUES ('listed', $1, 'cli', '', '')",
            )
            .bind(who)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let (wx1, t) = (app("1"), tmpl("t"));
        let jobs = [job("listed"), job("subs"), job("query")];
        let run = |job, audience| NewRun {
            job,
            appid: &wx1,
            template_id: &t,
            audience,
            slot: chrono::Utc::now(),
            trigger: Trigger::Manual,
        };
        let listed = store
            .enqueue(run(&jobs[0], Audience::Listed))
            .await
            .unwrap();
        let subscribed = Audience::Subscribed { one_time: false };
        let subscribed_run = store.enqueue(run(&jobs[1], subscribed)).await.unwrap();
        let query = store.enqueue(run(&jobs[2], Audience::Query)).await.unwrap();
        for who in people {
            sqlx::query(
                "INSERT INTO deliveries (run_id, openid, status, vars, created_at, updated_at) \
                 VALUES ($1, $2, 'pending', '{}', '', '')",
            )
            .bind(query.run_id)
            .bind(who)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        // After the runs were made: A rejects, B is banned; C rejects the
        // template in another app and another template in this one.
        sqlx::query("UPDATE consents SET status = 'reject' WHERE openid = $1")
            .bind(people[0])
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE consents SET status = 'ban' WHERE openid = $1")
            .bind(people[1])
            .execute(&store.pool)
            .await
            .unwrap();
        for (appid, template) in [(app("2"), "t"), (app("1"), "other")] {
            consent(appid.as_ref(), people[2], template)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "UPDATE consents SET status = 'reject' WHERE openid = $1 AND NOT (appid = 'wx0000000000000001' AND template_id = 't')",
        )
        .bind(people[2])
        .execute(&store.pool)
        .await
        .unwrap();

        let template = AppTemplate::new(&app("1"), &tmpl("t"));
        for (job, audience, run_id) in [
            ("listed", Audience::Listed, listed.run_id),
            ("subs", subscribed, subscribed_run.run_id),
            ("query", Audience::Query, query.run_id),
        ] {
            let page = store
                .pending_page(
                    &test_ids::job(job),
                    audience,
                    Some(&template),
                    run_id,
                    0,
                    10,
                )
                .await
                .unwrap();
            let refused: Vec<&str> = page
                .iter()
                .filter(|d| d.refused)
                .map(|d| d.openid.as_str())
                .collect();
            assert_eq!(page.len(), 3, "{job} on {:?}", store.topology());
            assert_eq!(
                refused,
                [people[0], people[1]],
                "{job} on {:?}",
                store.topology()
            );
            let unasked = store
                .pending_page(&test_ids::job(job), audience, None, run_id, 0, 10)
                .await
                .unwrap();
            assert!(unasked.iter().all(|d| !d.refused), "{job}");
        }
    }
}
