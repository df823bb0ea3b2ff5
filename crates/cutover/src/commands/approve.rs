//! `cutover approve RUN [--reject --reason R]`: decides a deploy waiting at its environment's
//! approval gate (`require_approval = true`), from any shell.

use cutover_engine::ops;

use crate::cli::{ApproveArgs, Cli};
use crate::context;
use crate::exit::{CliError, OK};

/// Approves (or with `--reject`, refuses) the waiting run `args.run`; exit 1 when it is not
/// waiting.
pub fn run(cli: &Cli, args: &ApproveArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let agents = context::launcher(&project);
    let decision = ops::approve::Decision {
        run: args.run.clone(),
        reject: args.reject,
        by: context::user_at_host(),
        reason: args.reason.clone(),
    };
    let approval = ops::approve::decide(&ops::Context::new(&project, &agents), &decision)?;
    if cli.json {
        let text = serde_json::to_string(&approval)
            .map_err(|e| CliError::failed(format!("encoding the approval: {e}"), None))?;
        println!("{text}");
    } else {
        println!(
            "{} ({}: {})",
            ops::approve::describe(&approval),
            approval.env,
            approval.waiting
        );
    }
    Ok(OK)
}
