//! Sends on demand: accepted once per idempotency key; cancelled, claimed and
//! expired each by one guarded statement on the send's row (`status =
//! 'pending'`), so that of a cancel and a claim exactly one wins; a held
//! one-time credit settled as a run's deliveries settle theirs.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::db::Row;
use super::send_claims::DueSend;
use super::settle::settle_credit;
use super::tx::WriteTx;
use super::{Context, StorageError, Store, now, ts};
use crate::domain::{AppId, CancelKey, IdempotencyKey, JobName, OpenId, SendStatus, TemplateId};

/// A send as the caller asked for it, checked and rendered, to be accepted.
#[derive(Debug, Clone)]
pub struct NewSend<'a> {
    /// The mini program it is sent for.
    pub appid: &'a AppId,
    /// The caller's key: one send per key and app.
    pub key: &'a IdempotencyKey,
    /// The request in canonical JSON, compared with a retry's.
    pub request: &'a str,
    /// Who gets it.
    pub openid: &'a OpenId,
    /// Its template.
    pub template_id: &'a TemplateId,
    /// The job whose defaults it took, if any.
    pub job: Option<&'a JobName>,
    /// Whether the template is one-time (each message needs a credit).
    pub one_time: bool,
    /// The checked body for `subscribeMessage.send`, in JSON (no token).
    pub message: &'a str,
    /// The caller's group name for a bulk cancel.
    pub cancel_key: Option<&'a CancelKey>,
    /// The caller's metadata object in JSON: stored and shown, never sent.
    pub metadata: Option<&'a str>,
    /// When it may go.
    pub send_at: DateTime<Utc>,
    /// After this it is never sent.
    pub expires_at: DateTime<Utc>,
    /// The recipient's time zone (IANA), for its policy's quiet hours and calendar days.
    pub tz: Option<&'a str>,
    /// Its own policy layer, in JSON.
    pub policy: Option<&'a str>,
    /// The digest of its template and rendered data, for dedupe.
    pub digest: &'a str,
}

/// A stored send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRow {
    /// Its id, as callers name it.
    pub id: i64,
    /// The AppID it is sent for.
    pub appid: String,
    /// The caller's idempotency key.
    pub idem_key: String,
    /// The request as accepted, in canonical JSON.
    pub request: String,
    /// Who gets it.
    pub openid: String,
    /// Its template.
    pub template_id: String,
    /// The job whose defaults it took.
    pub job: Option<String>,
    /// Whether the template is one-time.
    pub one_time: bool,
    /// The body for WeChat, in JSON.
    pub message: String,
    /// The caller's group name.
    pub cancel_key: Option<String>,
    /// The caller's metadata, in JSON.
    pub metadata: Option<String>,
    /// When it may go (RFC 3339, UTC).
    pub send_at: String,
    /// When it expires unsent (RFC 3339, UTC).
    pub expires_at: String,
    /// Where it stands.
    pub status: SendStatus,
    /// Requests made for it.
    pub attempts: i64,
    /// WeChat's errcode, if one came back.
    pub errcode: Option<i64>,
    /// WeChat's errmsg or the local reason.
    pub errmsg: Option<String>,
    /// The msgid of an accepted message.
    pub msgid: Option<String>,
    /// When it was accepted.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The recipient's time zone, if given.
    pub tz: Option<String>,
    /// Its own policy layer, in JSON.
    pub policy: Option<String>,
    /// While a policy defers it: the rule (`quiet_hours`, `cap`); once a
    /// policy ended it, the rule that did.
    pub held: Option<String>,
    /// The digest of its template and rendered data.
    pub digest: Option<String>,
    /// The run's delivery it carries, when a policy deferred one.
    pub delivery_id: Option<i64>,
    /// WeChat's later `subscribe_msg_sent_event` for its msgid, once pushed
    /// (read by `send_by_id` and `list_sends`).
    pub event: Option<SentEvent>,
}

/// WeChat's final word on an accepted message (`subscribe_msg_sent_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEvent {
    /// `ErrorCode`: 0 when the person received it.
    pub error_code: i64,
    /// `ErrorStatus`: `success`, or why not (such as `fail_user_refuse`).
    pub error_status: String,
    /// When the push came.
    pub received_at: String,
}

/// What accepting a send found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new send, stored now.
    New(SendRow),
    /// The send an earlier request with the same key made (its request may differ).
    Existing(SendRow),
}

