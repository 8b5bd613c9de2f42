-- See migrations/sqlite/20261126000006_apps.sql: consent, intake data, the
-- template catalog and WeChat's pushes are keyed by the AppID; runs remember it.

ALTER TABLE runs ADD COLUMN appid TEXT NOT NULL DEFAULT '';

ALTER TABLE subscribers ADD COLUMN appid TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers DROP CONSTRAINT subscribers_pkey;
ALTER TABLE subscribers ADD PRIMARY KEY (appid, openid);

ALTER TABLE consents ADD COLUMN appid TEXT NOT NULL DEFAULT '';
ALTER TABLE consents DROP CONSTRAINT consents_pkey;
ALTER TABLE consents ADD PRIMARY KEY (appid, openid, template_id);
DROP INDEX consents_template;
CREATE INDEX consents_template ON consents (appid, template_id, openid);

ALTER TABLE templates ADD COLUMN appid TEXT NOT NULL DEFAULT '';
ALTER TABLE templates DROP CONSTRAINT templates_pkey;
ALTER TABLE templates ADD PRIMARY KEY (appid, template_id);

ALTER TABLE sent_events ADD COLUMN appid TEXT NOT NULL DEFAULT '';
ALTER TABLE sent_events DROP CONSTRAINT sent_events_pkey;
ALTER TABLE sent_events ADD PRIMARY KEY (appid, msgid);

-- As on SQLite, where these tables were rebuilt: every write names its app.
ALTER TABLE subscribers ALTER COLUMN appid DROP DEFAULT;
ALTER TABLE consents ALTER COLUMN appid DROP DEFAULT;
ALTER TABLE templates ALTER COLUMN appid DROP DEFAULT;
ALTER TABLE sent_events ALTER COLUMN appid DROP DEFAULT;
