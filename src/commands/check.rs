//! `wxpush check`: every problem in the config, one line each; exit 2 if any.

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;

use super::{Console, Exit, Failure, errln, outln};
use crate::config::{self, ConsentCheck, Settings};
use crate::domain::{Builtins, Message, OpenId, TemplateKind, with_name};
use crate::storage::Store;
use crate::wechat::{
    TemplateCatalog, TemplateError, TokenError, TokenManager, WechatClient, WechatError,
};

/// `check --json`: everything the text output says, for scripts and CI.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    file: String,
    ok: bool,
    problems: &'a [String],
    warnings: &'a [String],
    jobs: Vec<JobReport>,
}

#[derive(Debug, serde::Serialize)]
struct JobReport {
    name: String,
    next_fire: Option<String>,
    config_recipients: usize,
    /// Its effective delivery policy, in one line (`none` without one).
    policy: String,
}

fn print_json(report: &Report<'_>, out: &mut Console) {
    outln!(
        out,
        "{}",
        serde_json::to_string_pretty(report).expect("a report serialises")
    );
}

/// Exit 2 with the problems already printed as JSON.
fn failed_as_json() -> Failure {
    Failure::usage(String::new())
}

pub(super) async fn run(
    path: &Path,
    env: &config::Env,
    offline: bool,
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    let settings = load(path, env, json, out)?;
    let file = settings.path.display().to_string();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    // Offline, nothing asks WeChat: the secret is not needed (CI, a build host).
    if !offline && settings.wechat.secret.is_none() {
        problems.push(format!(
            "{file}: wechat.secret: is missing; set it in the file or in WXPUSH__WECHAT__SECRET"
        ));
    }
    let builtins = next_fire_builtins(&settings);
    config_recipients(&settings, &builtins, &mut problems);
    stored_recipients(&settings, &builtins, &mut problems, &mut warnings).await?;
    retention_against_windows(&settings, &mut warnings);
    if let Some(why) = settings.status.as_ref().and_then(|s| s.withheld.as_ref()) {
        warnings.push(format!("{file}: {why}"));
    }
    if let Some(intake) = &settings.intake
        && intake.callback_token.is_none()
    {
        warnings.push(format!(
            "{file}: intake.callback_token is not set: /wechat/callback is not served, so \
             cancellations made in WeChat's settings are not seen"
        ));
    }
    if !offline && settings.wechat.secret.is_some() {
        templates(&settings, env, &mut problems, &mut warnings).await;
    }
    if !offline {
        audience_queries(&settings, &mut problems, &mut warnings).await;
    }
    report(&settings, file, &problems, &warnings, json, out)
}

/// The settings at `path`; with `--json`, problems that stop loading are
/// printed as the report before failing.
fn load(
    path: &Path,
    env: &config::Env,
    json: bool,
    out: &mut Console,
) -> Result<Settings, Failure> {
    match config::load_in(path, env) {
        Ok(s) => Ok(s),
        Err(e) if json => {
            print_json(
                &Report {
                    file: path.display().to_string(),
                    ok: false,
                    problems: &e.problems,
                    warnings: &[],
                    jobs: Vec::new(),
                },
                out,
            );
            Err(failed_as_json())
        }
        Err(e) => Err(e.into()),
    }
}

/// Each job's built-in values as of its next fire time, when messages are rendered.
fn next_fire_builtins(settings: &Settings) -> HashMap<&str, Builtins> {
    settings
        .jobs
        .iter()
        .map(|job| {
            let at = job.schedule.next_after(Utc::now()).unwrap_or_else(Utc::now);
            (job.name.as_ref(), Builtins::at(at, job.schedule.tz()))
        })
        .collect()
}

/// Renders the message of each job a `[[recipients]]` entry is listed in.
fn config_recipients(
    settings: &Settings,
    builtins: &HashMap<&str, Builtins>,
    problems: &mut Vec<String>,
) {
    let file = settings.path.display();
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
}

