//! `build` and `deploy`: the pipeline over the affected services (deploy adds the deploy and
//! verify stages through the agent, and with `--atomic` rolls a failed run back).
//!
//! A pipeline runs in three steps, so the caller decides what happens around the run itself
//! (the CLI installs its Ctrl-C handler only once the run starts, and shows events on the
//! terminal):
//! 1. [`Pipeline::prepare`] (blocking): secrets, the target's engine, the store, for a deploy
//!    the claimed run (past locks and running deploys) and the agent, then the plan.
//! 2. [`Pipeline::execute`] (async, on the caller's multi-thread runtime): the run, its events
//!    going to the engine's reporters (store, log files, `status.json`, webhooks) and to the
//!    caller's.
//! 3. [`PipelineRun::finish`] (blocking, outside the runtime): `--atomic` rolls every service
//!    back when one failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Project, ResolvedEnvironment};
use cutover_store::{ReleaseStore, Run, RunKind, RunStatus, StateDir};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::EngineError;
use crate::event::Outcome;
use crate::plan::{GitRepo, PlanOptions, plan};
use crate::report::Reporter;
use crate::report::log_file::LogFiles;
use crate::report::status_file::StatusFile;
use crate::report::store::StoreReporter;
use crate::report::webhook::{Notifier, rollback_notification};
use crate::run::{RunOutcome, RunRequest, execute};
use crate::summary::RunSummary;

/// What to build or deploy, and how.
#[derive(Debug, Clone)]
pub struct PipelineRequest {
    /// [`RunKind::Build`] (detect, checks, build) or [`RunKind::Deploy`] (the whole pipeline).
    pub kind: RunKind,
    /// Services named (forced, changed or not; the others are skipped).
    pub services: Vec<String>,
    /// Every service, changed or not.
    pub all: bool,
    /// Compare with this revision instead of each ACTIVE release.
    pub since: Option<String>,
    /// Services at once per stage (default: `[project] max_parallel`).
    pub max_parallel: Option<usize>,
    /// A deploy waits this long for the environment's lock and a running deploy of it
    /// (None: it is refused at once).
    pub lock_wait: Option<Duration>,
    /// Roll every service of the run back when one fails.
    pub atomic: bool,
    /// How long a deploy waits for `approve` where the environment requires approval.
    pub approval_timeout: Duration,
    /// Smoke-test each deployed service as part of verify.
    pub smoke: bool,
}

impl PipelineRequest {
    /// A build of the affected services with the defaults.
    pub fn build() -> Self {
        PipelineRequest {
            kind: RunKind::Build,
            services: Vec::new(),
            all: false,
            since: None,
            max_parallel: None,
            lock_wait: None,
            atomic: false,
            approval_timeout: Duration::ZERO,
            smoke: false,
        }
    }
}

/// A pipeline ready to run: planned, its deploy run (if any) claimed.
pub struct Pipeline {
    run: RunRequest,
    store: Arc<dyn ReleaseStore>,
    state: StateDir,
    branch: Option<String>,
    workdir: Option<String>,
    notifier: Option<Notifier>,
    atomic: bool,
}

/// A pipeline that ran (see [`PipelineRun::finish`]).
pub struct PipelineRun {
    outcome: RunOutcome,
    env: Arc<ResolvedEnvironment>,
    secrets: BTreeMap<String, String>,
    store: Arc<dyn ReleaseStore>,
    state: StateDir,
    notifier: Option<Notifier>,
    atomic: bool,
}

/// The end of a pipeline.
pub struct PipelineOutcome {
    /// The run summary (`build`/`deploy --json`), secrets redacted.
    pub summary: RunSummary,
    /// The run's log, `.cutover/logs/deployments/<run>.log`.
    pub log: PathBuf,
    /// The webhooks still delivering: the caller gives them [`Notifier::finish`] once it has
    /// shown the result.
    pub webhooks: Option<Notifier>,
}

