//! Tables for terminal output, aligned by display width.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets::NOTHING};

/// Which side of its column a value lines up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    /// Text: flush left.
    Left,
    /// Numbers: flush right, so digits of the same place line up.
    Right,
}

/// A moment as every table shows one: `2026-12-05 09:00:00 +08:00` in `tz`,
/// or `2026-12-05 01:00:00 UTC` without one.
pub(super) fn moment(t: chrono::DateTime<chrono::Utc>, tz: Option<chrono_tz::Tz>) -> String {
    match tz {
        Some(tz) => t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// A stored timestamp (RFC 3339) as `moment` shows it; as stored if it is
/// not one.
pub(super) fn stored_moment(ts: &str, tz: Option<chrono_tz::Tz>) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| moment(t.with_timezone(&chrono::Utc), tz))
        .unwrap_or_else(|_| ts.to_owned())
}

/// The zone a table shows times that belong to no one job in: the jobs'
/// zone when they all share one, else UTC.
pub(super) fn settings_zone(settings: &crate::config::Settings) -> Option<chrono_tz::Tz> {
    let mut zones = settings.jobs.iter().map(|j| j.schedule.tz());
    let first = zones.next()?;
    zones.all(|z| z == first).then_some(first)
}

/// Spaces between columns: one is easy to misread when a column is full.
const GAP: u16 = 2;

/// A table under `columns` (header and alignment), one line per row, each column
/// as wide as its widest cell on screen (a Chinese character takes two columns).
pub(super) fn render<R>(columns: &[(&str, Align)], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    // No borders or colours, and never wrapped to the terminal's width: the output
    // is read by people and by grep/awk alike, and a wrapped row would be two.
    // (Built without comfy-table's `tty` feature, it never looks at a terminal.)
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(header, _)| *header));
    for row in rows {
        table.add_row(row.into_iter().map(|cell| one_line(&cell)));
    }
    let last = columns.len().saturating_sub(1);
    for (i, (_, align)) in columns.iter().enumerate() {
        if let Some(column) = table.column_mut(i) {
            column.set_padding((0, if i == last { 0 } else { GAP }));
            column.set_cell_alignment(match align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        // The last column is padded too; trailing blanks only get in the way of diff.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `cell` with control characters escaped: a newline in a name or an error
/// message would otherwise split its row over two lines.
fn one_line(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Display width for the test strings: ASCII is 1, the CJK used here is 2.
    fn width(s: &str) -> usize {
        s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
    }

    /// The screen column where each line's needle starts, line by line.
    fn column_starts(text: &str, needles: &[&str]) -> Vec<usize> {
        text.lines()
            .zip(needles)
            .map(|(line, needle)| width(&line[..line.find(needle).unwrap()]))
            .collect()
    }

    #[test]
    fn columns_after_a_chinese_cell_start_where_they_do_after_an_ascii_one() {
        let text = render(
            &[("NAME", Align::Left), ("CITY", Align::Left)],
            [
                vec!["张三丰".to_owned(), "北京".to_owned()],
                vec!["Bob".to_owned(), "Rome".to_owned()],
            ],
        );
        let starts = column_starts(&text, &["CITY", "北京", "Rome"]);
        assert_eq!(starts, vec![8, 8, 8], "{text}");
    }

    #[test]
    fn right_aligned_columns_end_together_and_lines_have_no_trailing_blanks() {
        let text = render(
            &[("ID", Align::Right), ("NOTE", Align::Left)],
            [
                vec!["7".to_owned(), String::new()],
                vec!["1234".to_owned(), "x".to_owned()],
            ],
        );
        assert_eq!(text, "  ID  NOTE\n   7\n1234  x\n");
    }

    #[test]
    fn a_newline_in_a_cell_does_not_split_its_row() {
        let text = render(
            &[("A", Align::Left), ("B", Align::Left)],
            [vec!["two\nlines".to_owned(), "b".to_owned()]],
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("two\\nlines  b"), "{text}");
    }
}
