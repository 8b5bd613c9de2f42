//! One module per command; each returns an exit status or a one-line failure.

mod check;
mod config_show;
mod console;
mod init;
mod instances;
mod man;
mod recipients;
mod runs;
mod send;
mod sends;
mod table;

use std::process::ExitCode;

pub use console::{Console, Host};
pub(crate) use console::{errln, out, outln};

use crate::app::{App, AppError};
use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError, Settings};
use crate::daemon::Listeners;
use crate::telemetry;

/// How a command ended; the numbers are part of the command-line contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Ok = 0,
    /// Some deliveries (or rows) did not go through.
    SomeFailed = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// The work could not proceed (no token, database error, run stopped).
    CannotProceed = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A command's failure: an exit status and one line per problem.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub exit: Exit,
    /// What went wrong, naming the file, key or line at fault.
    pub message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    pub(crate) fn cannot_proceed(message: impl std::fmt::Display) -> Self {
        Self {
            exit: Exit::CannotProceed,
            message: message.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NoSecret(_) | AppError::NoAppSecret(..) => Self::usage(e.to_string()),
            other => Self::cannot_proceed(other),
        }
    }
}

impl From<crate::storage::StorageError> for Failure {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::cannot_proceed(e)
    }
}

impl From<crate::import::ImportError> for Failure {
    fn from(e: crate::import::ImportError) -> Self {
        match e {
            crate::import::ImportError::Refused(problems) => Self::usage(problems),
            crate::import::ImportError::Storage(e) => e.into(),
        }
    }
}

/// Runs the parsed command line as the binary does, on `host`: the command,
/// then its failure on stderr, one `wxpush: ` line per problem.
pub async fn run(cli: Cli, mut host: Host) -> Exit {
    match execute(cli, &mut host).await {
        Ok(exit) => exit,
        Err(failure) => {
            for line in failure.message.lines() {
                errln!(host.console, "wxpush: {line}");
            }
            failure.exit
        }
    }
}

async fn execute(cli: Cli, host: &mut Host) -> Result<Exit, Failure> {
    if let Command::Init { path, force } = &cli.command {
        // A new file: where it was asked for, else the default path, never
        // the package's file by fallback.
        let path = path
            .as_deref()
            .or(cli.config.as_deref())
            .unwrap_or(std::path::Path::new(config::DEFAULT_PATH));
        return init::run(path, *force, &mut host.console);
    }
    let (config_path, fell_back) = config::resolve_path(
        cli.config.as_deref(),
        std::path::Path::new(config::DEFAULT_PATH),
        std::path::Path::new(config::SYSTEM_PATH),
    );
    // Commands that read no config (completions, man, config example) say
    // nothing about which file it would be.
    let reads_config = !matches!(
        cli.command,
        Command::Completions { .. }
            | Command::Man
            | Command::Config(crate::cli::ConfigCommand::Example)
    );
    if fell_back && reads_config {
        // Nobody named this file: say which one is read.
        errln!(
            host.console,
            "wxpush: reading {} ({} does not exist here; --config or WXPUSH_CONFIG picks another)",
            config_path.display(),
            config::DEFAULT_PATH
        );
    }
    let cli = Cli {
        config: Some(config_path),
        ..cli
    };
    let config_path = cli.config.as_deref().expect("resolved above");
    let out = &mut host.console;
    match &cli.command {
        Command::Check { offline, json } => {
            return check::run(config_path, &host.env, *offline, *json, out).await;
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "wxpush", &mut out.out);
            return Ok(Exit::Ok);
        }
        Command::Man => {
            man::render(&mut out.out)
                .map_err(|e| Failure::cannot_proceed(format!("cannot write the man page: {e}")))?;
            return Ok(Exit::Ok);
        }
        Command::Config(crate::cli::ConfigCommand::Example) => {
            out!(out, "{}", init::STARTER);
            return Ok(Exit::Ok);
        }
        Command::Config(crate::cli::ConfigCommand::Show { json }) => {
            return config_show::run(config_path, &host.env, *json, out);
        }
        _ => {}
    }
    let settings = config::load_in(config_path, &host.env)?;
    if host.owns_process() {
        telemetry::init(&settings.log);
    }
    match cli.command {
        Command::Run => daemon(settings, host).await,
        Command::Send {
            job,
            to: Some(to),
            json,
            ..
        } => send::test_send(settings, &job, &to, json, &mut host.console).await,
        Command::Send {
            job,
            again,
            dry_run,
            json,
            to: None,
        } => send::run(settings, &job, again, dry_run, json, host).await,
        Command::Recipients(c) => recipients::run(settings, c, &mut host.console).await,
        Command::Runs(args) => runs::run(settings, args, &mut host.console).await,
        Command::Sends(args) => sends::run(settings, *args, &mut host.console).await,
        Command::Health => health(settings, &mut host.console).await,
        Command::Instances { json } => instances::run(settings, json, &mut host.console).await,
        Command::Backup { path } => backup(settings, &path, &mut host.console).await,
        Command::Check { .. }
        | Command::Init { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Config(_) => unreachable!("handled above"),
    }
}

