use std::process::ExitCode;

use clap::Parser;
use wxpush::cli::Cli;
use wxpush::commands::{self, Host};

// One thread does the HTTP work (SQLite has its own): measured ~15% less CPU per
// message than the multi-threaded runtime at the same throughput (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, wxpush::cli::Command::Run) {
        // `wxpush runs | head`: a reader that stops early ends the command
        // quietly, as it does any Unix tool, instead of a panic on EPIPE. The
        // daemon keeps Rust's default, where a closed log pipe is only an error.
        // SAFETY: at start, before any thread; SIG_DFL is always a valid action.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    commands::run(cli, Host::process()).await.into()
}
