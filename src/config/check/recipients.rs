//! `[[recipients]]`: one entry per openid and app, in jobs of that app that read lists.

use std::collections::{BTreeMap, BTreeSet};

use super::Checker;
use crate::config::{Job, Recipient, raw};
use crate::domain::{AppName, JobName, OpenId};

impl Checker {
    /// `[[recipients]]`; `written` is every job name in the file, good or not.
    pub(super) fn recipients(
        &mut self,
        raw: Vec<raw::RawRecipient>,
        jobs: &[Job],
        written: &BTreeSet<String>,
        apps: &[AppName],
    ) -> Vec<Recipient> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        // A job named wrongly, by where it is listed: one line each, however
        // many recipients list it.
        let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("recipients[{i}]");
            let Ok(openid) =
                OpenId::parse(&r.openid).map_err(|e| self.fail(&format!("{at}.openid"), e))
            else {
                continue;
            };
            let at = format!("{at} ({})", openid.masked());
            let Ok(app) = self.app_ref(&format!("{at}.app"), r.app.as_deref(), apps) else {
                continue;
            };
            // The same openid in two apps is two people.
            if !seen.insert((app.clone(), openid.clone())) {
                self.fail(
                    &at,
                    "this openid is listed twice; merge its jobs into one entry",
                );
            }
            if r.jobs.is_empty() {
                self.fail(
                    &format!("{at}.jobs"),
                    "is empty; name the jobs that send to this recipient",
                );
            }
            let mut names = Vec::new();
            let app_name = |a: &Option<AppName>| {
                a.as_ref()
                    .map_or("the default app ([wechat])".to_owned(), |n| {
                        format!("app \"{n}\"")
                    })
            };
            for j in &r.jobs {
                let job = JobName::parse(j)
                    .ok()
                    .and_then(|n| jobs.iter().find(|job| job.name == n));
                match job {
                    Some(job) if job.app != app => self.fail(
                        &format!("{at}.jobs"),
                        format!(
                            "job {j:?} sends for {}, but this recipient is of {}; an openid belongs to one app, so list it in an entry with app = {:?}",
                            app_name(&job.app),
                            app_name(&app),
                            job.app.as_ref().map_or("", |n| n.as_ref())
                        ),
                    ),
                    Some(job) if job.query.is_some() => self.fail(
                        &format!("{at}.jobs"),
                        format!(
                            "job {j:?} takes its audience from its query (audience = \"query\"); \
                             [[recipients]] entries are not read for it"
                        ),
                    ),
                    Some(job) => names.push(job.name.clone()),
                    // That job's own problem is reported where it is defined.
                    _ if written.contains(j) => {}
                    _ => unknown.entry(j.clone()).or_default().push(at.clone()),
                }
            }
            let vars: BTreeMap<String, String> = r
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_string()))
                .collect();
            out.push(Recipient {
                app,
                openid,
                name: r.name,
                jobs: names,
                vars,
            });
        }
        let defined: Vec<String> = jobs
            .iter()
            .map(|j| format!("{:?}", j.name.as_ref()))
            .collect();
        for (name, at) in unknown {
            let others = match at.len() {
                1 => String::new(),
                n => format!(
                    " (nor in the {} other entries that list it: {}{})",
                    n - 1,
                    at[1..at.len().min(4)].join(", "),
                    if n > 4 { ", ..." } else { "" }
                ),
            };
            let jobs = if defined.is_empty() {
                "the file defines no [[jobs]]".to_owned()
            } else {
                format!("the jobs are {}", defined.join(", "))
            };
            self.fail(
                &format!("{}.jobs", at[0]),
                format!("no job is named {name:?}{others}; {jobs}"),
            );
        }
        out
    }
}