/// What a cancel of one send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Cancelled now: nobody gets it.
    Cancelled,
    /// Cancelled before (a repeated cancel).
    AlreadyCancelled,
    /// Too late: a sender took it, or it ended, as this says.
    TooLate(SendStatus),
    /// No such send.
    NotFound,
}

/// Which sends a listing shows, by id from `after` on.
#[derive(Debug, Clone, Default)]
pub struct SendFilter<'a> {
    /// Only those of this AppID.
    pub appid: Option<&'a AppId>,
    /// Only those in this status.
    pub status: Option<SendStatus>,
    /// Only those of this group.
    pub cancel_key: Option<&'a CancelKey>,
    /// Only those to this person.
    pub openid: Option<&'a OpenId>,
    /// Only ids above this.
    pub after: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// What wakes the sender of sends on demand before its next look.
pub struct SendWakes {
    here: std::sync::Arc<tokio::sync::Notify>,
    others: super::RunChanges,
}

impl SendWakes {
    /// Forgets what other instances signalled so far (a pass just looked).
    pub fn clear(&mut self) {
        self.others.clear();
    }

    /// Resolves when a due send may have been accepted since the last call.
    pub async fn added(&mut self) {
        tokio::select! {
            () = self.here.notified() => {}
            () = self.others.sends_added() => {}
        }
    }
}

pub(super) const COLUMNS: &str = "id, appid, idem_key, request, openid, template_id, job, one_time, \
    message, cancel_key, metadata, send_at, expires_at, status, attempts, errcode, errmsg, \
    msgid, created_at, updated_at, tz, policy, held, digest, delivery_id";

/// A select of sends (`s`) with their sent events joined by msgid.
pub(super) fn viewed(tail: &str) -> String {
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("s.{c}")).collect();
    format!(
        "SELECT {}, e.error_code AS event_code, e.error_status AS event_status, \
         e.received_at AS event_at FROM sends s \
         LEFT JOIN sent_events e ON e.appid = s.appid AND e.msgid = s.msgid {tail}",
        columns.join(", ")
    )
}

