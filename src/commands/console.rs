//! Where a command prints and what it may take from the process around it: the
//! binary hands over its own stdout, stderr, environment and signals; a program
//! that runs commands inside itself (the tests) hands over buffers and a map.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::config::Env;

/// A command's standard output and standard error.
pub struct Console {
    /// Standard output: what the command was asked for.
    pub(crate) out: Box<dyn Write + Send>,
    /// Standard error: notes, warnings and the failure.
    pub(crate) err: Box<dyn Write + Send>,
    /// Whether `err` is the process's stderr and a terminal: the progress bar
    /// draws there by itself.
    terminal: bool,
}

impl Console {
    /// This process's stdout and stderr.
    pub fn std() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// `out` and `err`, neither a terminal.
    pub fn new(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            err,
            terminal: false,
        }
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// `print!` onto `out`.
    pub(crate) fn print(&mut self, text: std::fmt::Arguments<'_>) {
        write(&mut self.out, text, "stdout");
    }

    /// `eprint!` onto `err`.
    pub(crate) fn eprint(&mut self, text: std::fmt::Arguments<'_>) {
        write(&mut self.err, text, "stderr");
    }
}

/// Writes as `print!` does, whose panic on a failed write keeps a full disk
/// from passing for a complete output. A reader gone (`wxpush runs | head`) is
/// the exception, and quiet: the binary's commands die of SIGPIPE before such
/// a write returns, and a host that ignores SIGPIPE must not panic for it.
fn write(to: &mut dyn Write, text: std::fmt::Arguments<'_>, name: &str) {
    if let Err(e) = to.write_fmt(text)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("failed printing to {name}: {e}");
    }
}

/// `print!` onto a console's `out`.
macro_rules! out {
    ($console:expr, $($arg:tt)*) => {
        $console.print(format_args!($($arg)*))
    };
}

/// `println!` onto a console's `out`.
macro_rules! outln {
    ($console:expr) => {
        $console.print(format_args!("\n"))
    };
    ($console:expr, $($arg:tt)*) => {
        $console.print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` onto a console's `err`.
macro_rules! errln {
    ($console:expr, $($arg:tt)*) => {
        $console.eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// What a command gets from the program that runs it.
pub struct Host {
    /// Where it prints.
    pub(crate) console: Console,
    /// Where the configuration's overrides come from.
    pub(crate) env: Env,
    /// `None`: the command owns the process, so SIGTERM and SIGINT stop it and
    /// it installs the global log subscriber. Else this token stops it, and it
    /// installs neither signal handlers nor a subscriber, which belong to the
    /// host program: its logs go to the host's subscriber, if there is one.
    /// (`run`, the daemon, still installs the global metrics recorder: it is
    /// meant for a process of its own.)
    stop: Option<CancellationToken>,
}

impl Host {
    /// This process: its stdout, stderr, environment and signals.
    pub fn process() -> Self {
        Self {
            console: Console::std(),
            env: Env::Process,
            stop: None,
        }
    }

    /// A guest in another program: `console`, the variables of `env` and
    /// nothing else; `stop` cancelled does what SIGTERM does to the binary.
    pub fn guest(console: Console, env: Env, stop: CancellationToken) -> Self {
        Self {
            console,
            env,
            stop: Some(stop),
        }
    }

    pub(crate) fn owns_process(&self) -> bool {
        self.stop.is_none()
    }

    /// The token that stops a command as SIGTERM would.
    pub(crate) fn shutdown(&self) -> CancellationToken {
        match &self.stop {
            None => crate::shutdown::on_signals(),
            Some(stop) => stop.clone(),
        }
    }
}
