//! A recipients CSV's rows: the `openid` column, an optional `name`, every other
//! column a variable; each row checked against the job as it is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use chrono::Utc;
use encoding_rs::Encoding;

use super::decode::{BadBytes, Decoded};
use super::recipient;
use crate::config::Job;
use crate::domain::{Builtins, OpenId};
use crate::storage::StoredRecipient;

/// One CSV row by line number: a checked recipient, or what is wrong with it.
pub(super) type Row = (u64, Result<StoredRecipient, String>);

/// Why the rows of a file could not be read in the encoding tried.
pub(super) enum Unread {
    /// The bytes: another encoding may read them.
    Bytes(BadBytes),
    /// Anything else: no encoding would help.
    Failed(String),
}

/// The `BadBytes` inside a CSV error, if that is what it is.
fn bad_bytes(e: &csv::Error) -> Option<BadBytes> {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref()?.downcast_ref::<BadBytes>().copied(),
        _ => None,
    }
}

/// The rows of a recipients CSV read as `encoding`, each checked, with its line
/// number; the last item is `BadBytes` where the file stops being text in it.
pub(super) fn csv_rows(
    path: &Path,
    job: &Job,
    encoding: &'static Encoding,
) -> Result<impl Iterator<Item = Result<Row, BadBytes>>, Unread> {
    let file = path.display().to_string();
    let opened = File::open(path).map_err(|e| Unread::Failed(format!("{file}: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(Decoded::new(BufReader::new(opened), encoding));
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return Err(match bad_bytes(&e) {
                Some(bad) => Unread::Bytes(bad),
                None => Unread::Failed(format!("{file} line 1: {e}")),
            });
        }
    };
    let Some(openid_col) = headers.iter().position(|h| h == "openid") else {
        return Err(Unread::Failed(format!(
            "{file} line 1: the header has no `openid` column"
        )));
    };
    let name_col = headers.iter().position(|h| h == "name");
    let job = job.clone();
    // Once per file, not per row: rows are checked as of now.
    let builtins = Builtins::at(Utc::now(), job.schedule.tz());
    // After a read error the reader has nothing more to give: the same error again
    // (an endless iterator) or a half row from before it.
    let mut stopped = false;
    Ok(reader.into_records().map_while(move |record| {
        if stopped {
            return None;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                stopped = matches!(e.kind(), csv::ErrorKind::Io(_));
                if let Some(bad) = bad_bytes(&e) {
                    return Some(Err(bad));
                }
                let line = e.position().map_or(0, |p| p.line());
                return Some(Ok((line, Err(e.to_string()))));
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let openid = match OpenId::parse(record.get(openid_col).unwrap_or_default()) {
            Ok(o) => o,
            Err(e) => return Some(Ok((line, Err(format!("openid: {e}"))))),
        };
        let name = name_col
            .and_then(|c| record.get(c))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let vars: BTreeMap<String, String> = headers
            .iter()
            .zip(record.iter())
            .enumerate()
            .filter(|(i, (_, v))| *i != openid_col && Some(*i) != name_col && !v.is_empty())
            .map(|(_, (k, v))| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Ok((line, recipient(&job, &builtins, &openid, name, vars))))
    }))
}
