//! `cutover deploy`: the whole pipeline, releases handed to the agent.

use cutover_store::RunKind;

use crate::cli::{BuildArgs, Cli};
use crate::exit::CliError;

/// Deploys the affected (or named) services.
pub fn run(cli: &Cli, args: &BuildArgs) -> Result<i32, CliError> {
    super::build::pipeline(cli, args, RunKind::Deploy)
}
