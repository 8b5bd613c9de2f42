//! `wxpush recipients list|add|show|remove|forget|import`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;

use super::table::{self, Align::Left, Align::Right};
use super::{Console, Exit, Failure, errln, find_job, out, outln};
use crate::cli::RecipientsCommand;
use crate::config::{Job, Settings};
use crate::domain::{AppName, Builtins, JobName, OpenId};
use crate::import::{self, recipient};
use crate::storage::{JobSet, Store};

pub(super) async fn run(
    settings: Settings,
    command: RecipientsCommand,
    out: &mut Console,
) -> Result<Exit, Failure> {
    match command {
        RecipientsCommand::List { job, app, json } => {
            let app = app_arg(&settings, app.as_deref())?;
            list(&settings, job.as_deref(), &app, json, out).await
        }
        RecipientsCommand::Show { openid, app, json } => {
            let app = app_arg(&settings, app.as_deref())?;
            show(&settings, &openid, &app, json, out).await
        }
        RecipientsCommand::Forget { openid, app } => {
            let app = app_arg(&settings, app.as_deref())?;
            forget(&settings, &openid, &app, out).await
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
            outln!(out, "added {openid} to job {}", job.name);
            Ok(Exit::Ok)
        }
        RecipientsCommand::Remove { openid, app, job } => {
            let openid =
                OpenId::parse(&openid).map_err(|e| Failure::usage(format!("openid: {e}")))?;
            let app = app_arg(&settings, app.as_deref())?;
            let named = match &job {
                Some(job) => Some(&job_of_app(&settings, job, &app)?.name),
                None => None,
            };
            let store = super::open_for_reading(&settings).await?;
            let n = match (named, settings.apps.is_empty()) {
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
            outln!(out, "removed {openid} from {n} job(s)");
            if settings.recipients.iter().any(|r| r.openid == openid) {
                outln!(
                    out,
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
            let imported = import_csv(&store, &file, job, out).await;
            store.close().await;
            let n = imported?;
            outln!(
                out,
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
fn jobs_of<'a>(
    settings: &'a Settings,
    app: &'a Option<AppName>,
) -> impl Iterator<Item = &'a JobName> {
    settings
        .jobs
        .iter()
        .filter(move |j| &j.app == app)
        .map(|j| &j.name)
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
    out: &mut Console,
) -> Result<Exit, Failure> {
    let job = match job {
        Some(job) => Some(&job_of_app(settings, job, app)?.name),
        None => None,
    };
    let store = super::open_for_reading(settings).await?;
    // What the file lists now, as the next run will see it.
    store
        .sync_config_recipients(&crate::app::config_recipients(settings))
        .await?;
    let mut rows = store.recipients(job).await?;
    store.close().await;
    rows.retain(|r| row_of_app(settings, &r.job, app));
    if json {
        outln!(
            out,
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
    out!(
        out,
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

/// Imports a CSV all or nothing (see `import`), saying so when it was not read as UTF-8.
async fn import_csv(
    store: &Store,
    path: &Path,
    job: &Job,
    out: &mut Console,
) -> Result<u64, Failure> {
    let checked = import::check(path, job)?;
    if checked.read_as_gb18030() {
        errln!(
            out,
            "note: {} is not UTF-8; read it as GB18030 (GBK)",
            path.display()
        );
    }
    Ok(import::write(store, path, job, checked).await?)
}

/// `recipients show OPENID`: where they are listed, what they gave through the
/// intake API, and their consent per template.
async fn show(
    settings: &Settings,
    openid: &str,
    app: &Option<AppName>,
    json: bool,
    out: &mut Console,
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
    let subscriber = store.subscriber(appid, &openid).await?;
    let consents = store.consents_of(appid, &openid).await?;
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
        let doc = serde_json::json!({
            "openid": openid.as_ref(),
            "jobs": listed,
            "subscriber": subscriber,
            "consents": consents,
        });
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).expect("serialisable")
        );
        return Ok(Exit::Ok);
    }
    outln!(out, "openid: {openid}");
    if let Some(s) = &subscriber {
        outln!(
            out,
            "intake: name {}, {} variables",
            s.name.as_deref().unwrap_or("-"),
            s.vars.len()
        );
    }
    for r in &listed {
        outln!(
            out,
            "job {}: {} (added by {})",
            r.job,
            if r.active { "active" } else { "inactive" },
            r.source
        );
    }
    if consents.is_empty() {
        outln!(out, "consent: none on record");
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
    out!(
        out,
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
async fn forget(
    settings: &Settings,
    openid: &str,
    app: &Option<AppName>,
    out: &mut Console,
) -> Result<Exit, Failure> {
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
    let jobs_of = |wanted: bool| -> Vec<JobName> {
        settings
            .jobs
            .iter()
            .filter(|j| (&j.app == app) == wanted)
            .map(|j| j.name.clone())
            .collect()
    };
    let jobs = match app {
        Some(_) => JobSet::Only(jobs_of(true)),
        None => JobSet::AllBut(jobs_of(false)),
    };
    let touched = match store.adopt_unkeyed(&settings.wechat.appid).await {
        Ok(_) => store.forget(appid, &openid, &jobs).await,
        Err(e) => Err(e),
    };
    store.close().await;
    match touched? {
        0 => Err(Failure {
            exit: Exit::SomeFailed,
            message: format!("nothing is known about {openid}"),
        }),
        n => {
            outln!(out, "forgot {openid}: {n} rows erased or anonymised");
            Ok(Exit::Ok)
        }
    }
}
