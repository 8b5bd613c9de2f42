-- Recipients of a job. Rows from the config file carry source = 'config' and are
-- the only ones that a config sync may deactivate.
CREATE TABLE recipients (
    job        TEXT    NOT NULL,
    openid     TEXT    NOT NULL,
    name       TEXT,
    vars       TEXT    NOT NULL DEFAULT '{}',
    source     TEXT    NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (job, openid)
);

-- One firing of one job for one scheduled slot; the unique key makes enqueueing idempotent.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    slot        TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    UNIQUE (job, slot)
);

-- One row per recipient per run; the unique key is what stops a second message in one run.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    openid     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    errcode    INTEGER,
    errmsg     TEXT,
    msgid      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    UNIQUE (run_id, openid)
);
-- Not on status: every delivery changes status twice, and an index on it would be
-- rewritten each time. Pending rows are found by scanning a run forward from a
-- cursor, where nearly all rows are still pending.
CREATE INDEX deliveries_run ON deliveries (run_id, id);

-- The cached access_token, shared by every wxpush process that uses this database.
CREATE TABLE access_tokens (
    appid      TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    fetched_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (appid, source)
);

-- force_refresh of the stable token is limited to 20 a day, 30 s apart.
CREATE TABLE token_force_refreshes (
    appid TEXT    NOT NULL,
    at    INTEGER NOT NULL
);
