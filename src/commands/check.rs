//! `wxpush check`: every problem in the config, one line each; exit 2 if any.

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;

use super::{Exit, Failure};
use crate::config;
use crate::domain::{Builtins, Message, OpenId, with_name};
use crate::storage::Store;

pub(super) async fn run(path: &Path) -> Result<Exit, Failure> {
    let settings = config::load(path)?;
    let file = settings.path.display().to_string();
    let mut problems = Vec::new();
    if settings.wechat.secret.is_none() {
        problems.push(format!(
            "{file}: wechat.secret: is missing; set it in the file or in WXPUSH__WECHAT__SECRET"
        ));
    }
    // Messages are rendered as of each job's next fire time.
    let builtins: HashMap<&str, Builtins> = settings
        .jobs
        .iter()
        .map(|job| {
            let at = job.schedule.next_after(Utc::now()).unwrap_or_else(Utc::now);
            (job.name.as_ref(), Builtins::at(at, job.schedule.tz()))
        })
        .collect();
    for (i, r) in settings.recipients.iter().enumerate() {
        let vars = with_name(r.vars.clone(), r.name.as_deref());
        for job_name in &r.jobs {
            let (Some(job), Some(builtins)) = (
                settings.job(job_name.as_ref()),
                builtins.get(job_name.as_ref()),
            ) else {
                continue;
            };
            if let Err(e) = Message::build(&job.spec, r.openid.clone(), &vars, builtins) {
                problems.push(format!(
                    "{file}: recipients[{i}] ({}) in job {job_name}: data.{e}",
                    r.openid.masked()
                ));
            }
        }
    }
    // Recipients added by `recipients add|import` were checked against the job as
    // it was then; the job's data may have changed since.
    if let Some(store) = Store::open_existing(&settings.database.url).await? {
        let db = settings.database.url.clone();
        let mut more = 0;
        for job in &settings.jobs {
            let builtins = &builtins[job.name.as_ref()];
            for r in store.recipients(Some(job.name.as_ref())).await? {
                if !r.active || r.source == "config" {
                    continue;
                }
                let Ok(openid) = OpenId::parse(&r.openid) else {
                    continue;
                };
                if let Err(e) = Message::build(&job.spec, openid.clone(), &r.vars, builtins) {
                    if problems.len() < 20 {
                        problems.push(format!(
                            "{db}: recipient {} in job {} (added by {}): data.{e}",
                            openid.masked(),
                            job.name,
                            r.source
                        ));
                    } else {
                        more += 1;
                    }
                }
            }
        }
        store.close().await;
        if more > 0 {
            problems.push(format!(
                "{db}: ... and {more} more recipients with problems"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Failure::usage(problems.join("\n")));
    }
    for job in &settings.jobs {
        let next = job
            .schedule
            .next_after(Utc::now())
            .map(|t| job.schedule.local(t))
            .unwrap_or_else(|| "never".into());
        let n = settings.recipients_of(&job.name).count();
        println!(
            "job {}: next fire {next}; {n} recipients in the config file",
            job.name
        );
    }
    println!(
        "{file}: OK ({} jobs, {} recipients)",
        settings.jobs.len(),
        settings.recipients.len()
    );
    Ok(Exit::Ok)
}
