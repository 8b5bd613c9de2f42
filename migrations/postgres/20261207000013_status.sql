-- The status page's filter of a run's deliveries by status: the statuses few
-- deliveries end in (failed, refused, invalid, unknown, expired, skipped,
-- deferred, suppressed) indexed by run, so that a filter by one reads its few
-- rows instead of scanning a run of a million. The statuses every delivery
-- passes through are left out: sending maintains this index only for the rare
-- delivery that ends in one of the others.
CREATE INDEX deliveries_unusual ON deliveries (run_id, status, id)
    WHERE status NOT IN ('pending', 'claimed', 'sending', 'sent');
