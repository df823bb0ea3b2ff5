//! `cutover status`: every service of the environment as it is now.

use cutover_engine::ops;
use cutover_engine::ops::status::AgentState;

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK};
use crate::render::table::Table;

/// Prints the status table (or `--json`).
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let project = match context::load_lenient(cli)? {
        context::Loaded::Project(p) => *p,
        context::Loaded::Broken {
            error,
            dir,
            state_dir,
        } => return what_runs(cli, &error, dir, state_dir),
    };
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let status = ops::status::status(
        &ops::Context::new(&project, &agents),
        &env,
        &mut context::progress(cli),
    )?;
    let (rows, runs, lock) = (&status.services, &status.runs, &status.lock);
    if cli.json {
        let lock_doc = lock.as_ref().map(
            |l| serde_json::json!({ "holder": l.holder, "reason": l.reason, "since": l.since }),
        );
        let doc = serde_json::json!({
            "env": status.env,
            "services": rows,
            "runs": runs,
            "lock": lock_doc,
        });
        println!("{doc}");
        return Ok(OK);
    }
    println!(
        "{} ({})",
        status.env,
        match status.agent {
            AgentState::Running => "agent running",
            AgentState::StoppedByUser => {
                "agent stopped by `cutover agent stop`: nothing runs until `cutover agent start` \
                 or the next deploy"
            }
            AgentState::NotRunning => "no agent: nothing runs",
        }
    );
    let mut t = Table::new(&[
        "SERVICE",
        "RELEASE",
        "PHASE",
        "HEALTH",
        "INSTANCES",
        "TRAFFIC",
        "URL",
    ]);
    for r in rows {
        let traffic = r
            .traffic
            .iter()
            .map(|t| format!("{}% {}", t.weight, t.release))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            r.name.clone(),
            r.release.clone().unwrap_or_else(|| "-".into()),
            r.phase.clone().unwrap_or_else(|| "-".into()),
            r.health.clone(),
            format!("{}/{}", r.instances.ready, r.instances.desired),
            if traffic.is_empty() {
                "-".into()
            } else {
                traffic
            },
            r.url.clone(),
        ]);
    }
    print!("{}", t.render());
    for r in rows {
        if !r.tasks.is_empty() {
            // Tasks per node, e.g. "web: tasks node-a 1/1 ready, node-b 1/1 ready".
            let mut per_node: std::collections::BTreeMap<&str, (u32, u32)> =
                std::collections::BTreeMap::new();
            for t in r.tasks.iter().filter(|t| t.role == "live") {
                let e = per_node.entry(t.node.as_str()).or_default();
                e.1 += 1;
                if t.ready {
                    e.0 += 1;
                }
            }
            let nodes: Vec<String> = per_node
                .iter()
                .map(|(n, (ready, all))| format!("{n} {ready}/{all} ready"))
                .collect();
            println!("{}: tasks on {}", r.name, nodes.join(", "));
        }
        if let Some(why) = &r.reason {
            println!("{}: not running: {why}", r.name);
        }
        if let Some(c) = &r.canary {
            let state = match c.state.as_str() {
                "waiting_for_promote" => "waiting for `cutover promote`",
                "paused" => "paused",
                _ => "judging",
            };
            println!(
                "{}: canary {} at {}% (step {}/{}, {state}); stable {}",
                r.name, c.release, c.weight, c.step, c.steps, c.stable
            );
            if let Some(j) = &c.judgement {
                println!(
                    "  last judgement: {}: {}",
                    j.verdict.replace('_', " "),
                    j.detail
                );
            }
        }
    }
    if let Some(lock) = lock {
        println!("{}", ops::lock::describe(lock));
    }
    for r in runs {
        match &r.waiting {
            Some(what) => println!(
                "run {} is awaiting_approval ({what}): `cutover approve {}` lets it go on",
                r.id, r.id
            ),
            None => println!("run {} is {}", r.id, r.phase),
        }
    }
    Ok(OK)
}

/// `status` when cutover.toml does not load: the error as a warning, then what the agent runs
/// (from its own record), without starting anything.
fn what_runs(
    cli: &Cli,
    error: &CliError,
    dir: std::path::PathBuf,
    state_dir: cutover_store::StateDir,
) -> Result<i32, CliError> {
    crate::diagnostics::warn(&format!(
        "cutover.toml does not load, so this shows only what the agent runs: {}",
        error.headline()
    ));
    let shown = dir.display().to_string();
    let services = ops::status::agent_services(&context::Launcher::new(state_dir, dir))?;
    if cli.json {
        let rows: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                serde_json::json!({
                    "env": s.env, "name": s.service, "release": s.release, "health": s.health,
                    "instances": { "ready": s.ready, "desired": s.desired },
                    "traffic": s.traffic, "url": s.url, "reason": s.problem,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "services": rows, "config_error": error.headline() })
        );
        return Ok(OK);
    }
    if services.is_empty() {
        println!("no agent runs for {shown}");
        return Ok(OK);
    }
    let mut t = Table::new(&["ENV", "SERVICE", "RELEASE", "HEALTH", "INSTANCES", "URL"]);
    for s in &services {
        t.row(vec![
            s.env.clone(),
            s.service.clone(),
            s.release.clone().unwrap_or_else(|| "-".into()),
            s.health.clone(),
            format!("{}/{}", s.ready, s.desired),
            s.url.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(OK)
}
