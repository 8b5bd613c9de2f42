-- Several mini programs in one database (#13): an openid and a template id only
-- mean something within one AppID, so consent, intake data, the template
-- catalog and WeChat's pushes are keyed by the AppID too, and a run remembers
-- its app so that credits are settled against that app's consent.
-- Rows written before this are the default app's; `appid = ''` marks them until
-- the first start with a config names that app (`Store::adopt_unkeyed`).

ALTER TABLE runs ADD COLUMN appid TEXT NOT NULL DEFAULT '';

CREATE TABLE subscribers_new (
    appid      TEXT NOT NULL,
    openid     TEXT NOT NULL,
    name       TEXT,
    vars       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (appid, openid)
);
INSERT INTO subscribers_new (appid, openid, name, vars, created_at, updated_at)
    SELECT '', openid, name, vars, created_at, updated_at FROM subscribers;
DROP TABLE subscribers;
ALTER TABLE subscribers_new RENAME TO subscribers;

CREATE TABLE consents_new (
    appid           TEXT    NOT NULL,
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
    PRIMARY KEY (appid, openid, template_id)
);
INSERT INTO consents_new (appid, openid, template_id, status, credits, reserved, unpaired_intake,
                          unpaired_event, pair_until, source, updated_at)
    SELECT '', openid, template_id, status, credits, reserved, unpaired_intake,
           unpaired_event, pair_until, source, updated_at FROM consents;
DROP TABLE consents;
ALTER TABLE consents_new RENAME TO consents;
CREATE INDEX consents_template ON consents (appid, template_id, openid);

CREATE TABLE templates_new (
    appid       TEXT NOT NULL,
    template_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    keywords    TEXT NOT NULL,
    fetched_at  TEXT NOT NULL,
    PRIMARY KEY (appid, template_id)
);
INSERT INTO templates_new (appid, template_id, kind, title, keywords, fetched_at)
    SELECT '', template_id, kind, title, keywords, fetched_at FROM templates;
DROP TABLE templates;
ALTER TABLE templates_new RENAME TO templates;

CREATE TABLE sent_events_new (
    appid        TEXT    NOT NULL,
    msgid        TEXT    NOT NULL,
    openid       TEXT    NOT NULL,
    template_id  TEXT    NOT NULL,
    error_code   INTEGER NOT NULL,
    error_status TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    PRIMARY KEY (appid, msgid)
);
INSERT INTO sent_events_new (appid, msgid, openid, template_id, error_code, error_status, received_at)
    SELECT '', msgid, openid, template_id, error_code, error_status, received_at FROM sent_events;
DROP TABLE sent_events;
ALTER TABLE sent_events_new RENAME TO sent_events;
