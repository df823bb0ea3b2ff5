//! `cutover merge`: merge each service branch into its base, only where the environment's
//! ACTIVE release was built from the branch head and is healthy right now.

use std::io::Write;

use cutover_engine::team::merge::{Deployed, MergeResult, gate};
use serde::Serialize;

use crate::cli::{Cli, MergeArgs};
use crate::context;
use crate::exit::{CliError, FAILED, OK};
use crate::render::table::Table;

#[derive(Serialize)]
struct Row {
    name: String,
    branch: String,
    /// merged | up_to_date | skipped | conflict | failed
    result: String,
    release: Option<String>,
    commit: Option<String>,
    reason: Option<String>,
    conflicts: Vec<String>,
    cleanup: Option<String>,
}

/// Merges what is deployed and healthy; exit 1 when a merge conflicted or failed.
pub fn run(cli: &Cli, args: &MergeArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let team = super::worktree::open(&project)?;
    let named = super::worktree::services(&project, &args.services)?;
    // The services with a branch (a named one without gets a reason).
    let candidates: Vec<(String, String)> = named
        .iter()
        .map(|s| (s.clone(), team.branch_name(s)))
        .filter(|(_, b)| !args.services.is_empty() || team.branch_head(b).is_some())
        .collect();
    let current = team.current_branch();
    let base = candidates
        .iter()
        .find_map(|(_, b)| team.recorded_base(b))
        .or(current.clone())
        .ok_or_else(|| {
            CliError::failed(
                "the main worktree is not on a branch (detached HEAD)",
                Some("switch it to the base branch the service branches came from".into()),
            )
        })?;
    for (_, b) in &candidates {
        if let Some(other) = team.recorded_base(b).filter(|x| *x != base) {
            return Err(CliError::usage(
                format!("{b} was made from {other}, but other branches from {base}"),
                Some("merge them in two runs, naming the services of each base".into()),
            ));
        }
    }
    team.ready_to_merge_into(&base)?;

    let store = context::store(&project, false)?;
    let live = match context::agent(&project, false)? {
        Some(client) => context::runtime()?.block_on(client.status()).ok(),
        None => None,
    };
    let started = chrono::Utc::now();
    let (log_path, mut log) = cutover_engine::ops::open_command_log(
        &context::state_dir(&project),
        "merge",
        &format!("merge-{}", started.format("%Y%m%d-%H%M%S")),
    )?;
    let mut note = |line: &str| {
        let _ = writeln!(
            log,
            "{} {line}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        if !cli.json {
            eprintln!("{line}");
        }
    };
    note(&format!(
        "merge into {base} in {} ({} env)",
        team.root().display(),
        env.name
    ));

    let mut rows = Vec::new();
    for (service, branch) in candidates {
        let mut row = Row {
            name: service.clone(),
            branch: branch.clone(),
            result: "skipped".into(),
            release: None,
            commit: None,
            reason: None,
            conflicts: Vec::new(),
            cleanup: None,
        };
        let Some(head) = team.branch_head(&branch) else {
            row.reason = Some(format!(
                "branch {branch} does not exist: `cutover worktree setup {service}` creates it"
            ));
            note(&format!(
                "{service}: skipped: {}",
                row.reason.as_deref().unwrap_or("")
            ));
            rows.push(row);
            continue;
        };
        let head = head.to_string();
        let active = match &store {
            Some(s) => s.active_release(&service, &env.name)?,
            None => None,
        };
        let deployed = active.as_ref().map(|a| Deployed {
            release: &a.id,
            sha: a.sha.as_deref(),
            dirty: a.dirty,
            branch: a.branch.as_deref(),
        });
        let serving = live.as_ref().map(|l| {
            l.services
                .iter()
                .find(|x| x.env == env.name && x.service == service)
                .map_or((None, "stopped"), |x| {
                    (x.release.as_deref(), x.health.as_str())
                })
        });
        row.release = active.as_ref().map(|a| a.id.clone());
        if let Some(why) = gate(&env.name, &branch, &head, deployed.as_ref(), serving) {
            note(&format!("{service}: skipped: {why}"));
            row.reason = Some(why);
            rows.push(row);
            continue;
        }
        let release = row.release.clone().unwrap_or_default();
        let message = format!(
            "Merge branch '{branch}' into {base}\n\n\
             cutover merge: service {service}, release {release} (ACTIVE in {}), health healthy\n\n\
             Cutover-Service: {service}\nCutover-Release: {release}\nCutover-Env: {}\nCutover-Health: healthy\n",
            env.name, env.name
        );
        match team.merge_branch(&branch, &message) {
            Ok(MergeResult::Merged { commit }) => {
                note(&format!(
                    "{service}: merged {branch} ({}) into {base}: {commit} (release {release}, healthy)",
                    &head[..7]
                ));
                row.result = "merged".into();
                row.commit = Some(commit);
            }
            Ok(MergeResult::UpToDate) => {
                note(&format!("{service}: {base} already contains {branch}"));
                row.result = "up_to_date".into();
            }
            Ok(MergeResult::Conflict { paths }) => {
                let why = format!(
                    "{branch} conflicts with {base} in {}; nothing was changed. To finish by hand: \
                     `git merge --no-ff {branch}` in {}, resolve, commit; or merge {base} into \
                     {branch} in its worktree, deploy it again and rerun `cutover merge {service}`",
                    paths.join(", "),
                    team.root().display()
                );
                note(&format!("{service}: conflict: {why}"));
                row.result = "conflict".into();
                row.reason = Some(why);
                row.conflicts = paths;
            }
            Err(e) => {
                note(&format!("{service}: failed: {e}"));
                row.result = "failed".into();
                row.reason = Some(e.to_string());
            }
        }
        if args.cleanup && matches!(row.result.as_str(), "merged" | "up_to_date") {
            let what = match team.remove(&service, false, true) {
                Ok(o) => match (o.result.as_str(), o.note) {
                    ("refused", Some(n)) => format!("worktree kept: {n}"),
                    (r, Some(n)) => format!("worktree {r}; {n}"),
                    (r, None) => format!("worktree {r}"),
                },
                Err(e) => format!("cleanup failed: {e}"),
            };
            note(&format!("{service}: {what}"));
            row.cleanup = Some(what);
        }
        rows.push(row);
    }
    let bad = rows
        .iter()
        .any(|r| matches!(r.result.as_str(), "conflict" | "failed"));
    if cli.json {
        let doc = serde_json::json!({
            "env": env.name,
            "base": base,
            "log": log_path,
            "services": rows,
        });
        println!("{doc}");
    } else {
        if rows.is_empty() {
            println!("no service branches to merge: `cutover worktree setup` creates them");
        } else {
            let mut t = Table::new(&["SERVICE", "BRANCH", "RESULT", "RELEASE", "REASON"]);
            for r in &rows {
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
        println!("log: {}", log_path.display());
    }
    Ok(if bad { FAILED } else { OK })
}