async fn daemon(settings: Settings, host: &Host) -> Result<Exit, Failure> {
    let app = std::sync::Arc::new(App::build(settings).await?);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        jobs = app.settings.jobs.len(),
        database = %app.settings.database.shown(),
        "wxpush daemon starting"
    );
    let shutdown = host.shutdown();
    let http = match app.settings.http {
        None => None,
        Some(addr) => {
            let metrics = crate::stats::install(&app.instance.id)
                .ok_or_else(|| Failure::cannot_proceed("cannot install the metrics recorder"))?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::usage(format!(
                    "{}: http.listen: cannot listen on {addr}: {e}",
                    app.settings.path.display()
                ))
            })?;
            Some((listener, metrics))
        }
    };
    let intake = match app.settings.intake.as_ref().and_then(|i| i.listen) {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::usage(format!(
                "{}: intake.listen: cannot listen on {addr}: {e}",
                app.settings.path.display()
            ))
        })?),
    };
    let api = match app.settings.api.as_ref().and_then(|a| a.listen) {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::usage(format!(
                "{}: api.listen: cannot listen on {addr}: {e}",
                app.settings.path.display()
            ))
        })?),
    };
    app.run(Listeners { http, intake, api }, shutdown).await?;
    Ok(Exit::Ok)
}

async fn backup(
    settings: Settings,
    target: &std::path::Path,
    out: &mut Console,
) -> Result<Exit, Failure> {
    if target.exists() {
        return Err(Failure::usage(format!(
            "{}: already exists; wxpush backup writes a new file",
            target.display()
        )));
    }
    if let Some(why) = crate::storage::Store::backup_refused(&settings.database.url) {
        return Err(Failure::usage(format!(
            "{}: database.url: {why}",
            settings.path.display()
        )));
    }
    let store = open_for_reading(&settings).await?;
    let bytes = store
        .backup(target)
        .await
        .map_err(|e| Failure::cannot_proceed(format!("{}: {e}", target.display())))?;
    outln!(
        out,
        "backed up {} to {} ({bytes} bytes)",
        store
            .path()
            .map_or_else(String::new, |p| p.display().to_string()),
        target.display()
    );
    Ok(Exit::Ok)
}

async fn health(settings: Settings, out: &mut Console) -> Result<Exit, Failure> {
    let Some(addr) = settings.http else {
        return Err(Failure::usage(format!(
            "{}: http.enabled is false; there is nothing to ask",
            settings.path.display()
        )));
    };
    match crate::http::check(addr).await {
        Ok(body) => {
            outln!(out, "{body}");
            Ok(Exit::Ok)
        }
        Err(e) => Err(Failure {
            exit: Exit::SomeFailed,
            message: format!("not healthy: {e}"),
        }),
    }
}

/// Opens the database for a command that only reads it: a missing file is not
/// created (that would show an empty history as if it were the real one) but is
/// exit 2, naming where it was looked for.
async fn open_for_reading(settings: &Settings) -> Result<crate::storage::Store, Failure> {
    let url = &settings.database.url;
    let store = crate::storage::Store::open_existing_with(url, &settings.database.open_options())
        .await?
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: database.url: no database at {} (nothing has run yet, or the path is wrong: \
                 a relative path is read from the config file's folder)",
                settings.path.display(),
                url.trim_start_matches("sqlite:").trim_start_matches("//")
            ))
        })?;
    // Rows from before apps were kept apart are read as the default app's.
    store.adopt_unkeyed(&settings.wechat.appid).await?;
    Ok(store)
}

/// Looks a job up by name, listing the configured ones when it is missing.
fn find_job<'a>(settings: &'a Settings, name: &str) -> Result<&'a config::Job, Failure> {
    settings.job(name).ok_or_else(|| {
        let names: Vec<&str> = settings.jobs.iter().map(|j| j.name.as_ref()).collect();
        Failure::usage(format!(
            "{}: no job named {name:?} (configured: {})",
            settings.path.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}
