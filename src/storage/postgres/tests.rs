//! What only PostgreSQL does: the planner's choices on the send path, and a
//! writer's connection lost to a restarted server.

use super::super::test_stores::postgres_url;
use super::super::{Held, Store};
use crate::domain::Trigger;
use crate::domain::test_ids::{app, job, tmpl};
use crate::domain::{ConsentGate, Outcome, Status};
use crate::storage::{Audience, NewRun};

/// `n` recipients listed on `job`, in one statement.
async fn listed(store: &Store, job: &str, n: usize) {
    sqlx::query(
        "INSERT INTO recipients (job, openid, source, created_at, updated_at) \
         SELECT $1, 'oUser' || lpad(CAST(i AS TEXT), 23, '0'), 'cli', '', '' FROM generate_series(1, $2) i",
    )
    .bind(job)
    .bind(n as i64)
    .execute(&store.pool)
    .await
    .unwrap();
}

async fn enqueue(store: &Store, job: &str) -> i64 {
    store
        .enqueue(NewRun {
            job: &crate::domain::test_ids::job(job),
            appid: &app("1"),
            template_id: &tmpl("t"),
            audience: Audience::Listed,
            slot: "2026-11-25T01:00:00Z".parse().unwrap(),
            trigger: Trigger::Schedule,
        })
        .await
        .unwrap()
        .run_id
}

#[tokio::test]
async fn a_page_of_a_new_run_is_read_along_its_own_index_however_stale_the_statistics() {
    // The statistics say every delivery is an earlier run's and sent; the new
    // run is in none of them, as on every fresh run until autovacuum comes.
    // The planner then guessed a few rows and read the whole run (a bitmap
    // scan, sorted) or walked the primary key through the earlier run for
    // every page.
    let Some(url) = postgres_url("page_read_plan") else {
        return;
    };
    let store = Store::open(&url).await.unwrap();
    // A first run on a table never analyzed, then a second after the first
    // was sent and analyzed.
    listed(&store, "old", 5000).await;
    let old = enqueue(&store, "old").await;
    assert_page_plans(&store, "old", old).await;
    sqlx::query("UPDATE deliveries SET status = 'sent' WHERE run_id = $1")
        .bind(old)
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE deliveries")
        .execute(&store.pool)
        .await
        .unwrap();
    listed(&store, "new", 5000).await;
    let new = enqueue(&store, "new").await;
    assert_page_plans(&store, "new", new).await;
    // And once the statistics know it: half the table, all pending.
    sqlx::query("ANALYZE deliveries")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_page_plans(&store, "new", new).await;
    let page = store
        .pending_page(&job("new"), Audience::Listed, None, new, 0, 256)
        .await
        .unwrap();
    assert_eq!(page.len(), 256);
    assert!(page.windows(2).all(|w| w[0].id < w[1].id));
}

/// Asserts that both page statements read run `run` of `job` along its index.
async fn assert_page_plans(store: &Store, job: &str, run: i64) {
    // With a long-term template's rejections read per row, as the drain asks.
    use crate::storage::dialect::Dialect;
    for (what, take) in [("read", false), ("take", true)] {
        let page = super::Postgres
            .shared_page(Audience::Listed, true, take)
            .unwrap();
        let sql = page.sql;
        let mut tx = store.write().await.unwrap();
        sqlx::query(page.setup).execute(&mut *tx).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, COSTS OFF) {sql}"
        )))
        .bind("me")
        .bind(run)
        .bind(0_i64)
        .bind(256_i64)
        .bind(job)
        .bind("t")
        .bind(app("1").as_ref())
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        // The primary key only to update the ids already picked, by key.
        let walks_the_key = plan
            .windows(2)
            .any(|w| w[0].contains("deliveries_pkey") && !w[1].contains("Index Cond: (id = ANY"));
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using deliveries_run on deliveries"),
            "{what}: {plan}"
        );
        assert!(!plan.contains("Bitmap"), "{what}: {plan}");
        assert!(!walks_the_key, "{what}: {plan}");
        assert!(!plan.contains("Rows Removed by Filter"), "{what}: {plan}");
    }
}

