//! How a query's values become text, alike on every database: numbers and
//! decimals as the database writes them, dates `YYYY-MM-DD`, timestamps
//! `YYYY-MM-DD HH:MM` (a zoned one in the job's time zone; WeChat's `time` and
//! `date` keywords take minutes, and some reject seconds), booleans `true` /
//! `false`. NULL is never text: the variable is absent.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// What a column's type means for its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Taken as the database writes it (text, numbers, decimals, dates).
    AsWritten,
    /// A boolean, written `t`/`f`, `1`/`0` or `true`/`false` by the database.
    Bool,
    /// A timestamp without a zone: its wall time, to the minute.
    Timestamp,
    /// A point in time the database writes in UTC: shown in the job's zone.
    TimestampUtc,
}

/// The text of one non-NULL value of a column of `kind`.
pub(super) fn text(kind: ColumnKind, value: &str, tz: Tz) -> String {
    match kind {
        ColumnKind::AsWritten => value.to_owned(),
        ColumnKind::Bool => match value {
            "t" | "1" | "true" | "TRUE" => "true".to_owned(),
            "f" | "0" | "false" | "FALSE" => "false".to_owned(),
            other => other.to_owned(),
        },
        ColumnKind::Timestamp => naive(value)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| value.to_owned()),
        ColumnKind::TimestampUtc => zoned(value)
            .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| value.to_owned()),
    }
}

fn naive(value: &str) -> Option<NaiveDateTime> {
    let v = value.trim().replace('T', " ");
    NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M"))
        .ok()
}

/// PostgreSQL writes `2026-11-25 01:00:00+00` (its session is in UTC); MySQL
/// writes a TIMESTAMP without a zone (its session is in UTC too).
fn zoned(value: &str) -> Option<DateTime<Utc>> {
    let v = value.trim().replace('T', " ");
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(&v, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    naive(&v).map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_text_predictably() {
        let sh: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(text(ColumnKind::AsWritten, "12.50", sh), "12.50");
        assert_eq!(text(ColumnKind::AsWritten, "2026-11-30", sh), "2026-11-30");
        assert_eq!(text(ColumnKind::Bool, "t", sh), "true");
        assert_eq!(text(ColumnKind::Bool, "0", sh), "false");
        assert_eq!(
            text(ColumnKind::Timestamp, "2026-11-25 09:30:15.25", sh),
            "2026-11-25 09:30"
        );
        // 01:00 UTC is 09:00 in Shanghai, a day boundary included.
        assert_eq!(
            text(ColumnKind::TimestampUtc, "2026-11-25 01:00:00+00", sh),
            "2026-11-25 09:00"
        );
        assert_eq!(
            text(ColumnKind::TimestampUtc, "2026-11-24 20:00:00", sh),
            "2026-11-25 04:00"
        );
        assert_eq!(
            text(ColumnKind::TimestampUtc, "infinity", sh),
            "infinity",
            "what cannot be read is kept as written"
        );
    }
}
