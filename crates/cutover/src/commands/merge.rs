//! `cutover merge`: merge each service branch into its base, only where the environment's
//! ACTIVE release was built from the branch head and is healthy right now.

use cutover_engine::ops;
use cutover_engine::ops::merge::MergeRequest;

use crate::cli::{Cli, MergeArgs};
use crate::context;
use crate::exit::{CliError, FAILED, OK};
use crate::render::table::Table;

/// Merges what is deployed and healthy; exit 1 when a merge conflicted or failed.
pub fn run(cli: &Cli, args: &MergeArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let request = MergeRequest {
        services: args.services.clone(),
        cleanup: args.cleanup,
    };
    let outcome = ops::merge::merge(
        &ops::Context::new(&project, &agents),
        &env,
        &request,
        &mut context::progress(cli),
    )?;
    let rows = &outcome.services;
    if cli.json {
        let doc = serde_json::json!({
            "env": env.name,
            "base": outcome.base,
            "log": outcome.log,
            "services": rows,
        });
        println!("{doc}");
    } else {
        if rows.is_empty() {
            println!("no service branches to merge: `cutover worktree setup` creates them");
        } else {
            let mut t = Table::new(&["SERVICE", "BRANCH", "RESULT", "RELEASE", "REASON"]);
            for r in rows {
                t.row(vec![
                    r.name.clone(),
                    r.branch.clone(),
                    r.result.clone(),
                    r.release.clone().unwrap_or_else(|| "-".into()),
                    r.reason
                        .clone()
                        .or_else(|| r.commit.clone())
                        .unwrap_or_default(),
                ]);
            }
            print!("{}", t.render());
        }
        println!("log: {}", outcome.log.display());
    }
    Ok(if outcome.failed() { FAILED } else { OK })
}