impl Pipeline {
    /// Everything before the run: secrets, the target's engine (it must answer before
    /// anything is recorded or changed), the store, for a deploy the settling of runs whose
    /// process died, the claimed run (`notes` hears what a deploy waits for) and the agent,
    /// then the plan. A deploy that cannot go on after claiming its run ends it canceled.
    pub fn prepare(
        cx: &Context,
        env: &ResolvedEnvironment,
        request: &PipelineRequest,
        notes: &mut dyn FnMut(&str),
    ) -> Result<Pipeline, EngineError> {
        let project: &Project = cx.project;
        let secrets = cx.secrets(env)?;
        // A container target's engine must answer before anything is recorded (no runtime is
        // made for it when no service runs in containers).
        if crate::target::has_containers(env) {
            super::runtime()?.block_on(crate::target::preflight(&project.name, env))?;
        }
        let store = cx.created_store()?;
        let deploy = request.kind == RunKind::Deploy;
        let (agent, run) = if deploy {
            super::settle_interrupted_runs(cx, store.as_ref())?;
            let run = super::claim_deploy_run(store.as_ref(), &env.name, request.lock_wait, notes)?;
            if request.lock_wait.is_some() {
                // A deploy waited for may have died meanwhile: record it before planning.
                super::settle_interrupted_runs(cx, store.as_ref())?;
            }
            match cx.started_agent() {
                Ok(agent) => (Some(agent), Some(run)),
                Err(e) => return Err(abandon(store.as_ref(), &run, e)),
            }
        } else {
            (None, None)
        };
        let opts = PlanOptions {
            all: request.all,
            since: request.since.clone(),
            named: request.services.clone(),
            not_running: match deploy {
                true => cx.not_running(&env.name),
                false => Default::default(),
            },
        };
        let plan = match plan(project, env, Some(store.as_ref()), &opts) {
            Ok(plan) => plan,
            Err(e) => {
                return Err(match &run {
                    Some(run) => abandon(store.as_ref(), run, e),
                    None => e,
                });
            }
        };
        let max_parallel = request
            .max_parallel
            .unwrap_or(project.settings.max_parallel);
        let workdir = GitRepo::discover(&project.dir)
            .ok()
            .flatten()
            .and_then(|r| r.workdir().map(|p| p.display().to_string()));
        let notifier = match deploy {
            true => cx.notifier(&secrets),
            false => None,
        };
        Ok(Pipeline {
            branch: plan.head.branch.clone(),
            run: RunRequest {
                kind: request.kind,
                project: Arc::new(project.clone()),
                env: Arc::new(env.clone()),
                plan,
                max_parallel,
                secrets,
                agent,
                approval_timeout: request.approval_timeout,
                smoke: request.smoke,
                run,
            },
            store,
            state: cx.state_dir(),
            workdir,
            notifier,
            atomic: request.atomic,
        })
    }

    /// Runs the pipeline until it ends or `cancel` fires. Events go to the engine's reporters
    /// (the store, `logs/deployments/`, `status.json`, the webhooks) and then to `reporters`
    /// (the caller's: a terminal view).
    pub async fn execute(
        self,
        reporters: Vec<Box<dyn Reporter>>,
        cancel: CancellationToken,
    ) -> Result<PipelineRun, EngineError> {
        let mut all: Vec<Box<dyn Reporter>> = vec![
            Box::new(StoreReporter::new(self.store.clone())),
            Box::new(LogFiles::new(self.state.clone())),
            Box::new(StatusFile::new(
                self.state.status_file(),
                self.branch,
                self.workdir,
            )),
        ];
        if let Some(n) = &self.notifier {
            all.push(Box::new(n.reporter()));
        }
        all.extend(reporters);
        let env = self.run.env.clone();
        let secrets = self.run.secrets.clone();
        let outcome = execute(self.run, self.store.clone(), cancel, all).await?;
        Ok(PipelineRun {
            outcome,
            env,
            secrets,
            store: self.store,
            state: self.state,
            notifier: self.notifier,
            atomic: self.atomic,
        })
    }
}

impl PipelineRun {
    /// Problems reporters had (a log file that could not be written...), one sentence each.
    pub fn reporter_errors(&self) -> &[String] {
        &self.outcome.reporter_errors
    }

    /// After the run (outside any async runtime): with `atomic`, a run where a service failed
    /// has every service it made ACTIVE rolled back (`notes` hears each step) and a `rollback`
    /// webhook says which.
    pub fn finish(
        self,
        cx: &Context,
        notes: &mut dyn FnMut(&str),
    ) -> Result<PipelineOutcome, EngineError> {
        let mut summary = self.outcome.summary;
        let log = self.state.run_log(&summary.run);
        if self.atomic {
            let before: Vec<_> = summary.services.iter().map(|s| s.result).collect();
            summary = super::rollback::atomic(
                cx,
                &self.env,
                &self.secrets,
                self.store.as_ref(),
                summary,
                &log,
                notes,
            )?;
            // The services --atomic sent back: a `rollback` webhook (the run's own events are
            // over).
            let rolled: Vec<_> = summary
                .services
                .iter()
                .zip(before)
                .filter(|(s, was)| s.result == Outcome::RolledBack && *was != Outcome::RolledBack)
                .map(|(s, _)| s)
                .collect();
            if let Some(n) = &self.notifier
                && let Some(note) =
                    rollback_notification(&summary.run, &summary.env, &rolled, summary.finished_at)
            {
                n.send(note);
            }
        }
        Ok(PipelineOutcome {
            summary,
            log,
            webhooks: self.notifier,
        })
    }
}

/// A deploy run claimed before planning ends canceled when the deploy cannot go on, so it
/// holds nothing; `e` is returned as it was.
fn abandon(store: &dyn ReleaseStore, run: &Run, e: EngineError) -> EngineError {
    let _ = store.finish_run(
        &run.id,
        RunStatus::Canceled,
        chrono::Utc::now(),
        Some("the deploy stopped before it began"),
    );
    e
}