pub(super) fn send_row(row: &Row) -> Result<SendRow, StorageError> {
    // Only a `viewed` select has the event's columns.
    let event = row
        .try_get::<Option<i64>, _>("event_code")
        .ok()
        .flatten()
        .map(|error_code| SentEvent {
            error_code,
            error_status: row.get("event_status"),
            received_at: row.get("event_at"),
        });
    let status: String = row.get("status");
    let status = SendStatus::parse(&status)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        .context("decode a send's status")?;
    Ok(SendRow {
        id: row.get("id"),
        appid: row.get("appid"),
        idem_key: row.get("idem_key"),
        request: row.get("request"),
        openid: row.get("openid"),
        template_id: row.get("template_id"),
        job: row.get("job"),
        one_time: row.get::<i64, _>("one_time") != 0,
        message: row.get("message"),
        cancel_key: row.get("cancel_key"),
        metadata: row.get("metadata"),
        send_at: row.get("send_at"),
        expires_at: row.get("expires_at"),
        status,
        attempts: row.get("attempts"),
        errcode: row.get("errcode"),
        errmsg: row.get("errmsg"),
        msgid: row.get("msgid"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        tz: row.get("tz"),
        policy: row.get("policy"),
        held: row.get("held"),
        digest: row.get("digest"),
        delivery_id: row.get("delivery_id"),
        event,
    })
}

impl Store {
    /// Stores `send` under its key, or finds the send that key already made.
    /// One statement decides, so that requests racing with one key make one send.
    pub async fn accept_send(&self, send: &NewSend<'_>) -> Result<Accepted, StorageError> {
        let now = now();
        let sql = format!(
            "INSERT INTO sends (appid, idem_key, request, openid, template_id, job, one_time, \
             message, cancel_key, metadata, send_at, expires_at, status, created_at, updated_at, \
             tz, policy, digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $13, $14, $15, $16) \
             ON CONFLICT (appid, idem_key) DO NOTHING RETURNING {COLUMNS}"
        );
        let turn = self.sends_turn().await;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(send.appid.as_ref())
            .bind(send.key.as_ref())
            .bind(send.request)
            .bind(send.openid.as_ref())
            .bind(send.template_id.as_ref())
            .bind(send.job.map(AsRef::<str>::as_ref))
            .bind(i64::from(send.one_time))
            .bind(send.message)
            .bind(send.cancel_key.map(AsRef::<str>::as_ref))
            .bind(send.metadata)
            .bind(ts(send.send_at))
            .bind(ts(send.expires_at))
            .bind(&now)
            .bind(send.tz)
            .bind(send.policy)
            .bind(send.digest)
            .fetch_optional(&self.pool)
            .await
            .context("accept a send")?;
        drop(turn);
        if let Some(row) = inserted {
            return Ok(Accepted::New(send_row(&row)?));
        }
        let sql = format!("SELECT {COLUMNS} FROM sends WHERE appid = $1 AND idem_key = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(send.appid.as_ref())
            .bind(send.key.as_ref())
            .fetch_one(&self.pool)
            .await
            .context("find a send by its key")?;
        Ok(Accepted::Existing(send_row(&row)?))
    }

    /// The send `id`, if there is one.
    pub async fn send_by_id(&self, id: i64) -> Result<Option<SendRow>, StorageError> {
        let sql = viewed("WHERE s.id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("read a send")?
            .as_ref()
            .map(send_row)
            .transpose()
    }

    /// The sends `filter` keeps, by id.
    pub async fn list_sends(&self, filter: &SendFilter<'_>) -> Result<Vec<SendRow>, StorageError> {
        let mut conditions = vec!["s.id > $1".to_owned()];
        let mut values: Vec<String> = Vec::new();
        let mut keep = |column: &str, value: Option<&str>| {
            if let Some(v) = value {
                values.push(v.to_owned());
                conditions.push(format!("s.{column} = ${}", values.len() + 1));
            }
        };
        keep("appid", filter.appid.map(AsRef::as_ref));
        keep("status", filter.status.map(SendStatus::as_str));
        keep("cancel_key", filter.cancel_key.map(AsRef::as_ref));
        keep("openid", filter.openid.map(AsRef::as_ref));
        let sql = viewed(&format!(
            "WHERE {} ORDER BY s.id LIMIT {}",
            conditions.join(" AND "),
            filter.limit
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.after.unwrap_or(0));
        for v in values {
            q = q.bind(v);
        }
        q.fetch_all(&self.pool)
            .await
            .context("list sends")?
            .iter()
            .map(send_row)
            .collect()
    }

    /// Cancels send `id` if no sender has taken it: the same guarded row a claim
    /// takes, so a cancel that answers `Cancelled` means nobody gets it.
    pub async fn cancel_send(&self, id: i64) -> Result<Cancel, StorageError> {
        let _turn = self.sends_turn().await;
        // A sender may give the send back (no token came) between the UPDATE
        // and the read: it is pending again, and cancellable, so try again.
        loop {
            let done = sqlx::query(
                "UPDATE sends SET status = 'cancelled', updated_at = $2 \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(now())
            .execute(&self.pool)
            .await
            .context("cancel a send")?
            .rows_affected();
            if done == 1 {
                return Ok(Cancel::Cancelled);
            }
            return Ok(match self.send_by_id(id).await? {
                None => Cancel::NotFound,
                Some(s) if s.status == SendStatus::Pending => continue,
                Some(s) if s.status == SendStatus::Cancelled => Cancel::AlreadyCancelled,
                Some(s) => Cancel::TooLate(s.status),
            });
        }
    }

    /// Cancels every send of `key` that no sender has taken; returns how many,
    /// and how many of the key were too late (taken, or ended, before).
    pub async fn cancel_sends_by_key(
        &self,
        appid: &AppId,
        key: &CancelKey,
    ) -> Result<(u64, u64), StorageError> {
        let _turn = self.sends_turn().await;
        let cancelled = sqlx::query(
            "UPDATE sends SET status = 'cancelled', updated_at = $3 \
             WHERE appid = $1 AND cancel_key = $2 AND status = 'pending'",
        )
        .bind(appid.as_ref())
        .bind(key.as_ref())
        .bind(now())
        .execute(&self.pool)
        .await
        .context("cancel sends by key")?
        .rows_affected();
        // What a sender took (or what ended) before the cancel: too late.
        let too_late: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sends WHERE appid = $1 AND cancel_key = $2 \
             AND status NOT IN ('pending', 'cancelled')",
        )
        .bind(appid.as_ref())
        .bind(key.as_ref())
        .fetch_one(&self.pool)
        .await
        .context("cancel sends by key")?;
        Ok((cancelled, too_late.max(0) as u64))
    }

    /// This process's turn to write a send where the database has one writer
    /// (SQLite); correctness never rests on it, only latency.
    pub(super) async fn sends_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.dialect.one_writer() {
            Some(self.sends_turn.lock().await)
        } else {
            None
        }
    }

    /// Wakes the sender of sends on demand: a send accepted now is due.
    pub async fn send_due_now(&self) {
        self.sends_added.notify_one();
        // Only a hint (the others look every second anyway), but awaited: a
        // `sends add` would exit before a spawned signal went out.
        self.signal(super::postgres::SENDS).await;
    }

    /// What wakes the sender of sends on demand: a due send accepted by this
    /// process, or (PostgreSQL) by another.
    pub fn send_wakes(&self) -> SendWakes {
        SendWakes {
            here: std::sync::Arc::clone(&self.sends_added),
            others: self.run_changes(),
        }
    }

    /// When the next pending send may go (the first entry of `sends_due`).
    pub async fn next_send_at(&self) -> Result<Option<DateTime<Utc>>, StorageError> {
        let at: Option<String> =
            sqlx::query_scalar("SELECT MIN(send_at) FROM sends WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .context("find the next due send")?;
        at.map(|t| {
            t.parse::<DateTime<Utc>>()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
                .context("decode a send's time")
        })
        .transpose()
    }

    /// Up to `limit` pending sends due at `now` and not expired, oldest first
    /// (candidates: each is taken only by `claim_send`).
    pub async fn due_sends(
        &self,
        at: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueSend>, StorageError> {
        let sql = format!(
            "SELECT id, appid, one_time, job, policy FROM sends WHERE status = 'pending' AND send_at <= $1 \
             AND expires_at > $1 ORDER BY send_at, id LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(at))
            .fetch_all(&self.pool)
            .await
            .context("find due sends")?;
        Ok(rows
            .iter()
            .map(|r| DueSend {
                id: r.get("id"),
                appid: r.get("appid"),
                one_time: r.get::<i64, _>("one_time") != 0,
                job: r.get("job"),
                policy: r.get("policy"),
            })
            .collect())
    }

    /// Ends every pending send whose `expires_at` has come as `expired`
    /// (never sent late); returns each one's AppID. Only due ones are looked
    /// at (`expires_at` is after `send_at`): an index range, however many
    /// are scheduled later.
    pub async fn expire_sends(&self, at: DateTime<Utc>) -> Result<Vec<String>, StorageError> {
        let _turn = self.sends_turn().await;
        sqlx::query_scalar(
            "UPDATE sends SET status = 'expired', errmsg = CASE WHEN held IS NULL \
             THEN 'not sent before its expires_at' ELSE 'held by ' || held || ' past its deadline' END, \
             updated_at = $2 WHERE status = 'pending' AND send_at <= $1 AND expires_at <= $1 \
             RETURNING appid",
        )
        .bind(ts(at))
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .context("expire sends")
    }

    /// Pending sends: how many are scheduled after `at`, and how many are due.
    /// Two counts on the `sends_due` index alone (no row is read).
    pub async fn send_queue(&self, at: DateTime<Utc>) -> Result<(i64, i64), StorageError> {
        let count = |cmp: &'static str| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM sends WHERE status = 'pending' AND send_at {cmp} $1"
            )))
            .bind(ts(at))
            .fetch_one(&self.pool)
        };
        let later = count(">").await.context("count the waiting sends")?;
        let due = count("<=").await.context("count the waiting sends")?;
        Ok((later, due))
    }

    /// Records how send `id`, taken by `owner`, ended, and settles the credit it
    /// held as a delivery's would be. False if `owner` no longer holds it.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_send(
        &self,
        id: i64,
        owner: &str,
        status: SendStatus,
        errcode: Option<i64>,
        errmsg: Option<&str>,
        msgid: Option<u64>,
    ) -> Result<bool, StorageError> {
        let _turn = self.sends_turn().await;
        debug_assert!(status.is_final(), "{status:?} does not end a send");
        let record = "UPDATE sends SET status = $3, errcode = $4, errmsg = $5, msgid = $6, \
             owner = NULL, updated_at = $7 WHERE id = $1 AND status = 'sending' AND owner = $2";
        let msgid = msgid.map(|m| m.to_string());
        let outcome = |sql: String| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(owner)
                .bind(status.as_str())
                .bind(errcode)
                .bind(errmsg)
                .bind(msgid.clone())
                .bind(now())
        };
        // Most sends hold no credit: one statement, committed on its own.
        let plain = outcome(format!("{record} AND held_credit = 0"))
            .execute(&self.pool)
            .await
            .context("record a send's outcome")?;
        if plain.rows_affected() == 1 {
            return Ok(true);
        }
        let mut tx = WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("record a send's outcome")?;
        let row = outcome(format!(
            "{record} RETURNING appid, openid, template_id, held_credit"
        ))
        .fetch_optional(&mut *tx)
        .await
        .context("record a send's outcome")?;
        let Some(row) = row else {
            tx.rollback().await.context("record a send's outcome")?;
            return Ok(false);
        };
        if row.get::<i64, _>("held_credit") != 0 {
            settle_one(&mut tx, &row, status).await?;
        }
        tx.commit().await.context("record a send's outcome")?;
        Ok(true)
    }

    /// Gives send `id` back to pending when `owner` took it and made no request
    /// (no token came): its credit released, the attempt not counted.
    pub async fn release_send(&self, id: i64, owner: &str) -> Result<(), StorageError> {
        let _turn = self.sends_turn().await;
        let mut tx = WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("give a send back")?;
        let row = sqlx::query(
            "UPDATE sends SET status = 'pending', owner = NULL, attempts = attempts - 1, \
             updated_at = $3 WHERE id = $1 AND status = 'sending' AND owner = $2 \
             RETURNING appid, openid, template_id, held_credit",
        )
        .bind(id)
        .bind(owner)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .context("give a send back")?;
        if let Some(row) = row.filter(|r| r.get::<i64, _>("held_credit") != 0) {
            settle_one(&mut tx, &row, SendStatus::Pending).await?;
            sqlx::query("UPDATE sends SET held_credit = 0 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .context("give a send back")?;
        }
        tx.commit().await.context("give a send back")?;
        Ok(())
    }

    /// After a crash: sends left `sending` by nobody, by `me` (none of them in
    /// flight in this process) or by an instance no longer registered end
    /// `unknown` (the request may have gone out), their credits spent.
    pub async fn recover_sends(&self, me: Option<&str>) -> Result<u64, StorageError> {
        let _turn = self.sends_turn().await;
        let mut tx = WriteTx::begin(&self.pool, self.dialect)
            .await
            .context("recover sends")?;
        let n = settle_in_flight(
            &mut tx,
            "owner IS NULL OR owner = $2 OR owner NOT IN (SELECT id FROM instances)",
            me,
        )
        .await?;
        tx.commit().await.context("recover sends")?;
        Ok(n)
    }
}

/// Sends of a dead (or leaving) instance `owner` that are `sending` end
/// `unknown`, their credits spent, in the rescue's transaction.
pub(super) async fn settle_owner_sends(tx: &mut WriteTx, owner: &str) -> Result<u64, StorageError> {
    settle_in_flight(tx, "owner = $2", Some(owner)).await
}

/// Ends the `sending` sends `held` picks (a condition on `$2`) as `unknown`,
/// settling each one's credit; returns how many.
async fn settle_in_flight(
    tx: &mut WriteTx,
    held: &str,
    holder: Option<&str>,
) -> Result<u64, StorageError> {
    let sql = format!(
        "UPDATE sends SET status = 'unknown', owner = NULL, updated_at = $1, \
         errmsg = 'the sender stopped with the request in flight: it may have arrived' \
         WHERE status = 'sending' AND ({held}) \
         RETURNING appid, openid, template_id, held_credit"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now())
        .bind(holder)
        .fetch_all(&mut **tx)
        .await
        .context("settle sends in flight")?;
    // One settlement per send, even where one person has several.
    for row in rows.iter().filter(|r| r.get::<i64, _>("held_credit") != 0) {
        settle_one(tx, row, SendStatus::Unknown).await?;
    }
    Ok(rows.len() as u64)
}

/// Settles the credit one send (`row`: its appid, openid, template_id) held,
/// as ending in `status` says.
async fn settle_one(tx: &mut WriteTx, row: &Row, status: SendStatus) -> Result<(), StorageError> {
    // `status` is one of the enum's own spellings, never caller text.
    let sql = format!(
        "UPDATE consents SET {} WHERE appid = $1 AND openid = $2 AND template_id = $3",
        settle_credit(&format!("'{}'", status.as_str()))
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(row.get::<String, _>("appid"))
        .bind(row.get::<String, _>("openid"))
        .bind(row.get::<String, _>("template_id"))
        .execute(&mut **tx)
        .await
        .context("settle a send's credit")?;
    Ok(())
}
