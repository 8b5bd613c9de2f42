-- The template a run sends, fixed when it is enqueued, so that a resumed run settles
-- consent credits against the template it actually used.
ALTER TABLE runs ADD COLUMN template_id TEXT;

-- 1 while a delivery holds one of its recipient's one-time credits (from the claim
-- until the outcome settles it), so that a crash in between can be settled too.
ALTER TABLE deliveries ADD COLUMN credit INTEGER NOT NULL DEFAULT 0;

-- The account's templates as /wxaapi/newtmpl/gettemplate lists them.
CREATE TABLE templates (
    template_id TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    keywords    TEXT    NOT NULL,
    fetched_at  TEXT    NOT NULL
);

-- People who came through the intake API, with what the mini program sent about them.
CREATE TABLE subscribers (
    openid     TEXT NOT NULL PRIMARY KEY,
    name       TEXT,
    vars       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Consent per person and template. One-time templates count credits (one per
-- acceptance, one used per message); `reserved` counts credits held by sends in
-- flight. Long-term templates only use `status`.
-- One tap on "accept" can arrive twice: reported by the mini program and pushed
-- by WeChat. `unpaired_intake` / `unpaired_event` count recent acceptances seen
-- from one side only, so that the other side's copy pairs with one instead of
-- adding a second credit; they lapse at `pair_until`.
CREATE TABLE consents (
    openid          TEXT    NOT NULL,
    template_id     TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    credits         INTEGER NOT NULL DEFAULT 0,
    reserved        INTEGER NOT NULL DEFAULT 0,
    unpaired_intake INTEGER NOT NULL DEFAULT 0,
    unpaired_event  INTEGER NOT NULL DEFAULT 0,
    pair_until      TEXT,
    source          TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (openid, template_id)
);
-- For `audience = "subscribed"`: everyone with consent for one template.
CREATE INDEX consents_template ON consents (template_id, openid);

-- Event pushes already applied: WeChat retries a push it got no answer to, and a
-- retried acceptance must not add a second credit.
CREATE TABLE consent_events (
    event_key   TEXT NOT NULL PRIMARY KEY,
    received_at TEXT NOT NULL
);

-- subscribe_msg_sent_event results, matched to deliveries by msgid when read.
-- Kept apart from deliveries so that sending never maintains an index on msgid.
CREATE TABLE sent_events (
    msgid       TEXT    NOT NULL PRIMARY KEY,
    openid      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    error_code  INTEGER NOT NULL,
    error_status TEXT   NOT NULL,
    received_at TEXT    NOT NULL
);
