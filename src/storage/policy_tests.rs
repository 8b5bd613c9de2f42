//! The delivery policy at the storage level, on every backend: instances
//! racing for one person's last cap slot send once; what failed does not use
//! the cap; a deferred send goes at its time, or ends `expired` with its rule;
//! dedupe; and a held send never spends a one-time credit.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::sends_tests::{accepted, claim_as_of, credit, credits, ids, key, new_send, status, t0};
use super::test_stores::{each_backend, postgres_url};
use super::{Claim, Store};
use crate::domain::SendStatus;
use crate::domain::policy::{Action, Policy, RawPolicy, Rule};

fn policy(json: &str) -> Policy {
    let raw: RawPolicy = serde_json::from_str(json).unwrap();
    Policy::fold([&raw.check().unwrap()])
}

/// `claim_send` of send `id` as of `at` under `policy` (recipients in UTC).
async fn claim_at(store: &Store, id: i64, owner: &str, at: DateTime<Utc>, p: &Policy) -> Claim {
    claim_as_of(store, id, owner, at, Some((p, chrono_tz::UTC))).await
}

/// `n` sends to the one person, due at `t0`, expiring a day later.
async fn sends(store: &Store, prefix: &str, n: usize) -> Vec<i64> {
    let ids = ids();
    let mut out = Vec::new();
    for i in 0..n {
        let k = key(&format!("{prefix}:{i}"));
        let digest = format!("d{i}");
        let mut s = new_send(&ids, &k, 0, false);
        s.expires_at = t0() + Duration::days(1);
        s.digest = &digest;
        out.push(accepted(store, &s).await);
    }
    out
}

/// Three stores on one database: a temporary SQLite file, and PostgreSQL where there is one.
async fn three_instances(test: &str, dir: &std::path::Path) -> Vec<[Arc<Store>; 3]> {
    let mut all = Vec::new();
    let file = format!("sqlite://{}", dir.join("w.db").display());
    let mut urls = vec![file];
    urls.extend(postgres_url(test));
    for url in urls {
        let first = Arc::new(Store::open(&url).await.unwrap());
        let second = Arc::new(Store::open(&url).await.unwrap());
        let third = Arc::new(Store::open(&url).await.unwrap());
        all.push([first, second, third]);
    }
    all
}

