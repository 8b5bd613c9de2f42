use std::process::ExitCode;

use clap::Parser;
use wxpush::cli::Cli;
use wxpush::commands;

// One thread does the HTTP work (SQLite has its own): measured ~15% less CPU per
// message than the multi-threaded runtime at the same throughput (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::execute(cli).await {
        Ok(exit) => exit.into(),
        Err(failure) => {
            for line in failure.message.lines() {
                eprintln!("wxpush: {line}");
            }
            failure.exit.into()
        }
    }
}
