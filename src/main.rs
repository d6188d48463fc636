//! The binary: parse the command line, load the config, run the command, map the result to an
//! exit code (SPEC.md §2). Only this file exits the process.

use std::process::ExitCode;
use watch_docker::cli::{self, Command};
use watch_docker::{commands, config, logging};

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watch-docker: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("watch-docker {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let loaded = match config::load_from_process(cli.config_file.clone(), cli.overrides.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("watch-docker: config: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&loaded.config.logging);
    for w in &loaded.warnings {
        log::warn!(component = "config"; "{w}");
    }
    let code = commands::run(&cli.command, &loaded);
    ExitCode::from(code)
}
