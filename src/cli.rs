//! The command line. Names here are a contract that operators' scripts rely on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The version and the commit it was built from (`wxpush --version`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WXPUSH_COMMIT"), ")");

/// Push WeChat Mini Program subscribe messages on a schedule.
#[derive(Debug, Parser)]
#[command(name = "wxpush", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The TOML config file [default: config/wxpush.toml, else the package's
    /// /etc/wxpush/wxpush.toml when that is the one that exists]
    #[arg(long, global = true, env = "WXPUSH_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: fire every job on its schedule until SIGTERM or SIGINT.
    Run,
    /// Send one job's latest slot now, as the scheduler would: resume or finish
    /// that slot's run if it has one (never a second message to anyone), else start it.
    Send {
        /// The job's name.
        job: String,
        /// Start a new round now instead of the latest slot's run: everyone is
        /// messaged again, even those the latest run reached.
        #[arg(long, conflicts_with = "dry_run")]
        again: bool,
        /// Render and check every message and print it; no API call, no record.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON (counts, timings, latency percentiles).
        #[arg(long, conflicts_with = "dry_run")]
        json: bool,
        /// Send the job's message to this one openid now, as a test: recorded as
        /// a test send, never as the slot's run or in the schedule's history.
        #[arg(long, value_name = "OPENID", conflicts_with_all = ["again", "dry_run"])]
        to: Option<String>,
    },
    /// Check the config, cron lines, time zones and every message, and each job's
    /// template against the account's template list; exit 2 on problems.
    Check {
        /// Do not ask WeChat for the template list.
        #[arg(long)]
        offline: bool,
        /// Print the result as JSON on standard output (problems, warnings, jobs).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions for SHELL to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    Man,
    /// The configuration: `show` prints it as in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List, add, remove or import recipients.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Show run history.
    Runs(RunsArgs),
    /// Sends on demand: one message to one person at a chosen time, sent by the
    /// daemon when due. Without a subcommand: list them.
    Sends(Box<SendsArgs>),
    /// Ask the running daemon's /readyz: exit 0 when ready, 1 when not (for HEALTHCHECK).
    Health,
    /// Write a consistent copy of the SQLite database to PATH while the daemon
    /// runs (a new file; checked before it takes the name).
    Backup {
        /// The new file.
        path: PathBuf,
    },
    /// Write a commented starter config (to --config's path, or PATH); never
    /// overwrites a file unless --force.
    Init {
        /// Where to write it (default: the --config path).
        path: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List the wxpush instances using the database: host, pid, version, last
    /// heartbeat, and the deliveries each holds.
    Instances {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `wxpush config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration in effect, secrets redacted, each value with
    /// where it came from (default, file or environment).
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the commented starter config (what `wxpush init` writes).
    Example,
}

/// `wxpush recipients ...`.
#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// List recipients.
    List {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add (or update) one recipient of a job.
    Add {
        /// The openid.
        openid: String,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
        /// The job.
        #[arg(long)]
        job: String,
        /// A display name (also the {{name}} variable).
        #[arg(long)]
        name: Option<String>,
        /// A variable, KEY=VALUE; repeat for more.
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Remove a recipient from one job, or from all.
    Remove {
        /// The openid.
        openid: String,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
        /// Only from this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Show one person: the jobs that list them and their consent per template.
    Show {
        /// The openid.
        openid: String,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Erase one person of one mini program: every entry in its jobs, their
    /// intake data and consent, and their openid in its run history (the rows
    /// stay, anonymised).
    Forget {
        /// The openid.
        openid: String,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
    },
    /// Import recipients from CSV: header `openid` plus variable columns. All or nothing.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The mini program ([apps.NAME]); absent: the default app.
        #[arg(long)]
        app: Option<String>,
        /// The job they receive.
        #[arg(long)]
        job: String,
    },
}

/// `wxpush runs [show ID]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunsArgs {
    /// Show one run.
    #[command(subcommand)]
    pub show: Option<RunsCommand>,
    /// Only this job's runs.
    #[arg(long)]
    pub job: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `wxpush runs show`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run with every recipient's outcome.
    Show {
        /// The run's id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn runs_show_and_runs_list_both_parse() {
        let c = Cli::try_parse_from(["wxpush", "runs", "--job", "daily", "--json"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Runs(RunsArgs {
                show: None,
                json: true,
                ..
            })
        ));
        let c = Cli::try_parse_from(["wxpush", "runs", "show", "7", "--json"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Runs(RunsArgs {
                show: Some(RunsCommand::Show { id: 7, json: true }),
                ..
            })
        ));
    }
}

/// `wxpush sends [--status S] [--cancel-key K] [--json]` and its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SendsArgs {
    /// Add, show or cancel a send.
    #[command(subcommand)]
    pub command: Option<SendsCommand>,
    /// Only sends in this status (scheduled, queued, sending, sent, failed,
    /// refused, invalid, unknown, skipped, cancelled, expired).
    #[arg(long)]
    pub status: Option<String>,
    /// Only sends of this cancel key.
    #[arg(long)]
    pub cancel_key: Option<String>,
    /// Only sends to this openid.
    #[arg(long, value_name = "OPENID")]
    pub to: Option<String>,
    /// Only sends with ids above this (paging).
    #[arg(long)]
    pub after: Option<i64>,
    /// How many, oldest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `wxpush sends add|show|cancel`.
#[derive(Debug, Subcommand)]
pub enum SendsCommand {
    /// Accept one send: a job's message (its template, page and data, with
    /// --var filling its placeholders) or a template's with every keyword given
    /// by --data. Sent by the daemon at --at (default: now).
    Add(Box<SendsAdd>),
    /// One send: its status, times, errcode and msgid.
    Show {
        /// The send's id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a send (or every send of a cancel key) not yet taken by a sender.
    Cancel {
        /// The send's id.
        #[arg(required_unless_present = "cancel_key", conflicts_with = "cancel_key")]
        id: Option<i64>,
        /// Cancel every send of this key instead.
        #[arg(long)]
        cancel_key: Option<String>,
        /// The mini program of --cancel-key ([apps.NAME]); default: the default app.
        #[arg(long)]
        app: Option<String>,
    },
}

/// `wxpush sends add`.
#[derive(Debug, clap::Args)]
pub struct SendsAdd {
    /// The openid to send to.
    #[arg(long, value_name = "OPENID")]
    pub to: String,
    /// The job whose message it is.
    #[arg(
        long,
        conflicts_with = "template",
        required_unless_present = "template"
    )]
    pub job: Option<String>,
    /// A variable of the job's message, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", requires = "job")]
    pub vars: Vec<String>,
    /// The template, when there is no job: every keyword comes from --data.
    #[arg(long, value_name = "TEMPLATE_ID")]
    pub template: Option<String>,
    /// A keyword's value, KEYWORD=VALUE (repeatable); with --job it
    /// replaces that keyword's value.
    #[arg(long = "data", value_name = "KEYWORD=VALUE")]
    pub data: Vec<String>,
    /// The page the card opens (default: the job's).
    #[arg(long)]
    pub page: Option<String>,
    /// The mini program ([apps.NAME]); default: the job's, else the default app.
    #[arg(long)]
    pub app: Option<String>,
    /// When to send: RFC 3339 with an offset (2026-12-05T09:00:00+08:00).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Never send after this (RFC 3339 with an offset); default: --at plus
    /// the job's send window, or 3 h.
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// The idempotency key: adding again with the same key and the same
    /// arguments finds the first send instead of making another.
    #[arg(long)]
    pub key: Option<String>,
    /// A group name, to cancel together (`sends cancel --cancel-key`).
    #[arg(long)]
    pub cancel_key: Option<String>,
    /// The recipient's IANA time zone, for quiet hours and calendar caps
    /// (default: the job's).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// The send's own policy, as the API's `policy` object in JSON, such as
    /// '{"bypass":["quiet_hours","frequency_caps"]}'.
    #[arg(long, value_name = "JSON")]
    pub policy: Option<String>,
    /// Print the send as JSON.
    #[arg(long)]
    pub json: bool,
}
