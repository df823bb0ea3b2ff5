//! `cutover plan`: which services a run would touch, why, and in what order.

use cutover_engine::plan::{PlanOptions, plan};

use crate::cli::{Cli, PlanArgs, PlanFormat};
use crate::context;
use crate::exit::{CliError, OK};
use crate::render::table::Table;

/// Prints the plan.
pub fn run(cli: &Cli, args: &PlanArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let store = context::store(&project, false)?;
    let opts = PlanOptions {
        all: args.all,
        since: args.since.clone(),
        named: Vec::new(),
    };
    let plan = plan(&project, &env, store.as_deref(), &opts)?;
    let format = if cli.json {
        PlanFormat::Json
    } else {
        args.format
    };
    match format {
        PlanFormat::Json => {
            let doc = serde_json::json!({ "env": plan.env, "services": plan.services });
            println!("{doc}");
        }
        PlanFormat::GithubMatrix => {
            let include: Vec<_> = plan
                .affected()
                .map(|s| serde_json::json!({ "service": s.name }))
                .collect();
            println!("{}", serde_json::json!({ "include": include }));
        }
        PlanFormat::Table => {
            let affected = plan.affected().count();
            println!(
                "plan for {}: {affected} of {} services affected",
                plan.env,
                plan.services.len()
            );
            let mut t = Table::new(&["LAYER", "SERVICE", "STRATEGY", "AFFECTED", "REASON"]);
            for s in &plan.services {
                t.row(vec![
                    s.layer.to_string(),
                    s.name.clone(),
                    s.strategy.to_string(),
                    if s.affected { "yes" } else { "no" }.to_string(),
                    s.reason.clone(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(OK)
}
