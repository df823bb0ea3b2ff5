//! Executing a plan: one dispatcher task owns the run state and emits every event; one
//! executor task per affected service runs its stages and reports back.
//!
//! # Theory of operation
//! `execute` records the run, starts the reporter thread (`report::Fanout`), spawns an executor
//! per affected service and runs the dispatcher until every service has finished. Executors never
//! talk to reporters or to each other: they send [`executor::ExecMsg`]s to the dispatcher, and
//! before their gated stage (build in a build run) they ask it for permission, which it grants
//! once every dependency in the run has succeeded, or refuses with the reason when one did not.
//! In an environment with `require_approval`, each executor asks the dispatcher again before
//! anything of its deploy (hooks included) runs; once every running service waits there, the
//! dispatcher records the wait in the store and a watcher task polls it for `cutover approve`'s
//! decision, the timeout or Ctrl-C.
//! Cancellation is one `CancellationToken`: commands kill their process groups, waits end, and
//! every service not done ends `canceled`.

mod dispatcher;
mod executor;
mod smoke_verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use cutover_config::{Project, ResolvedEnvironment};
use cutover_store::{NewRelease, Release, ReleaseStore, RunKind, StateDir};
use tokio_util::sync::CancellationToken;

use crate::error::EngineError;
use crate::plan::Plan;
use crate::redact::Redactor;
use crate::report::{Fanout, Reporter};
use crate::summary::RunSummary;

/// Everything a run needs to know.
pub struct RunRequest {
    /// Build or deploy.
    pub kind: RunKind,
    /// The project.
    pub project: Arc<Project>,
    /// The resolved environment.
    pub env: Arc<ResolvedEnvironment>,
    /// What to run.
    pub plan: Plan,
    /// Services at once per stage.
    pub max_parallel: usize,
    /// Secret values by name (injected as the `env` entries that reference them; redacted).
    pub secrets: BTreeMap<String, String>,
    /// The agent that deploys releases (deploy runs only).
    pub agent: Option<cutover_runtime::api::client::AgentClient>,
    /// How long a run in an environment with `require_approval` waits for `cutover approve`
    /// before it ends (exit 3).
    pub approval_timeout: std::time::Duration,
    /// `deploy --smoke`: smoke-test each service once it is ACTIVE, as part of verify.
    pub smoke: bool,
    /// The run already recorded for this request (a deploy claims its run together with the
    /// lock check, before planning); None: `execute` records one.
    pub run: Option<cutover_store::Run>,
}

/// What a finished run produced.
pub struct RunOutcome {
    /// The summary (also sent to reporters in `run.finished`), secrets redacted.
    pub summary: RunSummary,
    /// Problems reporters had (a log file that could not be written...), one sentence each.
    pub reporter_errors: Vec<String>,
}

/// Where the project's state lives (in the main worktree when run from a linked one).
pub fn state_dir(project: &Project) -> StateDir {
    StateDir::of_root(&project.state_root)
}

/// Runs `request` to the end (or until `cancel` fires) and returns its summary.
pub async fn execute(
    request: RunRequest,
    store: Arc<dyn ReleaseStore>,
    cancel: CancellationToken,
    reporters: Vec<Box<dyn Reporter>>,
) -> Result<RunOutcome, EngineError> {
    let started_at = Utc::now();
    let claimed = request.run.clone();
    let run = if let Some(run) = claimed {
        run
    } else {
        let store = store.clone();
        let env = request.env.name.clone();
        let kind = request.kind;
        tokio::task::spawn_blocking(move || {
            store.create_run(kind, &env, started_at, Some(std::process::id()))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??
    };
    // Every affected service's release, recorded in one transaction.
    let releases = {
        let store = store.clone();
        let now = Utc::now();
        let new: Vec<NewRelease> = request
            .plan
            .affected()
            .map(|p| NewRelease {
                service: p.name.clone(),
                env: request.env.name.clone(),
                run_id: run.id.clone(),
                sha: request.plan.head.sha.clone(),
                dirty: p.dirty,
                branch: request.plan.head.branch.clone(),
                config_hash: p.config_hash.clone(),
                commit_at: request.plan.head.commit_at,
                created_at: now,
            })
            .collect();
        tokio::task::spawn_blocking(move || store.create_releases(&new))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??
    };
    let releases: HashMap<String, Release> = releases
        .into_iter()
        .map(|r| (r.service.clone(), r))
        .collect();
    let redactor = Redactor::new(request.secrets.values().cloned());
    let fanout = Fanout::spawn(reporters, redactor.clone());
    let mut summary =
        dispatcher::Dispatcher::new(&request, run.id.clone(), started_at, store.clone())
            .run(&request, releases, cancel, &fanout)
            .await;
    summary.map_text(&mut |s| redactor.redact_in_place(s));
    let finish = {
        let store = store.clone();
        let (id, status, at) = (summary.run.clone(), summary.status, summary.finished_at);
        let reason = summary
            .services
            .iter()
            .find_map(|s| s.reason.clone().filter(|_| s.result.is_bad()));
        tokio::task::spawn_blocking(move || store.finish_run(&id, status, at, reason.as_deref()))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
    };
    let mut reporter_errors = fanout.finish();
    if let Err(e) = finish {
        reporter_errors.push(format!("recording the end of the run failed: {e}"));
    }
    Ok(RunOutcome {
        summary,
        reporter_errors,
    })
}
