//! `wxpush recipients list|add|show|remove|forget|import`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use chrono::Utc;
use encoding_rs::{DecoderResult, Encoding, GB18030, UTF_8};

use super::table::{self, Align::Left, Align::Right};
use super::{Exit, Failure, find_job};
use crate::cli::RecipientsCommand;
use crate::config::{Job, Settings};
use crate::domain::{AppName, Builtins, Message, OpenId, with_name};
use crate::storage::{JobSet, Store, StoredRecipient};

pub(super) async fn run(settings: Settings, command: RecipientsCommand) -> Result<Exit, Failure> {
    match command {
        RecipientsCommand::List { job, app, json } => {
            let app = app_arg(&settings, app.as_deref())?;
            list(&settings, job.as_deref(), &app, json).await
        }
        RecipientsCommand::Show { openid, app, json } => {
            let app = app_arg(&settings, app.as_deref())?;
            show(&settings, &openid, &app, json).await
        }
        RecipientsCommand::Forget { openid, app } => {
            let app = app_arg(&settings, app.as_deref())?;
            forget(&settings, &openid, &app).await
        }
        RecipientsCommand::Add {
            openid,
            app,
            job,
            name,
            vars,
        } => {
            let app = app_arg(&settings, app.as_deref())?;
            let job = listing_job(job_of_app(&settings, &job, &app)?)?;
            let openid =
                OpenId::parse(&openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
            let mut map = BTreeMap::new();
            for v in vars {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| Failure::usage(format!("--var {v:?}: expected KEY=VALUE")))?;
                map.insert(k.trim().to_owned(), val.to_owned());
            }
            let builtins = Builtins::at(Utc::now(), job.schedule.tz());
            let row = recipient(job, &builtins, &openid, name, map).map_err(Failure::usage)?;
            let store =
                Store::open_with(&settings.database.url, &settings.database.open_options()).await?;
            store.upsert_recipients(&[row], "cli").await?;
            store.close().await;
            println!("added {openid} to job {}", job.name);
            Ok(Exit::Ok)
        }
        RecipientsCommand::Remove { openid, app, job } => {
            OpenId::parse(&openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
            let app = app_arg(&settings, app.as_deref())?;
            if let Some(job) = &job {
                job_of_app(&settings, job, &app)?;
            }
            let store = super::open_for_reading(&settings).await?;
            let n = match (&job, settings.apps.is_empty()) {
                (Some(job), _) => store.remove_recipient(&openid, Some(job)).await?,
                // One app: every job, as before (jobs since removed from the file too).
                (None, true) => store.remove_recipient(&openid, None).await?,
                // Several: only the jobs of this openid's app.
                (None, false) => {
                    let mut n = 0;
                    for job in jobs_of(&settings, &app) {
                        n += store.remove_recipient(&openid, Some(job)).await?;
                    }
                    n
                }
            };
            store.close().await;
            if n == 0 {
                return Err(Failure {
                    exit: Exit::SomeFailed,
                    message: format!(
                        "no recipient {openid} found{}",
                        job.map(|j| format!(" in job {j}")).unwrap_or_default()
                    ),
                });
            }
            println!("removed {openid} from {n} job(s)");
            if settings
                .recipients
                .iter()
                .any(|r| r.openid.as_ref() == openid)
            {
                println!(
                    "note: {openid} is also in {}; the next run or send adds it back",
                    settings.path.display()
                );
            }
            Ok(Exit::Ok)
        }
        RecipientsCommand::Import { file, app, job } => {
            let app = app_arg(&settings, app.as_deref())?;
            let job = listing_job(job_of_app(&settings, &job, &app)?)?;
            let store =
                Store::open_with(&settings.database.url, &settings.database.open_options()).await?;
            let imported = import_csv(&store, &file, job).await;
            store.close().await;
            let n = imported?;
            println!(
                "imported {n} recipients into job {} from {}",
                job.name,
                file.display()
            );
            Ok(Exit::Ok)
        }
    }
}

/// The app `--app` names (`None`: the default app), which must be configured.
fn app_arg(settings: &Settings, app: Option<&str>) -> Result<Option<AppName>, Failure> {
    let Some(name) = app else {
        return Ok(None);
    };
    settings
        .apps
        .iter()
        .find(|a| a.name.as_ref() == name)
        .map(|a| Some(a.name.clone()))
        .ok_or_else(|| {
            let known: Vec<&str> = settings.apps.iter().map(|a| a.name.as_ref()).collect();
            Failure::usage(format!(
                "{}: --app {name}: no app is named so (configured: {})",
                settings.path.display(),
                if known.is_empty() {
                    "none; only the default [wechat]".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// The app's name in messages.
fn app_label(app: &Option<AppName>) -> String {
    app.as_ref()
        .map_or("the default app".to_owned(), |a| format!("app {a}"))
}

/// Job `name`, which must send for `app`: an openid belongs to one app, so
/// adding one to another app's job would be another person.
fn job_of_app<'a>(
    settings: &'a Settings,
    name: &str,
    app: &Option<AppName>,
) -> Result<&'a Job, Failure> {
    let job = find_job(settings, name)?;
    if &job.app != app {
        let fix = job
            .app
            .as_ref()
            .map_or("leave out --app".to_owned(), |a| format!("add --app {a}"));
        return Err(Failure::usage(format!(
            "job {name} sends for {}, not {}; {fix}",
            app_label(&job.app),
            app_label(app)
        )));
    }
    Ok(job)
}

/// `job`, if it reads listed recipients: a query job's audience is its query.
fn listing_job(job: &Job) -> Result<&Job, Failure> {
    match &job.query {
        Some(q) => Err(Failure::usage(format!(
            "job {} takes its audience from its query on source {} (audience = \"query\"); \
             add the person in that database instead",
            job.name, q.source.name
        ))),
        None => Ok(job),
    }
}

/// The names of `app`'s jobs.
fn jobs_of<'a>(settings: &'a Settings, app: &'a Option<AppName>) -> impl Iterator<Item = &'a str> {
    settings
        .jobs
        .iter()
        .filter(move |j| &j.app == app)
        .map(|j| j.name.as_ref())
}

/// Whether a stored row of `job` is `app`'s: a job no longer in the file is
/// shown with the default app.
fn row_of_app(settings: &Settings, job: &str, app: &Option<AppName>) -> bool {
    settings.job(job).map_or(app.is_none(), |j| &j.app == app)
}

async fn list(
    settings: &Settings,
    job: Option<&str>,
    app: &Option<AppName>,
    json: bool,
) -> Result<Exit, Failure> {
    if let Some(job) = job {
        job_of_app(settings, job, app)?;
    }
    let store = super::open_for_reading(settings).await?;
    // What the file lists now, as the next run will see it.
    store
        .sync_config_recipients(&crate::app::config_recipients(settings))
        .await?;
    let mut rows = store.recipients(job).await?;
    store.close().await;
    rows.retain(|r| row_of_app(settings, &r.job, app));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return Ok(Exit::Ok);
    }
    let table = rows.into_iter().map(|r| {
        let vars: Vec<String> = r
            .vars
            .iter()
            .filter(|(k, _)| *k != "name")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![
            r.job,
            r.openid,
            r.source,
            if r.active { "yes" } else { "no" }.to_owned(),
            r.name.unwrap_or_default(),
            vars.join(" "),
        ]
    });
    print!(
        "{}",
        table::render(
            &[
                ("JOB", Left),
                ("OPENID", Left),
                ("SOURCE", Left),
                ("ACTIVE", Left),
                ("NAME", Left),
                ("VARS", Left),
            ],
            table,
        )
    );
    Ok(Exit::Ok)
}

/// A recipient row, refused unless the job's message renders and passes its rules.
fn recipient(
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
        job: job.name.to_string(),
        openid: openid.to_string(),
        name,
        vars,
    })
}

/// One CSV row by line number: a checked recipient, or what is wrong with it.
type Row = (u64, Result<StoredRecipient, String>);

/// Where a file stops being text in the encoding it is read as.
#[derive(Debug, Clone, Copy)]
struct BadBytes {
    /// The line, from 1, of the first byte that is not text.
    line: u64,
}

impl std::fmt::Display for BadBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: not text in this encoding", self.line)
    }
}

