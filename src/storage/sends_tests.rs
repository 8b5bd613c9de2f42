//! Sends on demand at the storage level, on every backend: one send per key
//! however requests race, a cancel and a claim never both winning, expiry,
//! credits held and settled, and a crash's requests ending `unknown`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::test_stores::each_backend;
use super::{Accepted, Cancel, Claim, DueSend, NewSend, SendFilter, Store};
use crate::domain::test_ids::{app, oid, tmpl};
use crate::domain::{AppId, CancelKey, IdempotencyKey, OpenId, SendStatus, TemplateId};

pub(super) fn t0() -> DateTime<Utc> {
    "2026-12-05T01:00:00Z".parse().unwrap()
}

pub(super) struct Ids {
    pub(super) app: AppId,
    pub(super) who: OpenId,
    pub(super) template: TemplateId,
}

pub(super) fn ids() -> Ids {
    Ids {
        app: app("1"),
        who: oid("oPerson000000000000000000000"),
        template: tmpl("t"),
    }
}

/// A send of `key`, due at `t0` plus `due_in` minutes, expiring an hour later.
/// `claim_send` of send `id`, as a sender that found it due would call it.
pub(super) async fn claim(store: &Store, id: i64, owner: &str) -> Claim {
    claim_as_of(store, id, owner, t0(), None).await
}

/// `claim` as of `at`, under `policy` (with its recipients' default zone).
pub(super) async fn claim_as_of(
    store: &Store,
    id: i64,
    owner: &str,
    at: DateTime<Utc>,
    policy: Option<(&crate::domain::policy::Policy, chrono_tz::Tz)>,
) -> Claim {
    let send = store.send_by_id(id).await.unwrap().unwrap();
    let due = DueSend {
        id,
        appid: send.appid,
        one_time: send.one_time,
        job: send.job,
        policy: send.policy,
    };
    store.claim_send(&due, owner, at, policy).await.unwrap()
}

pub(super) fn new_send<'a>(
    ids: &'a Ids,
    key: &'a IdempotencyKey,
    due_in: i64,
    one_time: bool,
) -> NewSend<'a> {
    let send_at = t0() + Duration::minutes(due_in);
    NewSend {
        appid: &ids.app,
        key,
        request: r#"{"to":"oPerson"}"#,
        openid: &ids.who,
        template_id: &ids.template,
        job: None,
        one_time,
        message: r#"{"data":{}}"#,
        cancel_key: None,
        metadata: None,
        send_at,
        expires_at: send_at + Duration::hours(1),
        tz: None,
        policy: None,
        digest: "",
    }
}

pub(super) fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

pub(super) async fn accepted(store: &Store, send: &NewSend<'_>) -> i64 {
    match store.accept_send(send).await.unwrap() {
        Accepted::New(row) | Accepted::Existing(row) => row.id,
    }
}

pub(super) async fn status(store: &Store, id: i64) -> SendStatus {
    store.send_by_id(id).await.unwrap().unwrap().status
}

pub(super) async fn credit(store: &Store, ids: &Ids, credits: i64) {
    sqlx::query(
        "INSERT INTO consents (appid, openid, template_id, status, credits, reserved, source, updated_at) \
         VALUES ($1, $2, $3, 'accept', $4, 0, 'intake', '')",
    )
    .bind(ids.app.as_ref())
    .bind(ids.who.as_ref())
    .bind(ids.template.as_ref())
    .bind(credits)
    .execute(&store.pool)
    .await
    .unwrap();
}

