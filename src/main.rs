use std::process::ExitCode;

use clap::Parser;
use wxpush::cli::Cli;
use wxpush::commands;

#[tokio::main]
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
