-- Keeping the planner on the send path's keys (#11).
--
-- json_each, no longer STRICT: a STRICT set-returning SQL function is never
-- inlined, so every batched statement called it as a function of its own
-- (about 0.1 ms each, twice per batch of outcomes and marks). Inlined, it is
-- jsonb_array_elements itself, guessed at 100 rows: still a key probe per row.
-- It read NULL as no rows before and does now (jsonb_array_elements is strict).
CREATE OR REPLACE FUNCTION json_each(rows text) RETURNS TABLE (value jsonb)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 64
    AS $$ SELECT jsonb_array_elements(rows::jsonb) $$;

-- Finding rows from before apps (appid = '') at every start is a key lookup in
-- each table; runs had no key on appid, so it read them all.
CREATE INDEX runs_appid ON runs (appid);
