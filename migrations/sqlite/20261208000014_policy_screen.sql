-- The delivery policy's screen (#26): a claim first counts each person's
-- records in the window and looks for its own among them, and reads the
-- records only of the few near a limit. With the record's kind and id in the
-- person's index, that count is read from the index alone.
DROP INDEX policy_history_person;
CREATE INDEX policy_history_person ON policy_history (openid, appid, at_ms, kind, ref_id);
