//! `cutover deploy`: the whole pipeline, releases handed to the agent.

use cutover_engine::ops::deploy::PipelineRequest;
use cutover_store::RunKind;

use crate::cli::{Cli, DeployArgs};
use crate::exit::CliError;

/// Deploys the affected (or named) services, waiting up to `--lock-wait` for a lock and, in an
/// environment with `require_approval`, up to `--approval-timeout` for `cutover approve`; with
/// `--smoke` each one is smoke-tested as part of verify.
pub fn run(cli: &Cli, args: &DeployArgs) -> Result<i32, CliError> {
    let request = PipelineRequest {
        kind: RunKind::Deploy,
        lock_wait: args.lock_wait,
        atomic: args.atomic,
        approval_timeout: args.approval_timeout,
        smoke: args.smoke,
        ..PipelineRequest::build()
    };
    super::build::pipeline(cli, &args.build, request)
}