#[tokio::test]
async fn a_writer_whose_connection_the_server_dropped_takes_a_fresh_one() {
    // A restarted or failed-over server ends every connection. The writer keeps
    // its own between batches; the batch that finds it broken fails (its marks
    // are not made, so nothing is sent), and the next one must not fail too.
    let Some(url) = postgres_url("writer_connection_dropped") else {
        return;
    };
    let store = Store::open(&url).await.unwrap();
    listed(&store, "daily", 3).await;
    let run = enqueue(&store, "daily").await;
    let ids: Vec<i64> = store
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let mut held = Held::default();
    let gate = ConsentGate::Unchecked;
    let first = store
        .write_batch_on(&mut held, &gate, &[], &ids[..1], &[])
        .await
        .unwrap();
    assert!(first.marked.contains(&ids[0]));

    let admin = Store::open(&url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&admin.pool)
    .await
    .unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|e| *e));

    let sent = [Outcome::local(ids[0], Status::Sent, None)];
    assert!(
        store
            .write_batch_on(&mut held, &gate, &[], &ids[1..2], &sent)
            .await
            .is_err(),
        "the batch on the dropped connection fails"
    );
    let again = store
        .write_batch_on(&mut held, &gate, &[], &ids[1..2], &sent)
        .await
        .expect("the next batch is written on a fresh connection");
    assert!(again.marked.contains(&ids[1]));
    let rows = store.deliveries(run).await.unwrap();
    let status = |id: i64| rows.iter().find(|d| d.id == id).unwrap().status;
    assert_eq!(status(ids[0]), Status::Sent);
    assert_eq!(status(ids[1]), Status::Sending);
    assert_eq!(status(ids[2]), Status::Pending);
}

#[tokio::test]
async fn a_batch_of_outcomes_and_marks_probes_deliveries_by_key_on_a_fresh_table() {
    // A table never analyzed, as on a new install's first run: the planner
    // guessed a row or two of deliveries and scanned all of them, reading
    // the batch's ids once for each (8 to 26 ms a batch of 16 at 3,000).
    let Some(url) = postgres_url("write_plan") else {
        return;
    };
    let store = Store::open(&url).await.unwrap();
    listed(&store, "daily", 3000).await;
    let run = enqueue(&store, "daily").await;
    let ids: Vec<i64> = store
        .pending_page(&job("daily"), Audience::Listed, None, run, 0, 32)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let gate = ConsentGate::Unchecked;
    store
        .write_batch(&gate, &[], &ids[..16], &[])
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = ids[..16]
        .iter()
        .map(|id| Outcome::local(*id, Status::Sent, None))
        .collect();

    let mut tx = store.write().await.unwrap();
    let sql = format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {}",
        crate::storage::dialect::Dialect::record_and_mark(&super::Postgres).unwrap()
    );
    let q = super::super::sets::bind_outcomes(sqlx::query(sqlx::AssertSqlSafe(sql)), &outcomes)
        .bind("2026-11-25T01:00:00Z");
    let plan: Vec<String> = super::super::sets::bind_ids(q, &ids[16..])
        .bind(None::<String>)
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, 0))
        .collect();
    tx.rollback().await.unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan on deliveries"), "{plan}");
    assert!(plan.contains("deliveries_pkey"), "{plan}");
    // Each loop over deliveries reads at most the batch, never the table.
    assert!(!plan.contains("loops=3000"), "{plan}");
}

#[tokio::test]
async fn a_signal_for_a_job_wakes_another_instances_waiter_for_that_job_only() {
    let Some(url) =
        postgres_url("a_signal_for_a_job_wakes_another_instances_waiter_for_that_job_only")
    else {
        return;
    };
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    let wait = std::time::Duration::from_secs(10);
    let mut changes = a.run_changes();
    // Once listening, it says that it may have missed what came before.
    tokio::time::timeout(wait, changes.changed(&job("daily")))
        .await
        .expect("told once it listens");
    b.signal_job(&job("weekly")).await;
    let daily = job("daily");
    let quiet = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        changes.changed(&daily),
    );
    assert!(
        quiet.await.is_err(),
        "another job's signal wakes nobody waiting on daily"
    );
    let woken = tokio::spawn(async move {
        changes.changed(&job("daily")).await;
        changes
    });
    b.signal_job(&job("daily")).await;
    let mut changes = tokio::time::timeout(wait, woken)
        .await
        .expect("woken by daily's signal")
        .unwrap();
    // A rescue's return of a dead instance's deliveries says so too.
    sqlx::query(
        "INSERT INTO instances (id, host, pid, version, role, started_at, heartbeat_ms, lease_ms) \
         VALUES ('dead-one', 'h', 1, 'v', 'daemon', '', 0, 1)",
    )
    .execute(&a.pool)
    .await
    .unwrap();
    listed(&a, "daily", 3).await;
    let run = enqueue(&a, "daily").await;
    sqlx::query("UPDATE deliveries SET owner = 'dead-one' WHERE run_id = $1")
        .bind(run)
        .execute(&a.pool)
        .await
        .unwrap();
    let rescue = b.rescue_dead(Status::Unknown, &[]).await.unwrap();
    assert_eq!(rescue.returned, 3, "{rescue:?}");
    tokio::time::timeout(wait, changes.changed(&job("daily")))
        .await
        .expect("woken by the rescue");
    // SQLite shares no run with another process: nothing ever wakes it.
    let sqlite = Store::open("sqlite::memory:").await.unwrap();
    let mut never = sqlite.run_changes();
    sqlite.signal_job(&job("daily")).await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), never.changed(&daily));
    assert!(quiet.await.is_err());
}
