-- Sends on demand (POST /v1/sends, `wxpush sends add`): one message to one
-- person at a time the caller chose. The unique key is the caller's
-- idempotency key, per AppID: a retried request finds the send it made.
-- `request` is the accepted request in canonical JSON (a retry is compared
-- with it), `message` the checked body for WeChat (never the token),
-- `held_credit` 1 while the send holds a one-time credit. Cancelling and
-- claiming are each one guarded UPDATE of the row (`status = 'pending'`), so
-- that a cancel and a claim cannot both win.
CREATE TABLE sends (
    id          INTEGER PRIMARY KEY,
    appid       TEXT    NOT NULL,
    idem_key    TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    openid      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    job         TEXT,
    one_time    INTEGER NOT NULL DEFAULT 0,
    message     TEXT    NOT NULL,
    cancel_key  TEXT,
    metadata    TEXT,
    send_at     TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    owner       TEXT,
    held_credit INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    errcode     INTEGER,
    errmsg      TEXT,
    msgid       TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    UNIQUE (appid, idem_key)
);
-- Pending sends by time: the next due one is the first entry, however many
-- have ended (they leave the index).
CREATE INDEX sends_due ON sends (send_at) WHERE status = 'pending';
CREATE INDEX sends_cancel_key ON sends (appid, cancel_key) WHERE cancel_key IS NOT NULL;
