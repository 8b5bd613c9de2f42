-- `wxpush send JOB --to OPENID`: test messages, kept apart from runs so that a
-- test is never taken as a slot's run or as schedule history. `forget` and
-- `[retention]` treat them like deliveries.
CREATE TABLE test_sends (
    id          INTEGER PRIMARY KEY,
    job         TEXT    NOT NULL,
    openid      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    errcode     INTEGER,
    errmsg      TEXT,
    msgid       TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
