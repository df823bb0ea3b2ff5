//! `cutover worktree setup | list | remove`: a git branch and worktree per service.

use cutover_config::Project;
use cutover_engine::ops;
use cutover_engine::team::Team;
use serde::Serialize;

use crate::cli::{Cli, WorktreeAction, WorktreeArgs};
use crate::context;
use crate::exit::{CliError, FAILED, OK};
use crate::render::table::Table;

/// Runs the worktree action.
pub fn run(cli: &Cli, args: &WorktreeArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let team = open(&project)?;
    match &args.action {
        WorktreeAction::Setup {
            services,
            dir,
            base,
        } => setup(
            cli,
            &project,
            &team,
            services,
            dir.as_deref(),
            base.as_deref(),
        ),
        WorktreeAction::List => list(cli, &project, &team),
        WorktreeAction::Remove {
            services,
            force,
            delete_branch,
        } => remove(cli, &project, &team, services, *force, *delete_branch),
    }
}

/// The project's team view of its repository (see [`ops::merge::open_team`]).
pub fn open(project: &Project) -> Result<Team, CliError> {
    Ok(ops::merge::open_team(project)?)
}

/// The services named (checked against the configuration), or every service.
pub fn services(project: &Project, named: &[String]) -> Result<Vec<String>, CliError> {
    Ok(ops::merge::services(project, named)?)
}

fn setup(
    cli: &Cli,
    project: &Project,
    team: &Team,
    named: &[String],
    dir: Option<&std::path::Path>,
    base: Option<&str>,
) -> Result<i32, CliError> {
    let services = services(project, named)?;
    let parent = match dir {
        Some(d) => {
            let cwd = std::env::current_dir().map_err(|e| {
                CliError::failed(format!("cannot read the current directory: {e}"), None)
            })?;
            cwd.join(d)
        }
        None => team.default_parent(),
    };
    let base = match base {
        Some(b) => b.to_string(),
        None => team.current_branch().ok_or_else(|| {
            CliError::usage(
                "the main worktree is not on a branch (detached HEAD), so there is no default base",
                Some("pass --base BRANCH".into()),
            )
        })?,
    };
    let mut done = Vec::new();
    for s in &services {
        let outcome = team.setup(s, &parent, &base)?;
        if !cli.json {
            eprintln!(
                "{}: {} {} at {}",
                outcome.service,
                outcome.branch,
                outcome.result.as_str(),
                outcome.path.display()
            );
        }
        done.push(outcome);
    }
    if cli.json {
        print_json(&serde_json::json!({ "base": base, "worktrees": done }))?;
    } else {
        let mut t = Table::new(&["SERVICE", "BRANCH", "RESULT", "PATH"]);
        for o in &done {
            t.row(vec![
                o.service.clone(),
                o.branch.clone(),
                o.result.as_str().to_string(),
                o.path.display().to_string(),
            ]);
        }
        print!("{}", t.render());
        if let Some(first) = done.first() {
            println!(
                "deploy from a worktree with `cutover -C {} deploy {}`; merge with `cutover merge`",
                team.project_dir_in(&first.path).display(),
                first.service
            );
        }
    }
    Ok(OK)
}

#[derive(Serialize)]
struct ListRow {
    #[serde(flatten)]
    info: cutover_engine::team::worktree::WorktreeInfo,
    release: Option<String>,
    release_sha: Option<String>,
    health: String,
}

fn list(cli: &Cli, project: &Project, team: &Team) -> Result<i32, CliError> {
    let env = context::environment(cli, project)?;
    let services = services(project, &[])?;
    let infos = team.list(&services)?;
    let store = context::store(project, false)?;
    // Never start an agent to list: without one, services are stopped.
    let live = match context::agent(project, false)? {
        Some(client) => {
            let rt = context::runtime()?;
            rt.block_on(client.status()).ok()
        }
        None => None,
    };
    let mut rows = Vec::new();
    for info in infos {
        let active = match &store {
            Some(s) => s.active_release(&info.service, &env.name)?,
            None => None,
        };
        let health = live
            .as_ref()
            .and_then(|l| {
                l.services
                    .iter()
                    .find(|x| x.env == env.name && x.service == info.service)
            })
            .map_or("stopped".to_string(), |x| x.health.clone());
        rows.push(ListRow {
            release: active.as_ref().map(|a| a.id.clone()),
            release_sha: active.and_then(|a| a.sha),
            health,
            info,
        });
    }
    if cli.json {
        return print_json(&serde_json::json!({ "env": env.name, "worktrees": rows })).map(|()| OK);
    }
    if rows.is_empty() {
        println!("no service worktrees yet: `cutover worktree setup` creates them");
        return Ok(OK);
    }
    let mut t = Table::new(&[
        "SERVICE", "BRANCH", "PATH", "AHEAD", "BEHIND", "DIRTY", "RELEASE", "HEALTH",
    ]);
    for r in &rows {
        let opt = |n: Option<usize>| n.map_or("-".to_string(), |n| n.to_string());
        t.row(vec![
            r.info.service.clone(),
            if r.info.branch_exists {
                r.info.branch.clone()
            } else {
                format!("{} (gone)", r.info.branch)
            },
            r.info
                .path
                .as_ref()
                .map_or("-".to_string(), |p| p.display().to_string()),
            opt(r.info.ahead),
            opt(r.info.behind),
            match r.info.dirty {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "-".into(),
            },
            r.release.clone().unwrap_or_else(|| "-".into()),
            r.health.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(OK)
}

fn remove(
    cli: &Cli,
    project: &Project,
    team: &Team,
    named: &[String],
    force: bool,
    delete_branch: bool,
) -> Result<i32, CliError> {
    let services = services(project, named)?;
    let mut outcomes = Vec::new();
    for s in &services {
        let o = team.remove(s, force, delete_branch)?;
        if named.is_empty() && o.result == "absent" && o.note.is_none() {
            continue;
        }
        if !cli.json {
            match &o.note {
                Some(note) => eprintln!("{}: {}; {note}", o.service, o.result),
                None => eprintln!("{}: {}", o.service, o.result),
            }
        }
        outcomes.push(o);
    }
    let refused = outcomes.iter().any(|o| o.result == "refused");
    if cli.json {
        print_json(&serde_json::json!({ "worktrees": outcomes }))?;
    } else {
        let mut t = Table::new(&["SERVICE", "RESULT", "NOTE"]);
        for o in &outcomes {
            t.row(vec![
                o.service.clone(),
                o.result.clone(),
                o.note.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(if refused { FAILED } else { OK })
}

fn print_json(doc: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string(doc)
        .map_err(|e| CliError::failed(format!("encoding the answer: {e}"), None))?;
    println!("{text}");
    Ok(())
}
