-- Keeping the planner on the send path's keys (#11).
--
-- json_each, no longer STRICT: a STRICT set-returning SQL function is never
-- inlined, so every batched statement called it as a function of its own
-- (about 0.1 ms each, twice per batch of outcomes and marks). Inlined, it is
-- jsonb_array_elements itself. The statements use it as `= ANY(ARRAY(...))`,
-- computed once and matched by key, never as a join the planner could turn
-- around (it did, with a fresh run's stale statistics: a scan of every
-- delivery, reading the set once for each). NULL still reads as no rows.
CREATE OR REPLACE FUNCTION json_each(rows text) RETURNS TABLE (value jsonb)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 64
    AS $$ SELECT jsonb_array_elements(rows::jsonb) $$;

-- Finding rows from before apps (appid = '') at every start is a key lookup in
-- each table; runs had no key on appid, so it read them all.
CREATE INDEX runs_appid ON runs (appid);
