//! `cutover deploy`: the whole pipeline, releases handed to the agent.

use cutover_store::RunKind;

use crate::cli::{Cli, DeployArgs};
use crate::exit::CliError;

/// Deploys the affected (or named) services, waiting up to `--lock-wait` for a lock and, in an
/// environment with `require_approval`, up to `--approval-timeout` for `cutover approve`; with
/// `--smoke` each one is smoke-tested as part of verify.
pub fn run(cli: &Cli, args: &DeployArgs) -> Result<i32, CliError> {
    super::build::pipeline(
        cli,
        &args.build,
        RunKind::Deploy,
        args.lock_wait,
        args.atomic,
        args.approval_timeout,
        args.smoke,
    )
}