pub(super) async fn credits(store: &Store) -> (i64, i64) {
    sqlx::query_as("SELECT credits, reserved FROM consents")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_makes_one_send_and_a_retry_with_it_finds_that_send() {
    for store in each_backend("a_key_makes_one_send_and_a_retry_with_it_finds_that_send").await {
        let ids = ids();
        let k = key("order-shipped:42");
        let first = store
            .accept_send(&new_send(&ids, &k, 0, false))
            .await
            .unwrap();
        let Accepted::New(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!(first.status, SendStatus::Pending);
        let mut other = new_send(&ids, &k, 5, false);
        other.request = r#"{"to":"someone else"}"#;
        let again = store.accept_send(&other).await.unwrap();
        assert_eq!(
            again,
            Accepted::Existing(first.clone()),
            "the first request's send"
        );
        // The same key in another app is another send.
        let elsewhere = app("2");
        let mut there = new_send(&ids, &k, 0, false);
        there.appid = &elsewhere;
        assert!(matches!(
            store.accept_send(&there).await.unwrap(),
            Accepted::New(_)
        ));
        let all = store
            .list_sends(&SendFilter {
                limit: 10,
                ..SendFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }
}

#[tokio::test]
async fn requests_racing_with_one_key_make_one_send() {
    for store in each_backend("requests_racing_with_one_key_make_one_send").await {
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let ids = ids();
                let k = key("pickup:7");
                store
                    .accept_send(&new_send(&ids, &k, 0, false))
                    .await
                    .unwrap()
            }));
        }
        let mut new = 0;
        let mut seen = std::collections::HashSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Accepted::New(row) => {
                    new += 1;
                    seen.insert(row.id);
                }
                Accepted::Existing(row) => {
                    seen.insert(row.id);
                }
            }
        }
        assert_eq!(new, 1, "exactly one request made the send");
        assert_eq!(seen.len(), 1, "every request names the same send");
    }
}

#[tokio::test]
async fn a_cancel_and_a_claim_racing_never_both_win() {
    for store in each_backend("a_cancel_and_a_claim_racing_never_both_win").await {
        let store = Arc::new(store);
        let ids = ids();
        let mut sends = Vec::new();
        for i in 0..200 {
            let k = key(&format!("race:{i}"));
            sends.push(accepted(&store, &new_send(&ids, &k, 0, false)).await);
        }
        let mut rounds = Vec::new();
        for (i, id) in sends.into_iter().enumerate() {
            let (a, b) = (Arc::clone(&store), Arc::clone(&store));
            let cancel = async move { a.cancel_send(id).await.unwrap() };
            let claim = async move { claim(&b, id, "me").await };
            // Each side starts first in half the rounds.
            let (cancel, claim) = if i % 2 == 0 {
                (tokio::spawn(cancel), tokio::spawn(claim))
            } else {
                let claim = tokio::spawn(claim);
                (tokio::spawn(cancel), claim)
            };
            rounds.push((id, cancel, claim));
        }
        let (mut cancelled, mut claimed) = (0, 0);
        for (id, cancel, claim) in rounds {
            let (cancel, claim) = (cancel.await.unwrap(), claim.await.unwrap());
            match (cancel, &claim) {
                (Cancel::Cancelled, Claim::Lost) => {
                    cancelled += 1;
                    assert_eq!(status(&store, id).await, SendStatus::Cancelled);
                }
                (Cancel::TooLate(SendStatus::Sending), Claim::Claimed(_)) => {
                    claimed += 1;
                    assert_eq!(status(&store, id).await, SendStatus::Sending);
                }
                other => panic!("send {id}: {other:?}"),
            }
        }
        assert_eq!(cancelled + claimed, 200);
        eprintln!("{cancelled} cancelled, {claimed} claimed");
    }
}