#[tokio::test]
async fn three_instances_racing_for_the_last_cap_slots_send_exactly_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let test = "three_instances_racing_for_the_last_cap_slots_send_exactly_the_limit";
    for stores in three_instances(test, dir.path()).await {
        let p = Arc::new(policy(r#"{"frequency_caps":[{"limit":2,"per":"1d"}]}"#));
        let ids = sends(&stores[0], "race", 30).await;
        let mut tasks = Vec::new();
        for id in &ids {
            for (n, store) in stores.iter().enumerate() {
                let (store, p, id) = (Arc::clone(store), Arc::clone(&p), *id);
                let at = t0() + Duration::minutes(1);
                tasks.push(tokio::spawn(async move {
                    (id, claim_at(&store, id, &format!("i{n}"), at, &p).await)
                }));
            }
        }
        let (mut claimed, mut held) = (Vec::new(), 0);
        for t in tasks {
            match t.await.unwrap() {
                (id, Claim::Claimed(_)) => claimed.push(id),
                (_, Claim::Held(Rule::Cap, Some(Action::Drop))) => held += 1,
                (_, Claim::Lost) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed.len(), 2, "the limit, however the instances race");
        assert_eq!(held, 28, "every other send was held once");
        for id in &ids {
            let want = if claimed.contains(id) {
                SendStatus::Sending
            } else {
                SendStatus::Suppressed
            };
            assert_eq!(status(&stores[0], *id).await, want);
        }
        let shown = stores[0].send_by_id(ids[0]).await.unwrap().unwrap();
        assert!(
            shown.status != SendStatus::Suppressed
                || (shown.held.as_deref() == Some("cap")
                    && shown.errmsg.as_deref() == Some("held by cap")),
            "{shown:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_or_refused_send_does_not_use_up_the_cap() {
    for store in each_backend("a_failed_or_refused_send_does_not_use_up_the_cap").await {
        let p = policy(r#"{"frequency_caps":[{"limit":1,"per":"24h"}]}"#);
        let ids = sends(&store, "f", 4).await;
        let at = t0() + Duration::minutes(1);
        for (id, ending) in ids[..2]
            .iter()
            .zip([SendStatus::Failed, SendStatus::Refused])
        {
            assert!(matches!(
                claim_at(&store, *id, "me", at, &p).await,
                Claim::Claimed(_)
            ));
            assert!(
                store
                    .finish_send(*id, "me", ending, Some(1), None, None)
                    .await
                    .unwrap()
            );
        }
        // Neither counted: the third goes, and (sent) fills the cap.
        assert!(matches!(
            claim_at(&store, ids[2], "me", at, &p).await,
            Claim::Claimed(_)
        ));
        store
            .finish_send(ids[2], "me", SendStatus::Sent, None, None, Some(7))
            .await
            .unwrap();
        assert_eq!(
            claim_at(&store, ids[3], "me", at, &p).await,
            Claim::Held(Rule::Cap, Some(Action::Drop))
        );
    }
}

#[tokio::test]
async fn a_deferred_send_waits_for_its_time_and_one_past_its_deadline_expires_with_the_rule() {
    for store in each_backend("a_deferred_send_waits_and_one_past_its_deadline_expires").await {
        // 01:00 UTC is inside 22:00–08:00 for a recipient in UTC.
        let p = policy(r#"{"quiet_hours":{"start":"22:00","end":"08:00","spread":"0s"}}"#);
        let ids = sends(&store, "q", 2).await;
        let at = t0() + Duration::minutes(1);
        assert_eq!(
            claim_at(&store, ids[0], "me", at, &p).await,
            Claim::Held(Rule::QuietHours, Some(Action::Defer))
        );
        let row = store.send_by_id(ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, SendStatus::Pending);
        assert_eq!(row.held.as_deref(), Some("quiet_hours"));
        assert_eq!(row.send_at, "2026-12-05T08:00:00.000Z");
        assert_eq!(row.attempts, 0, "no attempt counted");
        assert_eq!(crate::delivery::shown_status(&row, at), "deferred");
        // Not due before 08:00; then it goes.
        assert!(
            store
                .due_sends(at, 10)
                .await
                .unwrap()
                .iter()
                .all(|d| d.id != ids[0])
        );
        let eight = "2026-12-05T08:00:00Z".parse().unwrap();
        assert!(
            store
                .due_sends(eight, 10)
                .await
                .unwrap()
                .iter()
                .any(|d| d.id == ids[0])
        );
        assert!(matches!(
            claim_at(&store, ids[0], "me", eight, &p).await,
            Claim::Claimed(_)
        ));
        // Its window ends after its deadline: expired, with the rule, never sent.
        sqlx::query("UPDATE sends SET expires_at = '2026-12-05T05:00:00.000Z' WHERE id = $1")
            .bind(ids[1])
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            claim_at(&store, ids[1], "me", at, &p).await,
            Claim::Held(Rule::QuietHours, None)
        );
        let row = store.send_by_id(ids[1]).await.unwrap().unwrap();
        assert_eq!(row.status, SendStatus::Expired);
        assert_eq!(
            row.errmsg.as_deref(),
            Some("held by quiet_hours past its deadline")
        );
    }
}

#[tokio::test]
async fn the_same_message_within_the_dedupe_window_goes_once() {
    for store in each_backend("the_same_message_within_the_dedupe_window_goes_once").await {
        let p = policy(r#"{"dedupe":"10m"}"#);
        let ids = ids();
        let mut made = Vec::new();
        for (i, digest) in ["same", "same", "other"].iter().enumerate() {
            let k = key(&format!("dd:{i}"));
            let mut s = new_send(&ids, &k, 0, false);
            s.expires_at = t0() + Duration::days(1);
            s.digest = digest;
            made.push(accepted(&store, &s).await);
        }
        let at = t0() + Duration::minutes(1);
        assert!(matches!(
            claim_at(&store, made[0], "me", at, &p).await,
            Claim::Claimed(_)
        ));
        assert_eq!(
            claim_at(&store, made[1], "me", at, &p).await,
            Claim::Held(Rule::Dedupe, Some(Action::Drop))
        );
        assert!(matches!(
            claim_at(&store, made[2], "me", at, &p).await,
            Claim::Claimed(_)
        ));
    }
}

#[tokio::test]
async fn a_held_send_never_spends_a_one_time_credit() {
    for store in each_backend("a_held_send_never_spends_a_one_time_credit").await {
        let ids = ids();
        credit(&store, &ids, 1).await;
        let k = key("ot");
        let mut s = new_send(&ids, &k, 0, true);
        s.digest = "d";
        let id = accepted(&store, &s).await;
        let p = policy(r#"{"quiet_hours":{"start":"00:00","end":"08:00","action":"drop"}}"#);
        assert_eq!(
            claim_at(&store, id, "me", t0() + Duration::minutes(1), &p).await,
            Claim::Held(Rule::QuietHours, Some(Action::Drop))
        );
        assert_eq!(credits(&store).await, (1, 0), "neither held nor spent");
        assert_eq!(status(&store, id).await, SendStatus::Suppressed);
    }
}

/// One person listed on `jobs`, and each job's run enqueued; returns each run's delivery.
async fn runs_for_one_person(store: &Store, jobs: &[&str]) -> Vec<(i64, i64)> {
    use crate::domain::Trigger;
    use crate::domain::test_ids::{app, job, tmpl};
    let (appid, template) = (app("1"), tmpl("t"));
    let mut out = Vec::new();
    for name in jobs {
        sqlx::query(
            "INSERT INTO recipients (job, openid, source, created_at, updated_at) \
             VALUES ($1, 'oPerson000000000000000000000', 'cli', '', '')",
        )
        .bind(*name)
        .execute(&store.pool)
        .await
        .unwrap();
        let j = job(name);
        let run = store
            .enqueue(super::NewRun {
                job: &j,
                appid: &appid,
                template_id: &template,
                audience: super::Audience::Listed,
                slot: t0(),
                trigger: Trigger::Schedule,
            })
            .await
            .unwrap()
            .run_id;
        out.push((run, store.deliveries(run).await.unwrap()[0].id));
    }
    out
}

fn delivery(id: i64, tz: chrono_tz::Tz) -> super::PolicyDelivery {
    super::PolicyDelivery {
        id,
        openid: "oPerson000000000000000000000".into(),
        tz,
        digest: String::new(),
    }
}

fn run_of<'a>(run_id: i64, job: &'a str) -> super::PolicyRun<'a> {
    super::PolicyRun {
        run_id,
        appid: "wx0000000000000001",
        job,
        template_id: "t",
        one_time: false,
        deadline: Utc::now() + Duration::hours(3),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_deciding_three_jobs_runs_for_one_person_let_one_go_under_a_cap_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let test = "three_instances_deciding_three_jobs_runs_for_one_person";
    for stores in three_instances(test, dir.path()).await {
        let runs = runs_for_one_person(&stores[0], &["j1", "j2", "j3"]).await;
        let p = Arc::new(policy(r#"{"frequency_caps":[{"limit":1,"per":"1d"}]}"#));
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let names = ["j1", "j2", "j3"];
        let tasks: Vec<_> = stores
            .iter()
            .zip(runs.clone())
            .zip(names)
            .map(|((s, (run, id)), name)| {
                let (s, p, barrier) = (Arc::clone(s), Arc::clone(&p), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let render = |_: i64| "{}".to_owned();
                    s.hold_deliveries(
                        run_of(run, name),
                        &p,
                        &[delivery(id, chrono_tz::UTC)],
                        &render,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut held = Vec::new();
        for t in tasks {
            held.extend(t.await.unwrap());
        }
        assert_eq!(held.len(), 2, "one of three goes: {held:?}");
        assert!(
            held.iter()
                .all(|h| h.rule == Rule::Cap && h.action == Some(Action::Drop))
        );
        let mut statuses = Vec::new();
        for (run, _) in &runs {
            statuses.push(stores[0].deliveries(*run).await.unwrap()[0].status);
        }
        statuses.sort_by_key(|s| s.as_str());
        use crate::domain::Status;
        assert_eq!(
            statuses,
            [Status::Pending, Status::Suppressed, Status::Suppressed]
        );
    }
}

#[tokio::test]
async fn a_held_run_delivery_is_deferred_as_a_send_or_expires_past_its_window() {
    for store in each_backend("a_held_run_delivery_is_deferred_as_a_send_or_expires").await {
        let runs = runs_for_one_person(&store, &["j1", "j2"]).await;
        // A window from an hour ago to an hour ahead (UTC): now is inside it.
        let now = Utc::now();
        let (start, end) = (
            (now - Duration::hours(1)).format("%H:%M:%S").to_string(),
            (now + Duration::hours(1)).format("%H:%M:%S").to_string(),
        );
        let p = policy(&format!(
            r#"{{"quiet_hours":{{"start":"{start}","end":"{end}","spread":"0s"}}}}"#
        ));
        let render = |id: i64| format!(r#"{{"template_id":"t","data":{{"id":"{id}"}}}}"#);
        let (run, id) = runs[0];
        let held = store
            .hold_deliveries(
                run_of(run, "j1"),
                &p,
                &[delivery(id, chrono_tz::UTC)],
                &render,
            )
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].action, Some(Action::Defer));
        let d = &store.deliveries(run).await.unwrap()[0];
        assert_eq!(d.status, crate::domain::Status::Deferred);
        let errmsg = d.errmsg.clone().unwrap();
        assert!(errmsg.starts_with("held by quiet_hours; send "), "{errmsg}");
        assert!(errmsg.contains(": deferred until "), "{errmsg}");
        let sends = store
            .list_sends(&super::SendFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].delivery_id, Some(id));
        assert_eq!(sends[0].held.as_deref(), Some("quiet_hours"));
        assert_eq!(
            sends[0].message,
            format!(r#"{{"template_id":"t","data":{{"id":"{id}"}}}}"#)
        );
        // Deciding it again (a resume) makes no second send: it is not pending.
        let again = store
            .hold_deliveries(
                run_of(run, "j1"),
                &p,
                &[delivery(id, chrono_tz::UTC)],
                &render,
            )
            .await
            .unwrap();
        assert!(again.is_empty());
        // A run whose window closes before the quiet hours end: expired, with the rule.
        let (run, id) = runs[1];
        let mut short = run_of(run, "j2");
        short.deadline = now + Duration::minutes(30);
        let held = store
            .hold_deliveries(short, &p, &[delivery(id, chrono_tz::UTC)], &render)
            .await
            .unwrap();
        assert_eq!(held[0].action, None);
        let d = &store.deliveries(run).await.unwrap()[0];
        assert_eq!(d.status, crate::domain::Status::Expired);
        assert_eq!(
            d.errmsg.as_deref(),
            Some("held by quiet_hours past its deadline")
        );
        assert_eq!(store.deferred_count().await.unwrap(), 1);
    }
}

/// The history rows of the one person of `runs_for_one_person`.
async fn records(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM policy_history WHERE openid = 'oPerson000000000000000000000'",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

/// `hold_deliveries` for run `run`'s one delivery `id` of `job` (recipient in UTC).
async fn decide_one(
    store: &Store,
    (run, id): (i64, i64),
    job: &str,
    p: &Policy,
) -> Vec<super::HeldDelivery> {
    let render = |_: i64| "{}".to_owned();
    store
        .hold_deliveries(
            run_of(run, job),
            p,
            &[delivery(id, chrono_tz::UTC)],
            &render,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_delivery_decided_again_on_a_resume_is_recorded_once_far_from_its_cap_and_at_it() {
    for store in each_backend("a_delivery_decided_again_on_a_resume_is_recorded_once").await {
        let runs = runs_for_one_person(&store, &["j1", "j2", "j3"]).await;
        // Far from the limit, the screen counts and never reads the records:
        // its own record must still be recognised, not written again.
        let roomy = policy(r#"{"frequency_caps":[{"limit":5,"per":"1d"}]}"#);
        let (run, id) = runs[0];
        for _ in 0..3 {
            let held = decide_one(&store, (run, id), "j1", &roomy).await;
            assert!(held.is_empty(), "its own record never holds it: {held:?}");
        }
        assert_eq!(
            records(&store).await,
            1,
            "decided three times, recorded once"
        );
        // At the limit (two a day: one record, then a second job's delivery
        // decided twice), the records are read: the second goes and is
        // recorded once; a third job's is held.
        let tight = policy(r#"{"frequency_caps":[{"limit":2,"per":"1d"}]}"#);
        let (run, id) = runs[1];
        for _ in 0..2 {
            let held = decide_one(&store, (run, id), "j2", &tight).await;
            assert!(held.is_empty(), "{held:?}");
        }
        assert_eq!(records(&store).await, 2);
        let (run, id) = runs[2];
        let held = decide_one(&store, (run, id), "j3", &tight).await;
        assert_eq!(held.len(), 1, "the third of two a day is held");
        assert_eq!(held[0].rule, Rule::Cap);
        assert_eq!(records(&store).await, 2, "a held delivery is not recorded");
    }
}
