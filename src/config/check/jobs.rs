//! `[[jobs]]` (schedule, template, data, send window), the app they name, and `[delivery]`.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono_tz::Tz;

use super::Checker;
use crate::config::{DeliverySettings, Job, SourceSettings, raw};
use crate::domain::{
    AppName, JobName, KeywordName, MessageSpec, Page, Schedule, TemplateId, ValueTemplate,
};

/// How long after its slot a run may still send, unless `send_window` says.
const DEFAULT_SEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

impl Checker {
    /// The app `name` names, or the default app when absent; `at` is the key.
    pub(super) fn app_ref(
        &mut self,
        at: &str,
        name: Option<&str>,
        apps: &[AppName],
    ) -> Result<Option<AppName>, ()> {
        let Some(name) = name else {
            return Ok(None);
        };
        match apps.iter().find(|a| a.as_ref() == name) {
            Some(a) => Ok(Some(a.clone())),
            None => {
                let known: Vec<&str> = apps.iter().map(AsRef::as_ref).collect();
                self.fail(
                    at,
                    format!(
                        "no app is named {name:?} (configured: {}); define it as [apps.{name}]",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                Err(())
            }
        }
    }

    /// `[delivery]`: concurrency, attempts and backoff.
    pub(super) fn delivery(&mut self, d: raw::RawDelivery) -> DeliverySettings {
        if !(1..=1024).contains(&d.concurrency) {
            self.fail(
                "delivery.concurrency",
                format!("{} is not between 1 and 1024", d.concurrency),
            );
        }
        if d.max_attempts == 0 {
            self.fail("delivery.max_attempts", "must be at least 1");
        }
        if d.backoff_max < d.backoff_base {
            self.fail("delivery.backoff_max", "is less than delivery.backoff_base");
        }
        DeliverySettings {
            concurrency: d.concurrency,
            rate_limit_per_sec: d.rate_limit_per_sec,
            max_attempts: d.max_attempts,
            backoff_base: d.backoff_base,
            backoff_max: d.backoff_max,
            on_unknown: d.on_unknown,
        }
    }

    /// `[[jobs]]`, each converted; a job with a problem is left out.
    pub(super) fn jobs(
        &mut self,
        raw: Vec<raw::RawJob>,
        scheduler: &raw::RawScheduler,
        apps: &[AppName],
        sources: &[SourceSettings],
    ) -> Vec<Job> {
        let jobs: Vec<Job> = raw
            .into_iter()
            .enumerate()
            .filter_map(|(i, j)| self.job(i, j, scheduler, apps, sources))
            .collect();
        let mut seen = BTreeSet::new();
        for job in &jobs {
            if !seen.insert(job.name.clone()) {
                self.fail(
                    "jobs",
                    format!("job {:?} is defined twice", job.name.as_ref()),
                );
            }
        }
        jobs
    }

    /// `jobs[i]`, or `None` when it has a problem.
    fn job(
        &mut self,
        i: usize,
        j: raw::RawJob,
        scheduler: &raw::RawScheduler,
        apps: &[AppName],
        sources: &[SourceSettings],
    ) -> Option<Job> {
        let at = format!("jobs[{i}]");
        let before = self.problems.len();
        let name = JobName::parse(&j.name)
            .map_err(|e| self.fail(&format!("{at}.name"), e))
            .ok();
        let at = name.as_ref().map_or(at.clone(), |n| format!("{at} ({n})"));
        let app = self.app_ref(&format!("{at}.app"), j.app.as_deref(), apps);
        let query = self.job_query(&at, j.audience, j.source, j.query, sources);
        let tz: Option<Tz> = j
            .timezone
            .parse()
            .map_err(|_| {
                self.fail(
                    &format!("{at}.timezone"),
                    format!(
                        "{:?} is not an IANA time zone such as Asia/Shanghai",
                        j.timezone
                    ),
                )
            })
            .ok();
        let schedule = tz.and_then(|tz| {
            Schedule::parse(&j.cron, tz)
                .map_err(|e| self.fail(&format!("{at}.cron"), e))
                .ok()
        });
        let template_id = TemplateId::parse(&j.template_id)
            .map_err(|e| self.fail(&format!("{at}.template_id"), e))
            .ok();
        let page = match j.page.as_deref().map(Page::parse) {
            Some(Err(e)) => {
                self.fail(&format!("{at}.page"), e);
                None
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        if j.data.is_empty() {
            self.fail(
                &format!("{at}.data"),
                "is empty; give one value per template keyword",
            );
        }
        let mut data = Vec::new();
        for (key, value) in j.data {
            let k = KeywordName::parse(&key).map_err(|e| self.fail(&format!("{at}.data"), e));
            let v = ValueTemplate::parse(&value.into_string())
                .map_err(|e| self.fail(&format!("{at}.data.{key}"), e));
            if let (Ok(k), Ok(v)) = (k, v) {
                data.push((k, v));
            }
        }
        let policy = self.policy(&format!("{at}.policy"), &j.policy);
        let catch_up = j.catch_up.unwrap_or(scheduler.catch_up);
        // Unset, the window is wide enough for the catch-up it allows.
        let send_window = j
            .send_window
            .or(scheduler.send_window)
            .unwrap_or(DEFAULT_SEND_WINDOW.max(catch_up));
        if send_window < catch_up {
            let key = if j.send_window.is_some() {
                format!("{at}.send_window")
            } else {
                "scheduler.send_window".to_owned()
            };
            self.fail(
                &key,
                format!(
                    "{} is shorter than the catch-up ({}): a slot caught up that late could send nothing",
                    humantime::format_duration(send_window),
                    humantime::format_duration(catch_up)
                ),
            );
        }
        if send_window.is_zero() {
            self.fail(&format!("{at}.send_window"), "must be more than 0s");
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Job {
            name: name?,
            app: app.ok()?,
            schedule: schedule?,
            catch_up,
            send_window,
            audience: j.audience,
            consent: j.consent,
            query: query.ok()?,
            policy,
            effective_policy: Default::default(),
            spec: Arc::new(MessageSpec {
                template_id: template_id?,
                page,
                state: j.miniprogram_state,
                lang: j.lang,
                overflow: j.on_overflow,
                data,
            }),
        })
    }
}
