-- See migrations/sqlite/20261124000003_schedules.sql.
CREATE TABLE schedules (
    job      TEXT NOT NULL,
    schedule TEXT NOT NULL,
    since    TEXT NOT NULL,
    PRIMARY KEY (job, schedule)
);