/// Recipients added by `recipients add|import` were checked against the job as
/// it was then; the job's data may have changed since. A database that cannot
/// be reached (a CI job checking a production config) leaves only these
/// recipients unchecked.
async fn stored_recipients(
    settings: &Settings,
    builtins: &HashMap<&str, Builtins>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    let store = match Store::open_to_inspect(
        &settings.database.url,
        &settings.database.open_options(),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => {
            warnings.push(format!(
                "{}: database.url: {e}; recipients added with `recipients add|import` were not checked",
                settings.path.display()
            ));
            None
        }
    };
    let Some(store) = store else {
        return Ok(());
    };
    let db = settings.database.shown();
    let mut more = 0;
    for job in &settings.jobs {
        let builtins = &builtins[job.name.as_ref()];
        for r in store.recipients(Some(&job.name)).await? {
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
    Ok(())
}

/// Prints what `check` found, as JSON or as text (warnings and problems on
/// stderr, each job's next fire on stdout); exit 2 if there are problems.
fn report(
    settings: &Settings,
    file: String,
    problems: &[String],
    warnings: &[String],
    json: bool,
    out: &mut Console,
) -> Result<Exit, Failure> {
    if json {
        let jobs: Vec<JobReport> = settings
            .jobs
            .iter()
            .map(|job| JobReport {
                name: job.name.to_string(),
                next_fire: job
                    .schedule
                    .next_after(Utc::now())
                    .map(|t| job.schedule.local(t)),
                config_recipients: settings.recipients_of(&job.name).count(),
                policy: job.effective_policy.describe(),
            })
            .collect();
        print_json(
            &Report {
                file,
                ok: problems.is_empty(),
                problems,
                warnings,
                jobs,
            },
            out,
        );
        return if problems.is_empty() {
            Ok(Exit::Ok)
        } else {
            Err(failed_as_json())
        };
    }
    for w in warnings {
        errln!(out, "warning: {w}");
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
        outln!(
            out,
            "job {}: next fire {next}; {n} recipients in the config file; policy: {}",
            job.name,
            job.effective_policy.describe()
        );
    }
    outln!(
        out,
        "{file}: OK ({} jobs, {} recipients)",
        settings.jobs.len(),
        settings.recipients.len()
    );
    Ok(Exit::Ok)
}

/// Prepares each job's audience query on its source (nothing runs): the query
/// must be valid, read an `openid` column, and every `{{var}}` of the job's data
/// must come from a column, a built-in or a fallback. A source that cannot be
/// reached (a CI host) is a warning.
async fn audience_queries(
    settings: &Settings,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let file = settings.path.display().to_string();
    for (i, job) in settings.jobs.iter().enumerate() {
        let Some(query) = &job.query else { continue };
        let at = format!("{file}: jobs[{i}] ({})", job.name);
        let columns = match crate::source::columns(query).await {
            Ok(columns) => columns,
            Err(e) if e.unreachable() => {
                warnings.push(format!("{at}.query: not checked: {e}"));
                continue;
            }
            Err(e) => {
                problems.push(format!("{at}.query: {e}"));
                continue;
            }
        };
        let supplied =
            |var: &str| columns.iter().any(|c| c.name == var) || Builtins::NAMES.contains(&var);
        for (key, value) in &job.spec.data {
            // A column named like the keyword replaces its value outright.
            if supplied(key.as_ref()) {
                continue;
            }
            for var in value.required().filter(|v| !supplied(v)) {
                problems.push(format!(
                    "{at}.data.{key}: {{{{{var}}}}} is not a column of the query on source {} \
                     (columns: {}), nor a built-in; select it, or give a fallback: {{{{{var}|...}}}}",
                    query.source.name,
                    columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
}

/// Retention keeps every run of a slot that may still send (its send window)
/// or be caught up, so a `keep` shorter than those keeps runs longer than it
/// says: worth a word, since that history holds openids.
fn retention_against_windows(settings: &Settings, warnings: &mut Vec<String>) {
    let Some(retention) = &settings.retention else {
        return;
    };
    let file = settings.path.display();
    for job in &settings.jobs {
        let (what, longest) = if job.send_window >= job.catch_up {
            ("send_window", job.send_window)
        } else {
            ("catch_up", job.catch_up)
        };
        if retention.keep < longest {
            warnings.push(format!(
                "{file}: retention.keep ({}) is shorter than job {}'s {what} ({}): its runs are kept {} after their slot, \
                 until the slot can no longer be sent or caught up",
                humantime::format_duration(retention.keep),
                job.name,
                humantime::format_duration(longest),
                humantime::format_duration(longest),
            ));
        }
    }
}

/// A one-time template on a job that fires at least this often gets a warning.
const FREQUENT: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Checks each job's template against the account's list: it must exist and its
/// keywords must be the job's `data` keys. A list that cannot be fetched is a
/// warning, so that `check` still works offline.
async fn templates(
    settings: &Settings,
    env: &config::Env,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let file = settings.path.display().to_string();
    let apps = std::iter::once((None, &settings.wechat))
        .chain(settings.apps.iter().map(|a| (Some(&a.name), &a.wechat)));
    for (app, wechat) in apps {
        // Each app's templates are its own account's.
        let section = app.map_or("wechat".to_owned(), |n| format!("apps.{n}"));
        let Some(secret) = wechat.secret.clone() else {
            problems.push(format!(
                "{file}: {section}.secret: is missing; set {section}.secret_file or the environment"
            ));
            continue;
        };
        let list = match fetch_templates(settings, wechat, secret).await {
            Ok(list) => list,
            // WeChat said no to who we are: every send would fail the same way.
            Err(e) if rejected_credentials(&e).is_some() => {
                let (key, hint) = rejected_credentials(&e).expect("checked");
                let key = key.replacen("wechat", &section, 1);
                let from = if key.ends_with(".secret") {
                    secret_origin(&settings.path, env, &section)
                } else {
                    String::new()
                };
                problems.push(format!("{file}: {key}: {e}; {hint}{from}"));
                continue;
            }
            Err(e) => {
                let whose = app.map_or(String::new(), |n| format!(" of app {n}"));
                warnings.push(format!(
                    "cannot verify the jobs' templates{whose} against WeChat ({e}); run `wxpush check --offline` to skip this"
                ));
                continue;
            }
        };
        check_jobs_templates(settings, app, &list, problems, warnings);
    }
}

/// Where `section`'s secret came from, for the hint on a rejected one: the
/// operator who rotated it must know which copy wxpush read.
fn secret_origin(path: &Path, env: &config::Env, section: &str) -> String {
    let Ok((_, sources)) = config::effective(path, env) else {
        return String::new();
    };
    let find = |key: String| {
        sources
            .iter()
            .find(|(k, v, _)| *k == key && !v.is_null())
            .map(|(_, v, from)| (v.as_str().unwrap_or_default().to_owned(), from.clone()))
    };
    let env = |from: &str| from.strip_prefix("env ").map(str::to_owned);
    if let Some((file, from)) = find(format!("{section}.secret_file")) {
        let named = match env(&from) {
            Some(var) => format!("by the environment variable {var}"),
            None => format!("by {section}.secret_file in {}", path.display()),
        };
        return format!(" (it was read from {file}, named {named})");
    }
    match find(format!("{section}.secret")) {
        Some((_, from)) => match env(&from) {
            Some(var) => format!(" (it came from the environment variable {var})"),
            None => format!(" (it came from {section}.secret in {})", path.display()),
        },
        None => String::new(),
    }
}

/// Checks the templates of `app`'s jobs against its account's `list`.
fn check_jobs_templates(
    settings: &Settings,
    app: Option<&crate::domain::AppName>,
    list: &[crate::wechat::RemoteTemplate],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let file = settings.path.display().to_string();
    for (i, job) in settings.jobs.iter().enumerate() {
        if job.app.as_ref() != app {
            continue;
        }
        let at = format!("{file}: jobs[{i}] ({})", job.name);
        let id = job.spec.template_id.as_ref();
        let Some(t) = list.iter().find(|t| t.template_id == id) else {
            let known: Vec<&str> = list.iter().map(|t| t.template_id.as_str()).collect();
            problems.push(format!(
                "{at}.template_id: {id:?} is not one of the account's templates ({})",
                if known.is_empty() {
                    "it has none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            continue;
        };
        let keys: Vec<&str> = job.spec.data.iter().map(|(k, _)| k.as_ref()).collect();
        for k in &keys {
            if !t.keywords.iter().any(|w| w == k) {
                problems.push(format!(
                    "{at}.data.{k}: template {:?} has no keyword {k} (it has {})",
                    t.title,
                    t.keywords.join(", ")
                ));
            }
        }
        for w in &t.keywords {
            if !keys.contains(&w.as_str()) {
                problems.push(format!(
                    "{at}.data: keyword {w} of template {:?} has no value",
                    t.title
                ));
            }
        }
        if t.kind == Some(TemplateKind::OneTime)
            && job.consent == ConsentCheck::Required
            && settings.intake.is_none()
        {
            warnings.push(format!(
                "{at}: template {:?} is one-time and [intake] is disabled, so no acceptance can be \
                 recorded and every recipient will be skipped (no consent); enable [intake] or set consent = \"unchecked\"",
                t.title
            ));
        }
        if t.kind == Some(TemplateKind::OneTime) {
            let now = Utc::now();
            let gap = job
                .schedule
                .next_after(now)
                .and_then(|a| job.schedule.next_after(a).map(|b| b - a));
            if gap.is_some_and(|g| g <= FREQUENT) {
                warnings.push(format!(
                    "{at}: template {:?} is one-time: each message needs a fresh acceptance in the mini program, \
                     so on a job that fires every {} most recipients will be skipped (no consent)",
                    t.title,
                    humantime::format_duration(gap.expect("checked").to_std().unwrap_or_default())
                ));
            }
        }
    }
}

/// The config key and a one-line fix when WeChat rejected the AppID, the
/// AppSecret or this server's IP; `None` for anything else (unreachable, ...).
fn rejected_credentials(e: &TemplateError) -> Option<(&'static str, String)> {
    let (errcode, errmsg) = match e {
        TemplateError::Token(TokenError::Wechat {
            source: WechatError::Api { errcode, errmsg },
            ..
        })
        | TemplateError::Wechat(WechatError::Api { errcode, errmsg }) => (*errcode, errmsg),
        _ => return None,
    };
    Some(match errcode {
        40013 => (
            "wechat.appid",
            "WeChat does not know this AppID: copy it from the mini program console (开发管理 → 开发设置)".into(),
        ),
        40125 | 41004 => (
            "wechat.secret",
            "WeChat rejected the AppSecret: copy it again from the console (开发管理 → 开发设置), or reset it there".into(),
        ),
        40164 => {
            // WeChat's errmsg names the address: "invalid ip 1.2.3.4 ipv6 ..., not in whitelist".
            let ip = errmsg
                .split_whitespace()
                .skip_while(|w| *w != "ip")
                .nth(1)
                .unwrap_or("this server's address");
            (
                "wechat.appid",
                format!("add {ip} to the API IP whitelist (开发管理 → 开发设置 → IP白名单) of this mini program"),
            )
        }
        _ => return None,
    })
}

async fn fetch_templates(
    settings: &Settings,
    wechat: &crate::config::WechatSettings,
    secret: secrecy::SecretString,
) -> Result<Vec<crate::wechat::RemoteTemplate>, TemplateError> {
    let client = WechatClient::new(wechat, secret, 1)?;
    // The secret itself, whatever token is cached: the check operators run
    // after rotating it must fail on a wrong one. A stable token asked for
    // without force_refresh is the one in force: nothing rotates, and the
    // daemon's token (stable or classic) stays valid.
    client
        .fetch_token(crate::config::TokenSource::Stable, false)
        .await
        .map_err(TemplateError::Wechat)?;
    // The real database when there is one (its cached token saves a request);
    // otherwise `check` must not create files.
    let store =
        match Store::open_to_inspect(&settings.database.url, &settings.database.open_options())
            .await
            .ok()
            .flatten()
        {
            Some(s) => s,
            None => Store::open("sqlite::memory:").await?,
        };
    let tokens = std::sync::Arc::new(TokenManager::new(
        client.clone(),
        store.clone(),
        wechat.appid.clone(),
        wechat.token_source,
    ));
    let list = TemplateCatalog::new(client, tokens, store.clone())
        .refresh()
        .await;
    store.close().await;
    list
}