#[tokio::test]
async fn a_claim_takes_only_a_due_pending_send_and_expiry_ends_the_rest_unsent() {
    for store in
        each_backend("a_claim_takes_only_a_due_pending_send_and_expiry_ends_the_rest_unsent").await
    {
        let ids = ids();
        let (now, later, old) = (key("now"), key("later"), key("old"));
        let due = accepted(&store, &new_send(&ids, &now, 0, false)).await;
        let future = accepted(&store, &new_send(&ids, &later, 30, false)).await;
        let stale = accepted(&store, &new_send(&ids, &old, -120, false)).await;
        assert_eq!(
            store.next_send_at().await.unwrap(),
            Some(t0() - Duration::minutes(120))
        );
        assert_eq!(
            store.due_sends(t0(), 10).await.unwrap(),
            vec![DueSend {
                id: due,
                appid: ids.app.as_ref().to_owned(),
                one_time: false,
                job: None,
                policy: None,
            }],
            "not the expired one"
        );
        assert_eq!(claim(&store, future, "me").await, Claim::Lost);
        assert_eq!(claim(&store, stale, "me").await, Claim::Lost);
        assert!(matches!(claim(&store, due, "me").await, Claim::Claimed(_)));
        assert_eq!(claim(&store, due, "you").await, Claim::Lost, "once");
        assert_eq!(store.expire_sends(t0()).await.unwrap().len(), 1);
        assert_eq!(status(&store, stale).await, SendStatus::Expired);
        assert_eq!(status(&store, future).await, SendStatus::Pending);
        assert_eq!(
            store.next_send_at().await.unwrap(),
            Some(t0() + Duration::minutes(30))
        );
        // Another owner cannot record its outcome; the holder can, once.
        assert!(
            !store
                .finish_send(due, "you", SendStatus::Sent, Some(0), None, Some(7))
                .await
                .unwrap()
        );
        assert!(
            store
                .finish_send(due, "me", SendStatus::Sent, Some(0), None, Some(7))
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_send(due, "me", SendStatus::Failed, None, None, None)
                .await
                .unwrap()
        );
        let row = store.send_by_id(due).await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.msgid.as_deref(), row.attempts),
            (SendStatus::Sent, Some("7"), 1)
        );
        // Cancels: again is fine, too late says why, an unknown id is not found.
        assert_eq!(store.cancel_send(future).await.unwrap(), Cancel::Cancelled);
        assert_eq!(
            store.cancel_send(future).await.unwrap(),
            Cancel::AlreadyCancelled
        );
        assert_eq!(
            store.cancel_send(due).await.unwrap(),
            Cancel::TooLate(SendStatus::Sent)
        );
        assert_eq!(store.cancel_send(999_999).await.unwrap(), Cancel::NotFound);
        assert_eq!(store.next_send_at().await.unwrap(), None);
    }
}

#[tokio::test]
async fn cancelling_by_key_cancels_only_that_groups_untaken_sends() {
    for store in each_backend("cancelling_by_key_cancels_only_that_groups_untaken_sends").await {
        let ids = ids();
        let order = CancelKey::parse("order:9").unwrap();
        let mut group = Vec::new();
        for i in 0..3 {
            let k = key(&format!("g{i}"));
            let mut s = new_send(&ids, &k, 0, false);
            s.cancel_key = Some(&order);
            group.push(accepted(&store, &s).await);
        }
        let lone = key("lone");
        let other = accepted(&store, &new_send(&ids, &lone, 0, false)).await;
        assert!(matches!(
            claim(&store, group[0], "me").await,
            Claim::Claimed(_)
        ));
        assert_eq!(
            store.cancel_sends_by_key(&ids.app, &order).await.unwrap(),
            (2, 1),
            "the one taken is too late"
        );
        assert_eq!(status(&store, group[0]).await, SendStatus::Sending);
        assert_eq!(status(&store, group[1]).await, SendStatus::Cancelled);
        assert_eq!(status(&store, other).await, SendStatus::Pending);
        let listed = store
            .list_sends(&SendFilter {
                cancel_key: Some(&order),
                status: Some(SendStatus::Cancelled),
                limit: 10,
                ..SendFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id).collect::<Vec<_>>(),
            group[1..].to_vec()
        );
    }
}

#[tokio::test]
async fn a_one_time_send_holds_a_credit_and_settles_it_as_a_delivery_would() {
    for store in
        each_backend("a_one_time_send_holds_a_credit_and_settles_it_as_a_delivery_would").await
    {
        let ids = ids();
        // No consent: skipped, no request to make.
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let none = accepted(&store, &new_send(&ids, &a, 0, true)).await;
        assert_eq!(claim(&store, none, "me").await, Claim::Skipped);
        assert_eq!(status(&store, none).await, SendStatus::Skipped);
        // One credit: the first claim holds it, the second finds none.
        credit(&store, &ids, 1).await;
        let first = accepted(&store, &new_send(&ids, &b, 0, true)).await;
        let second = accepted(&store, &new_send(&ids, &c, 0, true)).await;
        assert!(matches!(
            claim(&store, first, "me").await,
            Claim::Claimed(_)
        ));
        assert_eq!(credits(&store).await, (1, 1));
        assert_eq!(claim(&store, second, "me").await, Claim::Skipped);
        // A failure releases it; sent spends it.
        assert!(
            store
                .finish_send(first, "me", SendStatus::Failed, Some(-1), None, None)
                .await
                .unwrap()
        );
        assert_eq!(credits(&store).await, (1, 0));
        let d = key("d");
        let third = accepted(&store, &new_send(&ids, &d, 0, true)).await;
        assert!(matches!(
            claim(&store, third, "me").await,
            Claim::Claimed(_)
        ));
        assert!(
            store
                .finish_send(third, "me", SendStatus::Sent, Some(0), None, Some(1))
                .await
                .unwrap()
        );
        assert_eq!(credits(&store).await, (0, 0));
    }
}

