-- Delivery policy (#26). `policy_history`: what went (or may have) to whom,
-- for frequency caps and dedupe: one row per delivery (`kind` 'd') or send
-- ('s') a claim let go, written in the claim's transaction. A row whose
-- delivery or send ended without a message (failed, refused…) no longer
-- counts: the reading query looks at its status. Rows are found by person
-- (the one index, which also finds a delivery's or send's own row).
CREATE TABLE policy_history (
    id          INTEGER PRIMARY KEY,
    appid       TEXT    NOT NULL,
    openid      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    job         TEXT,
    digest      TEXT    NOT NULL,
    counted     BIGINT  NOT NULL,
    at_ms       BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    ref_id      BIGINT  NOT NULL
);
CREATE INDEX policy_history_person ON policy_history (appid, openid, at_ms);

-- A send's recipient zone (`tz`), its own policy layer (JSON), the rule that
-- holds it while deferred (`held`), its digest for dedupe, and the run's
-- delivery it carries when a policy deferred that delivery.
ALTER TABLE sends ADD COLUMN tz TEXT;
ALTER TABLE sends ADD COLUMN policy TEXT;
ALTER TABLE sends ADD COLUMN held TEXT;
ALTER TABLE sends ADD COLUMN digest TEXT;
ALTER TABLE sends ADD COLUMN delivery_id BIGINT;
CREATE INDEX sends_deferred ON sends (appid) WHERE status = 'pending' AND held IS NOT NULL;
CREATE INDEX sends_delivery ON sends (delivery_id) WHERE delivery_id IS NOT NULL;
