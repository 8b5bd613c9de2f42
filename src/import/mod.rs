//! Recipients from a CSV file (`wxpush recipients import`), all or nothing: the
//! file is read twice so that memory stays flat in its size, first to check every
//! row, then to write them all in one transaction. It is read as UTF-8 or, as
//! Excel on Chinese Windows saves it, GB18030 (`decode`); `rows` reads its columns.

mod decode;
mod rows;

use std::collections::BTreeMap;
use std::path::Path;

use encoding_rs::{Encoding, GB18030, UTF_8};

use crate::config::Job;
use crate::domain::{Builtins, Message, OpenId, with_name};
use crate::storage::{StorageError, Store, StoredRecipient};
use decode::{BadBytes, guess_encoding, starts_with_utf8_bom};
use rows::{Unread, csv_rows};

/// Why a file was not imported.
#[derive(Debug)]
pub(crate) enum ImportError {
    /// The file: what is wrong with it, one line each, naming the file and line.
    Refused(String),
    /// The database.
    Storage(StorageError),
}

impl From<StorageError> for ImportError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

/// A recipient row, refused unless the job's message renders and passes its rules.
pub(crate) fn recipient(
    job: &Job,
    builtins: &Builtins,
    openid: &OpenId,
    name: Option<String>,
    vars: BTreeMap<String, String>,
) -> Result<StoredRecipient, String> {
    let check_vars = with_name(vars.clone(), name.as_deref());
    Message::build(&job.spec, openid.clone(), &check_vars, builtins)
        .map_err(|e| format!("job {}: data.{e}", job.name))?;
    Ok(StoredRecipient {
        job: job.name.clone(),
        openid: openid.clone(),
        name,
        vars,
    })
}

/// Enough problem lines to see the pattern; a million bad rows need not all be printed.
const SHOWN: usize = 20;

/// What the checking pass over a CSV found; [`write`] takes it.
pub(crate) struct Checked {
    /// The encoding the file was read in.
    encoding: &'static Encoding,
    /// Good rows.
    rows: u64,
    /// The first `SHOWN` problems, one line each.
    problems: Vec<String>,
    /// Problems beyond those.
    more: usize,
}

impl Checked {
    /// Whether the file was read as GB18030 because it is not UTF-8.
    pub(crate) fn read_as_gb18030(&self) -> bool {
        self.encoding == GB18030
    }
}

/// The checking pass over a CSV read as `encoding`.
fn check_rows(path: &Path, job: &Job, encoding: &'static Encoding) -> Result<Checked, Unread> {
    let file = path.display();
    let mut checked = Checked {
        encoding,
        rows: 0,
        problems: Vec::new(),
        more: 0,
    };
    for row in csv_rows(path, job, encoding)? {
        match row.map_err(Unread::Bytes)? {
            (_, Ok(_)) => checked.rows += 1,
            (line, Err(e)) if checked.problems.len() < SHOWN => {
                checked.problems.push(format!("{file} line {line}: {e}"));
            }
            (_, Err(_)) => checked.more += 1,
        }
    }
    Ok(checked)
}

/// The checking pass, as UTF-8 or, failing that, as GB18030: Excel on Chinese
/// Windows saves CSV in GBK (which GB18030 contains) unless told "CSV UTF-8".
pub(crate) fn check(path: &Path, job: &Job) -> Result<Checked, ImportError> {
    let file = path.display().to_string();
    let as_utf8 = match check_rows(path, job, UTF_8) {
        Ok(checked) => return Ok(checked),
        Err(Unread::Failed(f)) => return Err(ImportError::Refused(f)),
        Err(Unread::Bytes(bad)) => bad,
    };
    let not_text = |bad: BadBytes| {
        ImportError::Refused(format!(
            "{file} line {}: not UTF-8 (nor GBK); save it as \"CSV UTF-8\" in Excel, or convert: \
             iconv -f GBK -t UTF-8 {file} > {file}.utf8.csv",
            bad.line
        ))
    };
    // A file that says it is UTF-8 is not GBK; read as GBK its BOM would become
    // part of the first header and the error would blame a missing `openid`.
    if starts_with_utf8_bom(path) {
        return Err(not_text(as_utf8));
    }
    // GB18030 decodes nearly any bytes, so a Shift-JIS or Latin-1 file would
    // be read as Chinese mojibake: only a file that looks Chinese is read so.
    let guess = guess_encoding(path);
    if guess != GB18030 && guess != encoding_rs::GBK {
        // A GBK file with a stray byte does not look like GBK to the detector
        // (the byte rules GBK out): when GB18030 reads further than UTF-8
        // did, its bad byte is the one to show.
        if let Err(Unread::Bytes(as_gbk)) = check_rows(path, job, GB18030)
            && as_gbk.line > as_utf8.line
        {
            return Err(not_text(as_gbk));
        }
        let named = guess.name().to_uppercase();
        return Err(ImportError::Refused(format!(
            "{file} line {}: not UTF-8: the file looks like {} text; convert it: \
             iconv -f {named} -t UTF-8 {file} > {file}.utf8.csv (or save it as \"CSV UTF-8\" in Excel)",
            as_utf8.line,
            guess.name()
        )));
    }
    match check_rows(path, job, GB18030) {
        Ok(checked) => Ok(checked),
        Err(Unread::Failed(f)) => Err(ImportError::Refused(f)),
        // The reading that got further is the likelier one: its bad byte is the
        // one to show.
        Err(Unread::Bytes(as_gbk)) => Err(not_text(if as_gbk.line > as_utf8.line {
            as_gbk
        } else {
            as_utf8
        })),
    }
}

/// The second pass: writes every row of a file `check` passed in one transaction
/// (which also finds openids listed twice), or nothing; the number written.
pub(crate) async fn write(
    store: &Store,
    path: &Path,
    job: &Job,
    checked: Checked,
) -> Result<u64, ImportError> {
    let file = path.display().to_string();
    let fail = |mut problems: Vec<String>, more: usize| {
        if more > 0 {
            problems.push(format!("{file}: ... and {more} more problem lines"));
        }
        problems.push(format!("{file}: nothing was imported"));
        ImportError::Refused(problems.join("\n"))
    };
    if !checked.problems.is_empty() {
        return Err(fail(checked.problems, checked.more));
    }
    if checked.rows == 0 {
        return Err(ImportError::Refused(format!("{file}: no rows to import")));
    }
    let changed = |line: u64, e: &dyn std::fmt::Display| {
        ImportError::Refused(format!(
            "{file} line {line}: {e} (the file changed while importing)"
        ))
    };
    let rows = match csv_rows(path, job, checked.encoding) {
        Ok(rows) => rows,
        Err(Unread::Failed(f)) => return Err(ImportError::Refused(f)),
        Err(Unread::Bytes(bad)) => return Err(changed(bad.line, &"not text any more")),
    };
    let mut import = store.begin_import("import").await?;
    for row in rows {
        let (line, row) = row.map_err(|bad| changed(bad.line, &"not text any more"))?;
        let row = row.map_err(|e| changed(line, &e))?;
        import.add(line, row).await?;
    }
    let report = import.finish(true).await?;
    if !report.duplicates.is_empty() {
        let more = report.duplicates.len().saturating_sub(SHOWN);
        let problems = report
            .duplicates
            .iter()
            .take(SHOWN)
            .map(|(line, openid)| {
                format!("{file} line {line}: openid {openid} is already on an earlier line")
            })
            .collect();
        return Err(fail(problems, more));
    }
    Ok(report.written)
}
