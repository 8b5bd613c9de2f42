//! `wxpush check`: every problem in the config, one line each; exit 2 if any.

use std::path::Path;

use chrono::Utc;

use super::{Exit, Failure};
use crate::config;
use crate::domain::{Builtins, Message};

pub(super) async fn run(path: &Path) -> Result<Exit, Failure> {
    let settings = config::load(path)?;
    let file = settings.path.display().to_string();
    let mut problems = Vec::new();
    if settings.wechat.secret.is_none() {
        problems.push(format!(
            "{file}: wechat.secret: is missing; set it in the file or in WXPUSH__WECHAT__SECRET"
        ));
    }
    for (i, r) in settings.recipients.iter().enumerate() {
        let mut vars = r.vars.clone();
        if let Some(name) = &r.name {
            vars.entry("name".into()).or_insert_with(|| name.clone());
        }
        for job_name in &r.jobs {
            let Some(job) = settings.job(job_name.as_ref()) else {
                continue;
            };
            let at = job.schedule.next_after(Utc::now()).unwrap_or_else(Utc::now);
            let builtins = Builtins::at(at, job.schedule.tz());
            if let Err(e) = Message::build(&job.spec, r.openid.clone(), &vars, &builtins) {
                problems.push(format!(
                    "{file}: recipients[{i}] ({}) in job {job_name}: data.{e}",
                    r.openid.masked()
                ));
            }
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
