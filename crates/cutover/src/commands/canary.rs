//! `cutover promote SERVICE [--full]` and `cutover abort SERVICE`: control a canary in progress
//! from any shell. The deploy that runs the canary reports what follows.

use cutover_engine::ops;
use cutover_engine::ops::canary::CanaryAction;

use crate::cli::{AbortArgs, Cli, PromoteArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Ends the current and every later pause of the service's canary (`--full`: 100% now).
pub fn promote(cli: &Cli, args: &PromoteArgs) -> Result<i32, CliError> {
    let action = if args.full {
        CanaryAction::PromoteFull
    } else {
        CanaryAction::Promote
    };
    control(cli, &args.service, action)
}

/// Rolls the service's canary back now.
pub fn abort(cli: &Cli, args: &AbortArgs) -> Result<i32, CliError> {
    control(cli, &args.service, CanaryAction::Abort)
}

fn control(cli: &Cli, service: &str, action: CanaryAction) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    ops::canary::control(&ops::Context::new(&project, &agents), &env, service, action)?;
    let what = match action {
        CanaryAction::Promote => {
            "promoted: its pauses end; each step still needs a passing judgement"
        }
        CanaryAction::PromoteFull => "promoted to 100% now, without further judgement",
        CanaryAction::Abort => "aborted: all traffic goes back to the stable release",
    };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "env": env.name, "service": service, "action": action.as_str() })
        );
    } else {
        println!("{service} in {}: canary {what}", env.name);
    }
    Ok(OK)
}
