use std::process::ExitCode;

use clap::Parser;
use emostream::cli::{Cli, Command};
use emostream::{replay_cmd, run_cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMOSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Replay(args) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match replay_cmd::run(&args, &mut out) {
                Ok(report) => {
                    eprint!("{}", replay_cmd::describe(&report));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("emostream replay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => match run_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("emostream run: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
