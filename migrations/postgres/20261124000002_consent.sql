-- See migrations/sqlite/20261124000002_consent.sql for what each table is for.
ALTER TABLE runs ADD COLUMN template_id TEXT;

ALTER TABLE deliveries ADD COLUMN credit BIGINT NOT NULL DEFAULT 0;

CREATE TABLE templates (
    template_id TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    keywords    TEXT NOT NULL,
    fetched_at  TEXT NOT NULL
);

CREATE TABLE subscribers (
    openid     TEXT NOT NULL PRIMARY KEY,
    name       TEXT,
    vars       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE consents (
    openid          TEXT   NOT NULL,
    template_id     TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    credits         BIGINT NOT NULL DEFAULT 0,
    reserved        BIGINT NOT NULL DEFAULT 0,
    unpaired_intake BIGINT NOT NULL DEFAULT 0,
    unpaired_event  BIGINT NOT NULL DEFAULT 0,
    pair_until      TEXT,
    source          TEXT   NOT NULL,
    updated_at      TEXT   NOT NULL,
    PRIMARY KEY (openid, template_id)
);
CREATE INDEX consents_template ON consents (template_id, openid);

CREATE TABLE consent_events (
    event_key   TEXT NOT NULL PRIMARY KEY,
    received_at TEXT NOT NULL
);

CREATE TABLE sent_events (
    msgid        TEXT   NOT NULL PRIMARY KEY,
    openid       TEXT   NOT NULL,
    template_id  TEXT   NOT NULL,
    error_code   BIGINT NOT NULL,
    error_status TEXT   NOT NULL,
    received_at  TEXT   NOT NULL
);
