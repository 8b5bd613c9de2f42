-- The wxpush processes using this database, each heart-beating while it runs.
-- An instance that stops heart-beating for longer than its lease is dead: its
-- deliveries in flight are settled by a survivor (see `owner`).
CREATE TABLE instances (
    id           TEXT    NOT NULL PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    version      TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    -- Milliseconds since the epoch, by the database's clock, so that instances
    -- on machines whose clocks differ still agree on who is late.
    heartbeat_ms BIGINT  NOT NULL,
    lease_ms     BIGINT  NOT NULL
);

-- The instance that took a delivery to send it (PostgreSQL only: on SQLite the
-- job's lock file already says who is sending).
ALTER TABLE deliveries ADD COLUMN owner TEXT;

-- Room in each page for the new versions of a row (taken, marked `sending`,
-- given its outcome): none of those changes touches an indexed column, so with
-- room they are HOT updates and no index is written on the send path.
ALTER TABLE deliveries SET (fillfactor = 60);
