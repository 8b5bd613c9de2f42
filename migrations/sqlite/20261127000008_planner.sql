-- Finding rows from before apps (appid = '') at every start is a key lookup in
-- each table; runs had no key on appid, so it read them all.
CREATE INDEX runs_appid ON runs (appid);
