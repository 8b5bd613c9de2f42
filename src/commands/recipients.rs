//! `wxpush recipients list|add|show|remove|forget|import`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;

use super::table::{self, Align::Left, Align::Right};
use super::{Exit, Failure, find_job};
use crate::cli::RecipientsCommand;
use crate::config::{Job, Settings};
use crate::domain::{Builtins, Message, OpenId, with_name};
use crate::storage::{Store, StoredRecipient};

pub(super) async fn run(settings: Settings, command: RecipientsCommand) -> Result<Exit, Failure> {
    match command {
        RecipientsCommand::List { job, json } => list(&settings, job.as_deref(), json).await,
        RecipientsCommand::Show { openid, json } => show(&settings, &openid, json).await,
        RecipientsCommand::Forget { openid } => forget(&settings, &openid).await,
        RecipientsCommand::Add {
            openid,
            job,
            name,
            vars,
        } => {
            let job = find_job(&settings, &job)?;
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
                Store::open_with(&settings.database.url, settings.database.max_connections).await?;
            store.upsert_recipients(&[row], "cli").await?;
            store.close().await;
            println!("added {openid} to job {}", job.name);
            Ok(Exit::Ok)
        }
        RecipientsCommand::Remove { openid, job } => {
            OpenId::parse(&openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
            if let Some(job) = &job {
                find_job(&settings, job)?;
            }
            let store = super::open_for_reading(&settings).await?;
            let n = store.remove_recipient(&openid, job.as_deref()).await?;
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
        RecipientsCommand::Import { file, job } => {
            let job = find_job(&settings, &job)?;
            let store =
                Store::open_with(&settings.database.url, settings.database.max_connections).await?;
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

async fn list(settings: &Settings, job: Option<&str>, json: bool) -> Result<Exit, Failure> {
    if let Some(job) = job {
        find_job(settings, job)?;
    }
    let store = super::open_for_reading(settings).await?;
    // What the file lists now, as the next run will see it.
    store
        .sync_config_recipients(&crate::app::config_recipients(settings))
        .await?;
    let rows = store.recipients(job).await?;
    store.close().await;
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

/// The rows of a recipients CSV, each checked, with its line number.
fn csv_rows(
    path: &Path,
    job: &Job,
) -> Result<impl Iterator<Item = (u64, Result<StoredRecipient, String>)>, Failure> {
    let file = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| Failure::usage(format!("{file}: {e}")))?;
    let headers = reader
        .headers()
        .map_err(|e| Failure::usage(format!("{file} line 1: {e}")))?
        .clone();
    let Some(openid_col) = headers.iter().position(|h| h == "openid") else {
        return Err(Failure::usage(format!(
            "{file} line 1: the header has no `openid` column"
        )));
    };
    let name_col = headers.iter().position(|h| h == "name");
    let job = job.clone();
    // Once per file, not per row: rows are checked as of now.
    let builtins = Builtins::at(Utc::now(), job.schedule.tz());
    Ok(reader.into_records().map(move |record| {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (e.position().map_or(0, |p| p.line()), Err(e.to_string())),
        };
        let line = record.position().map_or(0, |p| p.line());
        let openid = match OpenId::parse(record.get(openid_col).unwrap_or_default()) {
            Ok(o) => o,
            Err(e) => return (line, Err(format!("openid: {e}"))),
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
        (line, recipient(&job, &builtins, &openid, name, vars))
    }))
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
    // Enough lines to see the pattern; a million bad rows need not all be printed.
    const SHOWN: usize = 20;
    let (mut problems, mut more, mut rows) = (Vec::new(), 0, 0);
    for (line, row) in csv_rows(path, job)? {
        match row {
            Ok(_) => rows += 1,
            Err(e) if problems.len() < SHOWN => problems.push(format!("{file} line {line}: {e}")),
            Err(_) => more += 1,
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems, more));
    }
    if rows == 0 {
        return Err(Failure::usage(format!("{file}: no rows to import")));
    }
    let mut import = store.begin_import("import").await?;
    for (line, row) in csv_rows(path, job)? {
        let row = row.map_err(|e| {
            Failure::usage(format!(
                "{file} line {line}: {e} (the file changed while importing)"
            ))
        })?;
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
async fn show(settings: &Settings, openid: &str, json: bool) -> Result<Exit, Failure> {
    let openid = OpenId::parse(openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
    let store = super::open_for_reading(settings).await?;
    store
        .sync_config_recipients(&crate::app::config_recipients(settings))
        .await?;
    let listed: Vec<_> = store
        .recipients(None)
        .await?
        .into_iter()
        .filter(|r| r.openid == openid.as_ref())
        .collect();
    let subscriber = store.subscriber(openid.as_ref()).await?;
    let consents = store.consents_of(openid.as_ref()).await?;
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
            c.updated_at.clone(),
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

/// `recipients forget OPENID`: erases a person (a deletion request).
async fn forget(settings: &Settings, openid: &str) -> Result<Exit, Failure> {
    let openid = OpenId::parse(openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
    // Refused while the file still lists them: the next sync would add them back.
    if settings.recipients.iter().any(|r| r.openid == openid) {
        return Err(Failure::usage(format!(
            "{}: {openid} is listed in [[recipients]]; remove it from the file first",
            settings.path.display()
        )));
    }
    let Some(store) =
        Store::open_existing_with(&settings.database.url, settings.database.max_connections)
            .await?
    else {
        return Err(Failure {
            exit: Exit::SomeFailed,
            message: format!("nothing is known about {openid}"),
        });
    };
    let touched = store.forget(openid.as_ref()).await;
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
