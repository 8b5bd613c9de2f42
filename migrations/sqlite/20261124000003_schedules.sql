-- When a daemon first loaded each job's schedule (cron line and time zone), so
-- that catch-up on start only runs slots that came while wxpush had the job
-- scheduled: never one from before a new install or a changed cron line.
CREATE TABLE schedules (
    job      TEXT NOT NULL,
    schedule TEXT NOT NULL,
    since    TEXT NOT NULL,
    PRIMARY KEY (job, schedule)
);
