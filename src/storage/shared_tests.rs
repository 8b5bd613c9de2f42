//! Several instances on one PostgreSQL database, at the storage level: who takes
//! which delivery, credits contested at the same moment, a slot enqueued by all
//! at once, migrations run by ten at once, and the settling of dead instances.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use super::test_stores::postgres_url;
use super::{InstanceInfo, Store};
use crate::domain::Trigger;
use crate::domain::test_ids::{app, job, oid, tmpl};
use crate::domain::{AppId, AppTemplate, ConsentGate, JobName, Outcome, Status, TemplateId};
use crate::storage::{Audience, NewRun};

fn info(id: &str, lease: Duration) -> InstanceInfo {
    InstanceInfo {
        id: id.into(),
        host: "test-host".into(),
        pid: 1,
        version: "test".into(),
        role: "daemon".into(),
        lease,
    }
}

/// `n` recipients listed on `job`.
async fn listed(store: &Store, job: &str, n: usize) {
    for i in 0..n {
        sqlx::query(
            "INSERT INTO recipients (job, openid, source, created_at, updated_at) VALUES ($1, $2, 'cli', '', '')",
        )
        .bind(job)
        .bind(format!("oUser{i:023}"))
        .execute(&store.pool)
        .await
        .unwrap();
    }
}

/// The app and template of every run here.
static APP: LazyLock<AppId> = LazyLock::new(|| app("1"));
static TEMPLATE: LazyLock<TemplateId> = LazyLock::new(|| tmpl("t"));

fn run_of(job: &JobName) -> NewRun<'_> {
    NewRun {
        job,
        appid: &APP,
        template_id: &TEMPLATE,
        audience: Audience::Listed,
        slot: "2026-11-25T01:00:00Z".parse().unwrap(),
        trigger: Trigger::Schedule,
    }
}

