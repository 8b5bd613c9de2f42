//! When a job fires: a cron expression read in the job's time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    line: String,
}

/// Two schedules are the same when their line and time zone are.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line && self.tz == other.tz
    }
}

impl Eq for Schedule {}

/// A cron line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

impl Schedule {
    /// Parses a cron line.
    ///
    /// Six fields (seconds first) are read as the tokio-cron-scheduler dialect, where
    /// day-of-month and day-of-week must both match. Five fields are a crontab line
    /// fired at second 0, with crontab's meaning: when both day fields are restricted,
    /// either one matching is enough.
    pub fn parse(line: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let line = line.trim();
        let fields = line.split_whitespace().count();
        let parser = match fields {
            _ if line.starts_with('@') => CronParser::builder().seconds(Seconds::Disallowed),
            5 => CronParser::builder().seconds(Seconds::Disallowed),
            6 => CronParser::builder()
                .seconds(Seconds::Required)
                .dom_and_dow(true),
            n => {
                return Err(ScheduleError(format!(
                    "{line:?} has {n} fields; give 6 (sec min hour day month weekday) or a 5-field crontab line"
                )));
            }
        };
        let cron = parser
            .year(Year::Disallowed)
            .build()
            .parse(line)
            .map_err(|e| ScheduleError(format!("{line:?} is not a valid cron line: {e}")))?;
        let schedule = Self {
            cron,
            tz,
            line: line.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError(format!("{line:?} never fires")));
        }
        Ok(schedule)
    }

    /// The cron line and time zone as one text: equal exactly when the schedules are.
    pub fn key(&self) -> String {
        format!("{} {}", self.line, self.tz)
    }

    /// The job's time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// `t` as wall time in the job's zone with its UTC offset, for people.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire time at or before `t`: the slot a manual send or a catch-up uses.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Asia::Shanghai};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fires_at_nine_in_shanghai_which_is_one_utc() {
        let s = Schedule::parse("0 0 9 * * *", Shanghai).unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-24T01:00:00Z")).unwrap(),
            utc("2026-11-25T01:00:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-11-23T23:00:00Z")).unwrap(),
            utc("2026-11-24T01:00:00Z")
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-24T01:00:00Z")).unwrap(),
            utc("2026-11-24T01:00:00Z")
        );
    }

    #[test]
    fn five_field_lines_are_crontab_at_second_zero() {
        let s = Schedule::parse("30 8 * * 1-5", Shanghai).unwrap();
        // Tuesday 2026-11-24 00:30 UTC is 08:30 in Shanghai.
        assert_eq!(
            s.next_after(utc("2026-11-24T00:00:00Z")).unwrap(),
            utc("2026-11-24T00:30:00Z")
        );
    }

    #[test]
    fn five_field_lines_or_the_day_fields_like_crontab() {
        // "on the 1st, and on every Monday": 2026-11-30 is a Monday.
        let s = Schedule::parse("0 9 1 * MON", Shanghai).unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-24T02:00:00Z")).unwrap(),
            utc("2026-11-30T01:00:00Z")
        );
    }

    #[test]
    fn six_field_lines_and_the_day_fields_like_tokio_cron_scheduler() {
        // The 1st that is also a Monday: 2027-02-01.
        let s = Schedule::parse("0 0 9 1 * MON", Shanghai).unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-24T02:00:00Z")).unwrap(),
            utc("2027-02-01T01:00:00Z")
        );
    }

    #[test]
    fn follows_daylight_saving_time() {
        let s = Schedule::parse("0 0 9 * * *", New_York).unwrap();
        // EDT (UTC-4) in July, EST (UTC-5) in December.
        assert_eq!(
            s.next_after(utc("2026-07-01T00:00:00Z")).unwrap(),
            utc("2026-07-01T13:00:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-12-01T00:00:00Z")).unwrap(),
            utc("2026-12-01T14:00:00Z")
        );
    }

    #[test]
    fn refuses_wrong_field_counts_and_bad_values() {
        for bad in [
            "",
            "* * * *",
            "0 0 9 * * * 2027",
            "0 61 * * *",
            "0 0 25 * * *",
            "every day",
        ] {
            assert!(Schedule::parse(bad, Shanghai).is_err(), "{bad:?}");
        }
    }
}
