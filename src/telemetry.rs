//! Logging: human lines by default, JSON for log shippers; always to stderr so that
//! command output on stdout stays clean.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` wins over `[log] level`.
pub(crate) fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // PostgreSQL's NOTICEs (such as "already exists, skipping" from the
    // migrations every start runs) say nothing to an operator; a filter that
    // names sqlx itself still gets them.
    let filter = if filter.to_string().contains("sqlx") {
        filter
    } else {
        filter.add_directive(
            "sqlx::postgres::notice=warn"
                .parse()
                .expect("a valid directive"),
        )
    };
    // Under systemd the journal adds its own timestamps and shows no colours.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match (log.format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Pretty, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Pretty, false) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // A second init (tests calling the library twice) keeps the first subscriber.
    drop(result);
}
