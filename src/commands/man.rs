//! `wxpush man`: the man page. clap_mangen writes the title, synopsis,
//! description and options; the commands are listed here in the page itself
//! (its SUBCOMMANDS section would refer to `wxpush-run(1)` and other pages
//! that are not shipped), followed by what an operator looks a man page up
//! for: exit status, environment, files.

use std::io::Write;

use clap_mangen::roff::{Roff, bold, italic, roman};

/// Writes the man page to `w`.
pub(super) fn render(w: &mut dyn Write) -> std::io::Result<()> {
    let command = <crate::cli::Cli as clap::CommandFactory>::command();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        roff.control("TP", []);
        roff.text([bold(format!("wxpush {}", sub.get_name()))]);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        roff.text([roman(about)]);
    }
    roff.text([
        roman("Each command's options: "),
        bold("wxpush help COMMAND"),
        roman("."),
    ]);
    section(&mut roff, "EXIT STATUS", EXIT_STATUS);
    section(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    section(&mut roff, "FILES", FILES);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        italic("/usr/share/doc/wxpush/README.md"),
        roman(" (every key, the metrics, operations), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1)."),
    ]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// A section of tagged paragraphs: `(tag, text)`.
fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*text)]);
    }
}

const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Success: everything sent (or skipped for lack of consent), nothing left to send, a clean stop of the daemon, or a check that found no problem.",
    ),
    (
        "1",
        "Some deliveries were not sent (failed, refused, invalid, unknown, expired); health: the daemon is not ready; a dry run found invalid messages; an unknown openid for recipients show or remove.",
    ),
    (
        "2",
        "Usage or configuration: a bad flag, a config problem (each named with its file, key or line), a missing secret, an unknown job, no database yet for a reading command, backup on PostgreSQL.",
    ),
    (
        "3",
        "Could not proceed: the database, no token, a run stopped (WeChat or the database out of reach, a fault), the slot's send window closed, another process sending the job (SQLite), other instances holding deliveries that made no progress for a lease, or interrupted by SIGTERM or SIGINT.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("WXPUSH_CONFIG", "The config file, as --config."),
    (
        "WXPUSH__SECTION__KEY",
        "Overrides the key of the file (after the file; e.g. WXPUSH__DELIVERY__CONCURRENCY=8, WXPUSH__APPS__SHOP__SECRET_FILE=...). A variable that names no key is an error naming it.",
    ),
    (
        "WXPUSH__WECHAT__SECRET_FILE",
        "A file holding the AppSecret (a Docker secret, a systemd credential); best kept out of the environment itself.",
    ),
    ("RUST_LOG", "The log filter, over [log] level."),
    (
        "PGPASSWORD, PGPASSFILE",
        "A PostgreSQL password, as with libpq.",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd: readiness and watchdog notifications.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "config/wxpush.toml",
        "The config file when none is named, from the working folder.",
    ),
    (
        "/etc/wxpush/wxpush.toml",
        "The package's config file, read when config/wxpush.toml does not exist.",
    ),
    (
        "/var/lib/wxpush/wxpush.db",
        "The packaged service's SQLite database (StateDirectory=wxpush), with its -wal and -shm files.",
    ),
    (
        "DATABASE.locks/",
        "Lock files beside a SQLite database: one sender per job, and the setup lock.",
    ),
    (
        "/etc/wxpush/credentials/",
        "The AppSecret and other secrets for the systemd unit's LoadCredential=.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        let mut out = Vec::new();
        render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_page_has_what_operators_look_up_and_refers_to_no_page_not_shipped() {
        let page = page();
        for section in [
            ".SH COMMANDS",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
        ] {
            assert!(page.contains(section), "{section} in\n{page}");
        }
        // clap_mangen's own list refers to wxpush-run(1) and the like.
        assert!(!page.contains("wxpush\\-"), "{page}");
        let command = <crate::cli::Cli as clap::CommandFactory>::command();
        for sub in command.get_subcommands() {
            assert!(
                page.contains(&format!("wxpush {}", sub.get_name())),
                "{} is listed",
                sub.get_name()
            );
        }
    }

    #[test]
    fn help_lists_every_command_the_completions_offer() {
        // Completions offer every subcommand that is not hidden; help lists
        // the same, so none may be hidden.
        let command = <crate::cli::Cli as clap::CommandFactory>::command();
        let hidden: Vec<&str> = command
            .get_subcommands()
            .filter(|s| s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command.clone(),
            "wxpush",
            &mut out,
        );
        let completions = String::from_utf8(out).unwrap();
        let help = command.clone().render_help().to_string();
        for name in ["man", "completions", "instances"] {
            assert!(completions.contains(name) && help.contains(name), "{name}");
        }
    }
}
