//! The subcommands, one module each; `dispatch` calls the one the arguments name. Each parses
//! nothing itself (crate::cli), calls the library crates and prints people- or script-facing
//! output; exit codes are in crate::exit.

pub mod bench;
mod common;
mod compare;
mod gc;
mod inspect;
mod report;
mod run;
pub mod submit;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use common::Global;

use crate::cli::{Cli, Color, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = cli
        .store
        .clone()
        .or_else(|| std::env::var_os("VAEPIPE_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".vaepipe"));
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let g = Global { store, color };
    match cli.command {
        Command::Run(a) => run::run(&g, a),
        Command::Plan(a) => inspect::plan_cmd(&g, a),
        Command::Validate(a) => inspect::validate(&g, a),
        Command::Status(a) => inspect::status(&g, a),
        Command::Report(a) => report::report(&g, a),
        Command::Gc(a) => gc::gc(&g, a),
        Command::Bench(a) => bench::run(a),
        Command::Submit(a) => submit::run(&g, a),
        Command::Compare(a) => compare::compare(&g, a),
    }
}