#[tokio::test]
async fn a_crash_leaves_its_requests_unknown_with_their_credits_spent_and_others_alone() {
    for store in each_backend(
        "a_crash_leaves_its_requests_unknown_with_their_credits_spent_and_others_alone",
    )
    .await
    {
        let ids = ids();
        credit(&store, &ids, 2).await;
        let (a, b) = (key("a"), key("b"));
        let mine = accepted(&store, &new_send(&ids, &a, 0, true)).await;
        let waiting = accepted(&store, &new_send(&ids, &b, 0, true)).await;
        assert!(matches!(
            claim(&store, mine, "gone").await,
            Claim::Claimed(_)
        ));
        assert_eq!(credits(&store).await, (2, 1));
        // "gone" is registered nowhere: its request may have gone out.
        assert_eq!(store.recover_sends(Some("me")).await.unwrap(), 1);
        let row = store.send_by_id(mine).await.unwrap().unwrap();
        assert_eq!(row.status, SendStatus::Unknown);
        assert_eq!(
            credits(&store).await,
            (1, 0),
            "spent, as an unknown delivery's is"
        );
        assert_eq!(
            status(&store, waiting).await,
            SendStatus::Pending,
            "never sent: still due"
        );
        assert_eq!(store.recover_sends(Some("me")).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn forgetting_a_person_cancels_their_untaken_sends_and_drops_what_names_them() {
    for store in
        each_backend("forgetting_a_person_cancels_their_untaken_sends_and_drops_what_names_them")
            .await
    {
        let ids = ids();
        let (a, b) = (key("a"), key("b"));
        let mut s = new_send(&ids, &a, 0, false);
        s.metadata = Some(r#"{"order":"42"}"#);
        let waiting = accepted(&store, &s).await;
        let taken = accepted(&store, &new_send(&ids, &b, 0, false)).await;
        assert!(matches!(
            claim(&store, taken, "me").await,
            Claim::Claimed(_)
        ));
        store
            .forget(&ids.app, &ids.who, &super::JobSet::Only(Vec::new()))
            .await
            .unwrap();
        let row = store.send_by_id(waiting).await.unwrap().unwrap();
        assert_eq!(
            row.status,
            SendStatus::Cancelled,
            "never sent after erasure"
        );
        assert_eq!(
            (row.openid.as_str(), row.metadata),
            (format!("forgotten-{waiting}").as_str(), None)
        );
        assert_eq!(claim(&store, waiting, "me").await, Claim::Lost);
        // The request in flight still records its outcome.
        assert!(
            store
                .finish_send(taken, "me", SendStatus::Sent, Some(0), None, Some(3))
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn retention_prunes_ended_sends_and_never_one_that_may_still_go() {
    for store in each_backend("retention_prunes_ended_sends_and_never_one_that_may_still_go").await
    {
        let ids = ids();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let ended = accepted(&store, &new_send(&ids, &a, 0, false)).await;
        let waiting = accepted(&store, &new_send(&ids, &b, 0, false)).await;
        let taken = accepted(&store, &new_send(&ids, &c, 0, false)).await;
        assert_eq!(store.cancel_send(ended).await.unwrap(), Cancel::Cancelled);
        assert!(matches!(
            claim(&store, taken, "me").await,
            Claim::Claimed(_)
        ));
        // Sends (their keys) have a cut-off of their own: one in the past
        // keeps the ended send, whatever the history's cut-off.
        let (future, past) = (
            Utc::now() + Duration::days(1),
            Utc::now() - Duration::days(1),
        );
        store.prune(future, past, 100, &[]).await.unwrap();
        assert!(
            store.send_by_id(ended).await.unwrap().is_some(),
            "its key is kept"
        );
        // Everything is older than a cut-off in the future.
        store.prune(future, future, 100, &[]).await.unwrap();
        assert!(
            store.send_by_id(ended).await.unwrap().is_none(),
            "ended: pruned"
        );
        assert!(
            store.send_by_id(waiting).await.unwrap().is_some(),
            "may still go"
        );
        assert!(
            store.send_by_id(taken).await.unwrap().is_some(),
            "in flight"
        );
    }
}