impl std::error::Error for BadBytes {}

/// Why the rows of a file could not be read in the encoding tried.
enum Unread {
    /// The bytes: another encoding may read them.
    Bytes(BadBytes),
    /// Anything else: no encoding would help.
    Failed(Failure),
}

impl From<Failure> for Unread {
    fn from(f: Failure) -> Self {
        Self::Failed(f)
    }
}

/// The `BadBytes` inside a CSV error, if that is what it is.
fn bad_bytes(e: &csv::Error) -> Option<BadBytes> {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref()?.downcast_ref::<BadBytes>().copied(),
        _ => None,
    }
}

/// A file's bytes as UTF-8, decoded from its encoding as they are read (memory
/// stays flat in the file's size), up to the first byte that is not text in it.
struct Decoded<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    /// Decoded text; `out[start..end]` is not read yet.
    out: Box<[u8]>,
    start: usize,
    end: usize,
    /// Newlines in the input decoded so far.
    newlines: u64,
    /// Set once the input stops being text: every later read fails with it.
    bad: Option<BadBytes>,
    done: bool,
}

impl<R: BufRead> Decoded<R> {
    fn new(inner: R, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            // A UTF-8 BOM (Excel's "CSV UTF-8") would otherwise stick to the first
            // header and hide the `openid` column.
            decoder: encoding.new_decoder_with_bom_removal(),
            out: vec![0; 8 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            newlines: 0,
            bad: None,
            done: false,
        }
    }

