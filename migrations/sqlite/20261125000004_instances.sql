-- The wxpush processes using this database, each heart-beating while it runs.
-- An instance that stops heart-beating for longer than its lease is dead: its
-- deliveries in flight are settled by a survivor (see `owner`).
CREATE TABLE instances (
    id           TEXT    NOT NULL PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    -- Milliseconds since the epoch, by the database's clock, so that instances
    -- on machines whose clocks differ still agree on who is late.
    heartbeat_ms INTEGER NOT NULL,
    lease_ms     INTEGER NOT NULL
);

-- The instance that took a delivery to send it (PostgreSQL only: on SQLite the
-- job's lock file already says who is sending).
ALTER TABLE deliveries ADD COLUMN owner TEXT;
