//! `cutover plan`: which services a run would touch, why, and in what order.

use cutover_engine::plan::{PlanOptions, PlannedService, plan};

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
        not_running: context::not_running(&project, &env.name),
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
            let mut t = Table::new(&[
                "LAYER", "SERVICE", "STRATEGY", "MIN TIME", "AFFECTED", "REASON",
            ]);
            for s in &plan.services {
                t.row(vec![
                    s.layer.to_string(),
                    s.name.clone(),
                    s.strategy.to_string(),
                    min_time(s),
                    if s.affected { "yes" } else { "no" }.to_string(),
                    s.reason.clone(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(OK)
}

/// "45m40s", "0s", "30s + manual promote", "10s + 2 manual promotes" (a manual canary pause
/// ends with `cutover promote`; approvals are the `require_approval` gate, another thing).
fn min_time(s: &PlannedService) -> String {
    let d = std::time::Duration::try_from_secs_f64(s.min_duration_seconds)
        .unwrap_or(std::time::Duration::MAX);
    let time = cutover_config::format_duration(d);
    match s.manual_pauses {
        0 => time,
        1 => format!("{time} + manual promote"),
        n => format!("{time} + {n} manual promotes"),
    }
}