    /// Decodes the next chunk of input into `out`.
    fn decode(&mut self) -> io::Result<()> {
        let src = self.inner.fill_buf()?;
        let last = src.is_empty();
        let (result, read, written) =
            self.decoder
                .decode_to_utf8_without_replacement(src, &mut self.out, last);
        let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        match result {
            DecoderResult::Malformed(_, after) => {
                // The sequence is known bad at its last byte; its line is the
                // newlines before that byte, plus one.
                let last_bad = read - usize::from(after);
                let before = newlines(&src[..last_bad.saturating_sub(1)]);
                self.bad = Some(BadBytes {
                    line: self.newlines + before + 1,
                });
            }
            DecoderResult::InputEmpty if last => self.done = true,
            DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
        }
        self.newlines += newlines(&src[..read]);
        self.inner.consume(read);
        self.start = 0;
        self.end = written;
        Ok(())
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The text before a bad byte is handed out first, so rows read up to it.
        while self.start == self.end {
            if let Some(bad) = self.bad {
                return Err(io::Error::new(io::ErrorKind::InvalidData, bad));
            }
            if self.done {
                return Ok(0);
            }
            self.decode()?;
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.out[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// The rows of a recipients CSV read as `encoding`, each checked, with its line
/// number; the last item is `BadBytes` where the file stops being text in it.
fn csv_rows(
    path: &Path,
    job: &Job,
    encoding: &'static Encoding,
) -> Result<impl Iterator<Item = Result<Row, BadBytes>>, Unread> {
    let file = path.display().to_string();
    let opened = File::open(path).map_err(|e| Failure::usage(format!("{file}: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(Decoded::new(BufReader::new(opened), encoding));
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return Err(match bad_bytes(&e) {
                Some(bad) => Unread::Bytes(bad),
                None => Failure::usage(format!("{file} line 1: {e}")).into(),
            });
        }
    };
    let Some(openid_col) = headers.iter().position(|h| h == "openid") else {
        return Err(
            Failure::usage(format!("{file} line 1: the header has no `openid` column")).into(),
        );
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

/// Enough problem lines to see the pattern; a million bad rows need not all be printed.
const SHOWN: usize = 20;

/// What the checking pass over a CSV found.
#[derive(Default)]
struct Checked {
    /// Good rows.
    rows: u64,
    /// The first `SHOWN` problems, one line each.
    problems: Vec<String>,
    /// Problems beyond those.
    more: usize,
}

/// The checking pass over a CSV read as `encoding`.
fn check_rows(path: &Path, job: &Job, encoding: &'static Encoding) -> Result<Checked, Unread> {
    let file = path.display();
    let mut checked = Checked::default();
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
fn check_csv(path: &Path, job: &Job) -> Result<(&'static Encoding, Checked), Failure> {
    let file = path.display().to_string();
    let as_utf8 = match check_rows(path, job, UTF_8) {
        Ok(checked) => return Ok((UTF_8, checked)),
        Err(Unread::Failed(f)) => return Err(f),
        Err(Unread::Bytes(bad)) => bad,
    };
    let not_text = |bad: BadBytes| {
        Failure::usage(format!(
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
        return Err(Failure::usage(format!(
            "{file} line {}: not UTF-8: the file looks like {} text; convert it: \
             iconv -f {named} -t UTF-8 {file} > {file}.utf8.csv (or save it as \"CSV UTF-8\" in Excel)",
            as_utf8.line,
            guess.name()
        )));
    }
    match check_rows(path, job, GB18030) {
        Ok(checked) => {
            eprintln!("note: {file} is not UTF-8; read it as GB18030 (GBK)");
            Ok((GB18030, checked))
        }
        Err(Unread::Failed(f)) => Err(f),
        // The reading that got further is the likelier one: its bad byte is the
        // one to show.
        Err(Unread::Bytes(as_gbk)) => Err(not_text(if as_gbk.line > as_utf8.line {
            as_gbk
        } else {
            as_utf8
        })),
    }
}

/// The encoding the start of the file (up to 1 MiB) most looks like, by
/// chardetng (Firefox's detector for legacy text without a label).
fn guess_encoding(path: &Path) -> &'static Encoding {
    let mut head = Vec::new();
    let _ = File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head));
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(&head, true);
    // No top-level domain to hint with; UTF-8 is allowed as a guess, but
    // this is only asked once UTF-8 has failed.
    detector.guess(None, true)
}

/// Whether the file begins with the UTF-8 byte order mark.
fn starts_with_utf8_bom(path: &Path) -> bool {
    let mut head = Vec::with_capacity(3);
    File::open(path)
        .and_then(|f| f.take(3).read_to_end(&mut head))
        .is_ok()
        && head == b"\xEF\xBB\xBF"
}

/// Imports a CSV all or nothing, reading it twice so that memory stays flat in its
/// size: first every row is checked, then all are written in one transaction
/// (which also finds openids listed twice).
async fn import_csv(store: &Store, path: &Path, job: &Job) -> Result<u64, Failure> {
    let file = path.display().to_string();
    let fail = |mut problems: Vec<String>, more: usize| {
        if more > 0 {
            problems.push(format!("{file}: ... and {more} more problem lines"));
        }
        problems.push(format!("{file}: nothing was imported"));
        Failure::usage(problems.join("\n"))
    };
    let (encoding, checked) = check_csv(path, job)?;
    if !checked.problems.is_empty() {
        return Err(fail(checked.problems, checked.more));
    }
    if checked.rows == 0 {
        return Err(Failure::usage(format!("{file}: no rows to import")));
    }
    let changed = |line: u64, e: &dyn std::fmt::Display| {
        Failure::usage(format!(
            "{file} line {line}: {e} (the file changed while importing)"
        ))
    };
    let rows = match csv_rows(path, job, encoding) {
        Ok(rows) => rows,
        Err(Unread::Failed(f)) => return Err(f),
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

/// `recipients show OPENID`: where they are listed, what they gave through the
/// intake API, and their consent per template.
async fn show(
    settings: &Settings,
    openid: &str,
    app: &Option<AppName>,
    json: bool,
) -> Result<Exit, Failure> {
    let openid = OpenId::parse(openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
    let store = super::open_for_reading(settings).await?;
    store
        .sync_config_recipients(&crate::app::config_recipients(settings))
        .await?;
    let listed: Vec<_> = store
        .recipients(None)
        .await?
        .into_iter()
        .filter(|r| r.openid == openid.as_ref() && row_of_app(settings, &r.job, app))
        .collect();
    let appid = &settings.wechat_of(app.as_ref()).appid;
    let subscriber = store.subscriber(appid, openid.as_ref()).await?;
    let consents = store.consents_of(appid, openid.as_ref()).await?;
    store.close().await;
    if listed.is_empty() && subscriber.is_none() && consents.is_empty() {
        return Err(Failure {
            exit: Exit::SomeFailed,
            message: format!(
                "nothing is known about {openid}: not a recipient of any job and no consent on record"
            ),
        });
    }
    if json {
        let out = serde_json::json!({
            "openid": openid.as_ref(),
            "jobs": listed,
            "subscriber": subscriber,
            "consents": consents,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialisable")
        );
        return Ok(Exit::Ok);
    }
    println!("openid: {openid}");
    if let Some(s) = &subscriber {
        println!(
            "intake: name {}, {} variables",
            s.name.as_deref().unwrap_or("-"),
            s.vars.len()
        );
    }
    for r in &listed {
        println!(
            "job {}: {} (added by {})",
            r.job,
            if r.active { "active" } else { "inactive" },
            r.source
        );
    }
    if consents.is_empty() {
        println!("consent: none on record");
        return Ok(Exit::Ok);
    }
    let table = consents.iter().map(|c| {
        let kind = c.kind.map_or("unknown", |k| k.as_str());
        // Credits only mean something for one-time templates.
        let credits = match c.kind {
            Some(crate::domain::TemplateKind::LongTerm) => "-".to_owned(),
            _ if c.reserved > 0 => format!("{} ({} sending)", c.credits, c.reserved),
            _ => c.credits.to_string(),
        };
        vec![
            c.template_id.clone(),
            kind.to_owned(),
            c.status.clone(),
            credits,
            c.source.clone(),
            super::table::stored_moment(&c.updated_at, super::table::settings_zone(settings)),
        ]
    });
    print!(
        "{}",
        table::render(
            &[
                ("TEMPLATE", Left),
                ("KIND", Left),
                ("STATUS", Left),
                ("CREDITS", Right),
                ("SOURCE", Left),
                ("UPDATED", Left),
            ],
            table,
        )
    );
    Ok(Exit::Ok)
}

/// `recipients forget OPENID [--app NAME]`: erases a person of one mini
/// program (a deletion request).
async fn forget(settings: &Settings, openid: &str, app: &Option<AppName>) -> Result<Exit, Failure> {
    let openid = OpenId::parse(openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
    // Refused while the file still lists them: the next sync would add them back.
    if settings
        .recipients
        .iter()
        .any(|r| r.openid == openid && &r.app == app)
    {
        return Err(Failure::usage(format!(
            "{}: {openid} is listed in [[recipients]]{}; remove it from the file first",
            settings.path.display(),
            app.as_ref()
                .map_or_else(String::new, |a| format!(" with app = \"{a}\""))
        )));
    }
    let Some(store) =
        Store::open_existing_with(&settings.database.url, &settings.database.open_options())
            .await?
    else {
        return Err(Failure {
            exit: Exit::SomeFailed,
            message: format!("nothing is known about {openid}"),
        });
    };
    let appid = &settings.wechat_of(app.as_ref()).appid;
    let jobs_of = |wanted: bool| -> Vec<String> {
        settings
            .jobs
            .iter()
            .filter(|j| (&j.app == app) == wanted)
            .map(|j| j.name.to_string())
            .collect()
    };
    let jobs = match app {
        Some(_) => JobSet::Only(jobs_of(true)),
        None => JobSet::AllBut(jobs_of(false)),
    };
    let touched = match store.adopt_unkeyed(&settings.wechat.appid).await {
        Ok(_) => store.forget(appid, openid.as_ref(), &jobs).await,
        Err(e) => Err(e),
    };
    store.close().await;
    match touched? {
        0 => Err(Failure {
            exit: Exit::SomeFailed,
            message: format!("nothing is known about {openid}"),
        }),
        n => {
            println!("forgot {openid}: {n} rows erased or anonymised");
            Ok(Exit::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `bytes` decode to as `encoding`, read through a buffer of `chunk`
    /// bytes so characters straddle the reads.
    fn decode_all(bytes: &[u8], encoding: &'static Encoding, chunk: usize) -> io::Result<String> {
        let mut text = String::new();
        Decoded::new(BufReader::with_capacity(chunk, bytes), encoding).read_to_string(&mut text)?;
        Ok(text)
    }

    /// The line `BadBytes` names when `bytes` are read as `encoding`.
    fn bad_line(bytes: &[u8], encoding: &'static Encoding, chunk: usize) -> u64 {
        let e = decode_all(bytes, encoding, chunk).unwrap_err();
        e.get_ref()
            .unwrap()
            .downcast_ref::<BadBytes>()
            .unwrap()
            .line
    }

    #[test]
    fn gbk_decodes_whole_across_reads_of_any_size() {
        let text = "openid,name\n一,张三丰\n".repeat(2_000);
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        for chunk in [1, 3, 8 * 1024] {
            assert_eq!(decode_all(&gbk, GB18030, chunk).unwrap(), text, "{chunk}");
        }
    }

    #[test]
    fn a_utf8_bom_is_dropped() {
        let text = decode_all(b"\xEF\xBB\xBFopenid\n", UTF_8, 2).unwrap();
        assert_eq!(text, "openid\n");
    }

    #[test]
    fn a_bad_byte_is_placed_on_its_line_whatever_the_reads() {
        for chunk in [1, 2, 64] {
            assert_eq!(bad_line(b"a\nb\nc\xFF\nd\n", UTF_8, chunk), 3, "{chunk}");
            assert_eq!(bad_line(b"a\nb\nc\xFF\nd\n", GB18030, chunk), 3, "{chunk}");
            // A character cut short by the end of its line.
            assert_eq!(bad_line(b"a\n\xE5\xBC\n", UTF_8, chunk), 2, "{chunk}");
            assert_eq!(bad_line(b"a\n\x81\n", GB18030, chunk), 2, "{chunk}");
            // And by the end of the file.
            assert_eq!(bad_line(b"a\nb\xE5", UTF_8, chunk), 2, "{chunk}");
        }
    }
}
