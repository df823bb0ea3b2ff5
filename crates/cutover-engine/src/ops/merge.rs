//! `merge`: merge each service branch into its base, only where the environment's ACTIVE
//! release was built from the branch head and is healthy right now.

use std::io::Write;
use std::path::PathBuf;

use cutover_config::{Project, ResolvedEnvironment};
use serde::Serialize;

use super::Context;
use crate::EngineError;
use crate::event::EventKind;
use crate::team::Team;
use crate::team::merge::{Deployed, MergeResult, gate};

/// What to merge.
#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    /// The services whose branches to merge (none: every service with a branch).
    pub services: Vec<String>,
    /// Remove the worktree (and delete the branch) of each service merged.
    pub cleanup: bool,
}

/// One service's merge (the `services` of `merge --json`).
#[derive(Debug, Clone, Serialize)]
pub struct MergeRow {
    /// The service.
    pub name: String,
    /// Its branch.
    pub branch: String,
    /// merged | up_to_date | skipped | conflict | failed
    pub result: String,
    /// Its ACTIVE release in the environment.
    pub release: Option<String>,
    /// The merge commit.
    pub commit: Option<String>,
    /// Why it was skipped, conflicted or failed.
    pub reason: Option<String>,
    /// The paths in conflict.
    pub conflicts: Vec<String>,
    /// What `cleanup` did.
    pub cleanup: Option<String>,
}

/// A finished merge.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The branch merged into.
    pub base: String,
    /// Its log, `.cutover/logs/merges/merge-YYYYMMDD-HHMMSS.log`.
    pub log: PathBuf,
    /// One row per service considered.
    pub services: Vec<MergeRow>,
}

impl MergeOutcome {
    /// Whether a merge conflicted or failed (exit 1).
    pub fn failed(&self) -> bool {
        self.services
            .iter()
            .any(|r| matches!(r.result.as_str(), "conflict" | "failed"))
    }
}

/// The project's team view of its repository; outside git an invalid request (exit 2).
pub fn open_team(project: &Project) -> Result<Team, EngineError> {
    Team::open(&project.dir, &project.name, &project.settings.branch_prefix).map_err(|e| match e {
        EngineError::NotGit { dir } => EngineError::invalid(
            format!(
                "{} is not inside a git repository: worktrees and merges need one",
                dir.display()
            ),
            Some("run `git init` and commit the project first".into()),
        ),
        other => other,
    })
}

/// The services named (checked against the configuration), or every service.
pub fn services(project: &Project, named: &[String]) -> Result<Vec<String>, EngineError> {
    let known: Vec<String> = project.services.iter().map(|s| s.name.clone()).collect();
    if named.is_empty() {
        return Ok(known);
    }
    for n in named {
        if !known.contains(n) {
            return Err(EngineError::UnknownService {
                name: n.clone(),
                known,
            });
        }
    }
    Ok(named.to_vec())
}

/// Merges what is deployed and healthy in `env`, logging each step (and telling `notes`). A
/// service that cannot be merged is a row saying why, not an error; the errors are a base that
/// cannot be found or branches made from different bases (nothing is merged then).
pub fn merge(
    cx: &Context,
    env: &ResolvedEnvironment,
    request: &MergeRequest,
    notes: &mut dyn FnMut(&str),
) -> Result<MergeOutcome, EngineError> {
    let project = cx.project;
    let team = open_team(project)?;
    let named = services(project, &request.services)?;
    // The services with a branch (a named one without gets a reason).
    let candidates: Vec<(String, String)> = named
        .iter()
        .map(|s| (s.clone(), team.branch_name(s)))
        .filter(|(_, b)| !request.services.is_empty() || team.branch_head(b).is_some())
        .collect();
    let current = team.current_branch();
    let base = candidates
        .iter()
        .find_map(|(_, b)| team.recorded_base(b))
        .or(current.clone())
        .ok_or_else(|| {
            EngineError::refused(
                "the main worktree is not on a branch (detached HEAD)",
                Some("switch it to the base branch the service branches came from".into()),
            )
        })?;
    for (_, b) in &candidates {
        if let Some(other) = team.recorded_base(b).filter(|x| *x != base) {
            return Err(EngineError::invalid(
                format!("{b} was made from {other}, but other branches from {base}"),
                Some("merge them in two runs, naming the services of each base".into()),
            ));
        }
    }
    team.ready_to_merge_into(&base)?;

    let store = cx.store(false)?;
    let live = match cx.agent(false)? {
        Some(client) => super::runtime()?.block_on(client.status()).ok(),
        None => None,
    };
    let started = chrono::Utc::now();
    // A merge is a run of its own in the store (when there is one): its typed events go there.
    let run = match &store {
        Some(s) => Some(s.create_run(
            cutover_store::RunKind::Merge,
            &env.name,
            started,
            Some(std::process::id()),
        )?),
        None => None,
    };
    let redactor = crate::redact::Redactor::new(Vec::<String>::new());
    // The log file is named by the time, as DESIGN.md's Files say (two merges in one second
    // share it; their store runs are apart).
    let (log_path, mut log) = super::open_command_log(
        &cx.state_dir(),
        "merge",
        &format!("merge-{}", started.format("%Y%m%d-%H%M%S")),
    )?;
    let mut note = |line: &str| {
        let _ = writeln!(
            log,
            "{} {line}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        notes(line);
    };
    note(&format!(
        "merge into {base} in {} ({} env)",
        team.root().display(),
        env.name
    ));

    let mut rows = Vec::new();
    for (service, branch) in candidates {
        let mut row = MergeRow {
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
                    head.get(..7).unwrap_or(&head)
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
        if request.cleanup && matches!(row.result.as_str(), "merged" | "up_to_date") {
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
    if let (Some(s), Some(run)) = (&store, &run) {
        let events = super::RunEvents {
            store: s.as_ref(),
            run: &run.id,
            redactor: &redactor,
        };
        for row in &rows {
            events.emit(
                EventKind::Merged {
                    service: row.name.clone(),
                    branch: row.branch.clone(),
                    base: base.clone(),
                    result: row.result.clone(),
                    commit: row.commit.clone(),
                    reason: row.reason.clone(),
                },
                &mut |_| {},
            );
        }
        let bad = rows
            .iter()
            .any(|r| matches!(r.result.as_str(), "conflict" | "failed"));
        let status = if bad {
            cutover_store::RunStatus::Failed
        } else {
            cutover_store::RunStatus::Succeeded
        };
        s.finish_run(&run.id, status, chrono::Utc::now(), None)?;
    }
    Ok(MergeOutcome {
        base,
        log: log_path,
        services: rows,
    })
}
