//! The `cutover` binary: command-line parsing, wiring, terminal output.
//!
//! # Layout
//! - `cli.rs`: global options and the verbs (clap).
//! - `ci/`: the CI workflows `cutover ci` generates.
//! - `commands/<verb>.rs`: one file per verb: parse, one library call, render. The deploy,
//!   rollback, status, promote/abort, approve, lock/unlock and merge logic is
//!   `cutover_engine::ops`'s.
//! - `context.rs`: finding and loading the project (`-C`), its environment (`--env`), starting
//!   the agent process ([`context::Launcher`]), who the user is; thin wrappers over `ops`.
//! - `secrets.rs`: the secret key, and encrypting and decrypting stored secrets.
//! - `render/`: the live terminal view, plain lines, tables.
//! - `monitor/`: the `cutover monitor` dashboard (ratatui).
//! - `diagnostics.rs`, `exit.rs`: how failures reach the user, and their exit codes.

mod ci;
mod cli;
mod commands;
mod context;
mod diagnostics;
mod exit;
mod monitor;
mod render;
mod secrets;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::CliError;

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            diagnostics::report(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn dispatch(cli: &Cli) -> Result<i32, CliError> {
    match &cli.command {
        Command::Init => commands::init::run(cli),
        Command::Validate => commands::validate::run(cli),
        Command::Schema => commands::schema::run(),
        Command::Plan(args) => commands::plan::run(cli, args),
        Command::Build(args) => commands::build::run(cli, args),
        Command::Deploy(args) => commands::deploy::run(cli, args),
        Command::Status => commands::status::run(cli),
        Command::Releases(args) => commands::releases::run(cli, args),
        Command::Rollback(args) => commands::rollback::run(cli, args),
        Command::Logs(args) => commands::logs::run(cli, args),
        Command::Promote(args) => commands::canary::promote(cli, args),
        Command::Abort(args) => commands::canary::abort(cli, args),
        Command::Pause(args) => commands::pause::pause(cli, args),
        Command::Resume(args) => commands::pause::resume(cli, args),
        Command::Down => commands::down::run(cli),
        Command::Agent(args) => commands::agent::run(cli, args),
        Command::Ci(args) => commands::ci::run(cli, args),
        Command::Secrets(args) => commands::secrets::run(cli, args),
        Command::Lock(args) => commands::lock::run(cli, args),
        Command::Unlock => commands::lock::unlock(cli),
        Command::Approve(args) => commands::approve::run(cli, args),
        Command::Test(args) => commands::test::run(cli, args),
        Command::Metrics(args) => commands::metrics::run(cli, args),
        Command::Worktree(args) => commands::worktree::run(cli, args),
        Command::Merge(args) => commands::merge::run(cli, args),
        Command::Monitor(args) => commands::monitor::run(cli, args),
    }
}