/// Three stores on one new database, registered as instances a, b and c.
async fn three(test: &str, lease: Duration) -> Option<(Store, [Store; 3])> {
    let url = postgres_url(test)?;
    let base = Store::open(&url).await.unwrap();
    let mut stores = Vec::new();
    for id in ["a", "b", "c"] {
        let s = Store::open(&url).await.unwrap();
        s.register_instance(&info(id, lease)).await.unwrap();
        stores.push(s.as_instance(id));
    }
    Some((base, stores.try_into().ok().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_instances_starting_together_migrate_once() {
    let Some(url) = postgres_url("ten_instances_starting_together_migrate_once") else {
        return;
    };
    let opens: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every instance starts");
    }
    let store = Store::open(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, super::postgres::MIGRATOR.iter().count());
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_enqueued_by_three_instances_at_once_is_one_run() {
    let Some((base, stores)) = three(
        "a_slot_enqueued_by_three_instances_at_once_is_one_run",
        Duration::from_secs(30),
    )
    .await
    else {
        return;
    };
    listed(&base, "daily", 50).await;
    let tasks: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.enqueue(run_of(&job("daily"))).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|e| e.created).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|e| e.run_id == results[0].run_id));
    let rows = base.deliveries(results[0].run_id).await.unwrap();
    assert_eq!(rows.len(), 50, "one delivery per recipient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_taking_one_run_at_once_never_take_the_same_delivery() {
    let Some((base, stores)) = three(
        "instances_taking_one_run_at_once_never_take_the_same_delivery",
        Duration::from_secs(30),
    )
    .await
    else {
        return;
    };
    listed(&base, "daily", 600).await;
    let run = base.enqueue(run_of(&job("daily"))).await.unwrap().run_id;
    let tasks: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let page = s
                        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 16)
                        .await
                        .unwrap();
                    if page.is_empty() {
                        return mine;
                    }
                    // Each page is sent before the next is taken, as a drain does.
                    let ids: Vec<i64> = page.iter().map(|d| d.id).collect();
                    let marked = s
                        .write_batch(&ConsentGate::Unchecked, &[], &ids, &[])
                        .await
                        .unwrap()
                        .marked;
                    let outcomes: Vec<Outcome> = marked
                        .iter()
                        .map(|id| Outcome::local(*id, Status::Sent, None))
                        .collect();
                    s.write_batch(&ConsentGate::Unchecked, &[], &[], &outcomes)
                        .await
                        .unwrap();
                    mine.extend(marked);
                }
            })
        })
        .collect();
    let mut all = HashSet::new();
    let mut per_instance = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_instance.push(mine.len());
        for id in mine {
            assert!(all.insert(id), "delivery {id} was sent by two instances");
        }
    }
    assert_eq!(all.len(), 600, "every delivery sent once: {per_instance:?}");
    let audit = base.audit_run(run).await.unwrap();
    assert_eq!((audit.sent, audit.max_per_openid), (600, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credit_contested_by_three_instances_at_once_is_spent_once() {
    let Some((base, stores)) = three(
        "a_credit_contested_by_three_instances_at_once_is_spent_once",
        Duration::from_secs(30),
    )
    .await
    else {
        return;
    };
    let who = "oUser00000000000000000000000";
    // One person on three jobs, one credit: each instance claims one job's run.
    let mut ids = Vec::new();
    for name in ["j1", "j2", "j3"] {
        listed(&base, name, 1).await;
        let run = base.enqueue(run_of(&job(name))).await.unwrap().run_id;
        ids.push(base.deliveries(run).await.unwrap()[0].id);
    }
    sqlx::query(
        "INSERT INTO consents (appid, openid, template_id, status, credits, reserved, source, updated_at) \
         VALUES ('wx0000000000000001', $1, 't', 'accept', 1, 0, 'intake', '')",
    )
    .bind(who)
    .execute(&base.pool)
    .await
    .unwrap();
    for round in 0..5 {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let tasks: Vec<_> = stores
            .iter()
            .zip(&ids)
            .map(|(s, id)| {
                let (s, id, barrier) = (s.clone(), *id, barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.write_batch(
                        &ConsentGate::Credit(AppTemplate::new(&app("1"), &tmpl("t"))),
                        &[id],
                        &[],
                        &[],
                    )
                    .await
                    .unwrap()
                    .taken
                })
            })
            .collect();
        let mut taken = Vec::new();
        for t in tasks {
            taken.extend(t.await.unwrap());
        }
        assert_eq!(
            taken.len(),
            1,
            "round {round}: one credit, one claim: {taken:?}"
        );
        let reserved: i64 = sqlx::query_scalar("SELECT reserved FROM consents")
            .fetch_one(&base.pool)
            .await
            .unwrap();
        assert_eq!(reserved, 1, "round {round}");
        // Undo for the next round: the claim goes back, the hold is released.
        sqlx::query("UPDATE deliveries SET status = 'pending', credit = 0")
            .execute(&base.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE consents SET reserved = 0")
            .execute(&base.pool)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_instance_is_settled_once_and_a_live_one_is_left_alone() {
    let Some(url) = postgres_url("a_dead_instance_is_settled_once_and_a_live_one_is_left_alone")
    else {
        return;
    };
    let base = Store::open(&url).await.unwrap();
    listed(&base, "daily", 40).await;
    let run = base.enqueue(run_of(&job("daily"))).await.unwrap().run_id;
    let live = info("live", Duration::from_secs(30));
    let dying = info("dying", Duration::from_millis(300));
    let (a, b) = (base.as_instance("live"), base.as_instance("dying"));
    a.register_instance(&live).await.unwrap();
    b.register_instance(&dying).await.unwrap();
    // Each takes 10 and has 4 of them in flight.
    let mut in_flight = Vec::new();
    for s in [&a, &b] {
        let page = s
            .pending_page(&job("daily"), Audience::Listed, None, run, 0, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 10);
        let ids: Vec<i64> = page.iter().take(4).map(|d| d.id).collect();
        s.write_batch(&ConsentGate::Unchecked, &[], &ids, &[])
            .await
            .unwrap();
        in_flight.push(ids);
    }
    // A drain starting now (a restart, a manual send) leaves both alone: each
    // may be sending right now.
    assert_eq!(base.recover_sending(run, Status::Unknown).await.unwrap(), 0);

    tokio::time::sleep(Duration::from_millis(400)).await;
    a.heartbeat(&live).await.unwrap();
    // Two survivors settle at the same moment: one does it, once.
    let (r1, r2) = tokio::join!(
        a.rescue_dead(Status::Unknown, &[]),
        base.rescue_dead(Status::Unknown, &[])
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.instances.len() + r2.instances.len(), 1, "{r1:?} {r2:?}");
    let rescue = if r1.instances.is_empty() { r2 } else { r1 };
    assert_eq!(rescue.instances, ["dying"]);
    assert_eq!((rescue.in_flight, rescue.returned), (4, 6));
    assert_eq!(rescue.runs.len(), 1);

    let rows = base.deliveries(run).await.unwrap();
    let status = |id: i64| rows.iter().find(|r| r.id == id).unwrap().status;
    for id in &in_flight[1] {
        assert_eq!(
            status(*id),
            Status::Unknown,
            "the dead one's request may have gone out"
        );
    }
    for id in &in_flight[0] {
        assert_eq!(status(*id), Status::Sending, "the live one's are its own");
    }
    // The dead one's 6 untouched ones are anyone's again; the live one's are not.
    let free = base
        .as_instance("late")
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 100)
        .await
        .unwrap();
    assert_eq!(free.len(), 40 - 10 - 4, "20 never taken + 6 given back");
    let (_, held) = base.run_progress(run).await.unwrap();
    assert_eq!(held, 40 - 4, "all but the 4 unknown are still to finish");
    // Back from a pause longer than its lease, the dead one is told so.
    assert!(!b.heartbeat(&dying).await.unwrap());
    let marked = b
        .write_batch(&ConsentGate::Unchecked, &[], &[free[0].id], &[])
        .await
        .unwrap()
        .marked;
    assert!(
        marked.is_empty(),
        "a delivery another instance took is not its to send"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tap_reported_and_pushed_to_two_instances_at_once_is_one_credit() {
    let Some(url) =
        postgres_url("one_tap_reported_and_pushed_to_two_instances_at_once_is_one_credit")
    else {
        return;
    };
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    let who = oid("oUser00000000000000000000000");
    use crate::domain::ConsentResult;
    for round in 0..20 {
        // The mini program's report reaches one instance while WeChat's push
        // of the same tap reaches another.
        let template = tmpl(&format!("t{round}"));
        let report = vec![(template.clone(), ConsentResult::Accept)];
        let key = format!("event-{round}");
        let (r1, r2) = tokio::join!(
            a.record_subscription(&APP, &who, None, None, &report),
            b.apply_consent_event(&APP, &key, &who, &template, ConsentResult::Accept)
        );
        r1.unwrap();
        assert!(r2.unwrap());
        let credits = a
            .consents_of(&APP, &who)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.template_id == template.as_ref())
            .unwrap()
            .credits;
        assert_eq!(credits, 1, "round {round}: one tap, one credit");
    }
}

/// Each listed person of `job` gets one credit for run_of's template.
async fn one_credit_each(store: &Store, job: &str) {
    sqlx::query(
        "INSERT INTO consents (appid, openid, template_id, status, credits, reserved, source, updated_at) \
         SELECT 'wx0000000000000001', openid, 't', 'accept', 1, 0, 'intake', '' FROM recipients WHERE job = $1",
    )
    .bind(job)
    .execute(&store.pool)
    .await
    .unwrap();
}

async fn status_of(store: &Store, run: i64, id: i64) -> Status {
    let rows = store.deliveries(run).await.unwrap();
    rows.iter().find(|r| r.id == id).unwrap().status
}

async fn owner_of(store: &Store, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT owner FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_joining_one_that_was_alone_wins_what_it_takes_and_a_rescue_still_settles() {
    let Some(url) = postgres_url("an_instance_joining_one_that_was_alone") else {
        return;
    };
    let base = Store::open(&url).await.unwrap();
    listed(&base, "daily", 40).await;
    one_credit_each(&base, "daily").await;
    let run = base.enqueue(run_of(&job("daily"))).await.unwrap().run_id;
    let credit = ConsentGate::Credit(AppTemplate::new(&app("1"), &tmpl("t")));
    let (a, b) = (base.as_instance("a"), base.as_instance("b"));
    let (ia, ib) = (
        info("a", Duration::from_millis(300)),
        info("b", Duration::from_secs(30)),
    );
    a.register_instance(&ia).await.unwrap();

    // Alone, `a` reads a page without writing it, then claims and marks some.
    let page_a: Vec<i64> = a
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 20)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(page_a.len(), 20);
    for id in &page_a {
        assert_eq!(owner_of(&base, *id).await, None, "read, not taken");
    }
    let claimed = a
        .write_batch(&credit, &page_a[..10], &[], &[])
        .await
        .unwrap()
        .taken;
    assert_eq!(claimed.len(), 10);
    let sending = a
        .write_batch(&ConsentGate::Unchecked, &[], &page_a[..4], &[])
        .await
        .unwrap()
        .marked;
    assert_eq!(sending.len(), 4);
    for id in &page_a[..10] {
        assert_eq!(owner_of(&base, *id).await.as_deref(), Some("a"));
    }

    // `b` joins: with `a` live it takes, and so wins the rest of a's page.
    b.register_instance(&ib).await.unwrap();
    let page_b: Vec<i64> = b
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 20)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(page_b[..10], page_a[10..], "the unclaimed rest, then more");
    // Now no longer alone, `a` takes too, and only what nobody holds.
    let next_a = a
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 100)
        .await
        .unwrap();
    assert!(next_a.iter().all(|d| !page_b.contains(&d.id)));
    a.release_taken(run).await.unwrap();

    // What `a` read and `b` took is b's: a's claim, mark and give-back miss it,
    // and it is not skipped as if it lacked consent.
    let lost = &page_a[10..];
    let w = a.write_batch(&credit, lost, &[], &[]).await.unwrap();
    assert!(w.taken.is_empty(), "{w:?}");
    let w = a
        .write_batch(&ConsentGate::Unchecked, &[], lost, &[])
        .await
        .unwrap();
    assert!(w.marked.is_empty(), "{w:?}");
    let give_back: Vec<Outcome> = lost
        .iter()
        .map(|id| Outcome::local(*id, Status::Pending, None))
        .collect();
    a.write_batch(&credit, &[], &[], &give_back).await.unwrap();
    for id in lost {
        assert_eq!(status_of(&base, run, *id).await, Status::Pending);
        assert_eq!(owner_of(&base, *id).await.as_deref(), Some("b"));
    }

    // `b` sends its page; a stale give-back from `a` cannot reopen one.
    let taken_b = b
        .write_batch(&credit, &page_b, &[], &[])
        .await
        .unwrap()
        .taken;
    assert_eq!(taken_b.len(), 20);
    let marked_b = b
        .write_batch(&ConsentGate::Unchecked, &[], &page_b, &[])
        .await
        .unwrap()
        .marked;
    assert_eq!(marked_b.len(), 20);
    let sent: Vec<Outcome> = page_b
        .iter()
        .map(|id| Outcome::local(*id, Status::Sent, None))
        .collect();
    b.write_batch(&credit, &[], &[], &sent).await.unwrap();
    a.write_batch(&credit, &[], &[], &give_back).await.unwrap();
    for id in &page_b {
        assert_eq!(status_of(&base, run, *id).await, Status::Sent);
    }

    // `a` dies: its 4 requests in flight are unknown (credit spent), its 6
    // claimed-but-unsent go back to pending (credit released).
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.heartbeat(&ib).await.unwrap();
    let rescue = b.rescue_dead(Status::Unknown, &[]).await.unwrap();
    assert_eq!(rescue.instances, ["a"]);
    assert_eq!((rescue.in_flight, rescue.returned), (4, 6));
    for id in &page_a[..4] {
        assert_eq!(status_of(&base, run, *id).await, Status::Unknown);
    }
    for id in &page_a[4..10] {
        assert_eq!(status_of(&base, run, *id).await, Status::Pending);
        assert_eq!(owner_of(&base, *id).await, None);
    }

    // `b`, alone now, sends the rest: nobody gets two messages.
    loop {
        let page: Vec<i64> = b
            .pending_page(&job("daily"), Audience::Listed, None, run, 0, 16)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        if page.is_empty() {
            break;
        }
        let taken: Vec<i64> = b
            .write_batch(&credit, &page, &[], &[])
            .await
            .unwrap()
            .taken
            .into_iter()
            .collect();
        let marked = b
            .write_batch(&ConsentGate::Unchecked, &[], &taken, &[])
            .await
            .unwrap()
            .marked;
        let sent: Vec<Outcome> = marked
            .iter()
            .map(|id| Outcome::local(*id, Status::Sent, None))
            .collect();
        b.write_batch(&credit, &[], &[], &sent).await.unwrap();
    }
    let audit = base.audit_run(run).await.unwrap();
    assert_eq!((audit.sent, audit.max_per_openid), (36, 1));
    let (reserved, credits): (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(reserved) AS BIGINT), CAST(SUM(credits) AS BIGINT) FROM consents",
    )
    .fetch_one(&base.pool)
    .await
    .unwrap();
    assert_eq!(
        (reserved, credits),
        (0, 0),
        "36 sent and 4 unknown spent theirs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_joining_mid_run_never_sends_what_the_lone_one_sends() {
    let Some(url) = postgres_url("an_instance_joining_mid_run_never_sends") else {
        return;
    };
    let base = Store::open(&url).await.unwrap();
    listed(&base, "daily", 1500).await;
    let run = base.enqueue(run_of(&job("daily"))).await.unwrap().run_id;
    let lease = Duration::from_secs(30);
    let drain = |s: Store, started: std::sync::Arc<tokio::sync::Notify>| async move {
        let mut mine = Vec::new();
        let mut after = 0;
        loop {
            let page = s
                .pending_page(&job("daily"), Audience::Listed, None, run, after, 32)
                .await
                .unwrap();
            let Some(last) = page.last() else {
                return mine;
            };
            after = last.id;
            started.notify_one();
            for chunk in page.chunks(8) {
                let ids: Vec<i64> = chunk.iter().map(|d| d.id).collect();
                let marked = s
                    .write_batch(&ConsentGate::Unchecked, &[], &ids, &[])
                    .await
                    .unwrap()
                    .marked;
                // What it read and lost is given back, as a stopping drain does.
                let outcomes: Vec<Outcome> = ids
                    .iter()
                    .map(|id| {
                        let status = if marked.contains(id) {
                            Status::Sent
                        } else {
                            Status::Pending
                        };
                        Outcome::local(*id, status, None)
                    })
                    .collect();
                s.write_batch(&ConsentGate::Unchecked, &[], &[], &outcomes)
                    .await
                    .unwrap();
                mine.extend(marked);
            }
        }
    };
    let a = base.as_instance("a");
    a.register_instance(&info("a", lease)).await.unwrap();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let first = tokio::spawn(drain(a, started.clone()));
    started.notified().await;
    let b = base.as_instance("b");
    b.register_instance(&info("b", lease)).await.unwrap();
    let second = tokio::spawn(drain(b, std::sync::Arc::new(tokio::sync::Notify::new())));
    let (mine_a, mine_b) = (first.await.unwrap(), second.await.unwrap());
    let all: HashSet<i64> = mine_a.iter().chain(&mine_b).copied().collect();
    assert_eq!(
        all.len(),
        mine_a.len() + mine_b.len(),
        "a delivery was marked by both"
    );
    assert!(!mine_b.is_empty(), "the late one joined");
    // What is left pending (given back behind both cursors) is nobody's.
    let audit = base.audit_run(run).await.unwrap();
    assert_eq!(audit.max_per_openid, 1);
    assert_eq!((audit.sent, all.len()), (1500, 1500));
}
