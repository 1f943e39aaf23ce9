//! The `vaepipe` command: a thin layer that parses arguments, loads the spec, composes the
//! stage registry and the executor, renders progress and results, and maps outcomes to exit
//! codes. All behaviour lives in the library crates.
//!
//! Exit codes: 0 success · 1 a stage failed · 2 invalid spec or usage · 3 interrupted (a
//! checkpoint was saved; running the same command again resumes).

mod cli;
mod commands;
mod exit;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::EXIT_FAILED)
        }
    }
}
