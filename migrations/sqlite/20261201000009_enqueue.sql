-- Version 9 drops PostgreSQL's foreign key from deliveries to runs, whose
-- per-row trigger doubled the cost of enqueueing a run there (see
-- migrations/postgres). SQLite checks its key with an index probe and keeps it:
-- nothing to change here, and the versions stay the same on both backends.
SELECT 1;
