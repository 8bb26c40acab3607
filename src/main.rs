use std::process::ExitCode;

use clap::Parser;
use emostream::cli::{Cli, Command};
use emostream::{load, logging, replay_cmd, run_cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Replay(args) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match replay_cmd::run(&args, &mut out) {
                Ok(report) if args.dataflow.process > 0 => {
                    let _ = report;
                    eprintln!(
                        "emostream replay: process {} of {} done; the windows and the summary are process 0's",
                        args.dataflow.process, args.dataflow.processes
                    );
                    ExitCode::SUCCESS
                }
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
        Command::Load(args) => match load::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("emostream load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Token(args) => match emostream::auth::mint::mint(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("emostream token: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("emostream run: {e}");
                ExitCode::from(e.exit_code())
            }
        },
    }
}
