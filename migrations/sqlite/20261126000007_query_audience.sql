-- Audiences from the operator's own database (#14). A query's rows are a
-- snapshot taken when the run is created: each delivery keeps its person's
-- variables, since nothing else in wxpush holds them.
ALTER TABLE deliveries ADD COLUMN vars TEXT;

-- 0 for a run whose audience query failed before any delivery was written: it
-- is stopped with the reason in `note`, holds nobody, and a later firing of
-- its slot takes the snapshot again instead of resuming it.
ALTER TABLE runs ADD COLUMN snapshot BIGINT NOT NULL DEFAULT 1;

-- Rows of the query whose openid an earlier row had: folded into its delivery.
ALTER TABLE runs ADD COLUMN folded BIGINT NOT NULL DEFAULT 0;
