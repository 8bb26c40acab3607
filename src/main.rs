use std::process::ExitCode;

use clap::Parser;
use emostream::cli::{Cli, Command};
use emostream::replay_cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
}
