//! An executor: one service's stages, start to end, reported to the dispatcher as messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use cutover_config::{EnvValue, ResolvedService};
use cutover_store::{Release, ReleasePhase, ReleaseStore, RunKind, StateDir};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use cutover_runtime::api::client::AgentClient;
use cutover_runtime::api::types::{DeployProgress, DeployRequest};

use crate::command::{self, CommandSpec, run_command};
use crate::event::{EventKind, Outcome, Stage};
use crate::plan::PlannedService;
use crate::stage::snapshot;

/// What an executor tells the dispatcher.
pub(super) enum ExecMsg {
    /// A fact that becomes an event as is.
    Event(EventKind),
    /// "May I start my gated stage?" (answered once the dependencies ended).
    Gate {
        service: String,
        reply: oneshot::Sender<Gate>,
    },
    /// "May I deploy?" in an environment with `require_approval` (answered once approved).
    Approval {
        service: String,
        reply: oneshot::Sender<Gate>,
    },
    /// The approval watcher recorded the wait in the store (or could not).
    ApprovalRecorded(Result<(), String>),
    /// The approval watcher saw a decision (or the timeout).
    ApprovalDecided(cutover_store::Approval),
    /// The service is done.
    Finished {
        service: String,
        result: Outcome,
        reason: Option<String>,
        tail: Vec<String>,
    },
}

/// The dispatcher's answer to [`ExecMsg::Gate`].
pub(super) enum Gate {
    Proceed,
    Skip(String),
    /// The approval was rejected, timed out or canceled: the service ends canceled.
    Refused(String),
    /// The approval gate could not work (the store failed): the service fails.
    Fail(String),
}

/// A stage's end when it did not succeed.
struct Stop {
    result: Outcome,
    reason: String,
    tail: Vec<String>,
}

impl Stop {
    fn canceled(reason: impl Into<String>) -> Self {
        Stop {
            result: Outcome::Canceled,
            reason: reason.into(),
            tail: Vec::new(),
        }
    }
    fn failed(reason: impl Into<String>) -> Self {
        Stop {
            result: Outcome::Failed,
            reason: reason.into(),
            tail: Vec::new(),
        }
    }
}

/// A hook's failure with the last lines of its output in the reason (the release's reason is
/// what `releases` shows, so it says what the hook printed).
fn with_output(stop: Stop) -> Stop {
    let last: Vec<&str> = stop
        .tail
        .iter()
        .rev()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    if last.is_empty() || stop.result == Outcome::Canceled {
        return stop;
    }
    let output: Vec<&str> = last.into_iter().rev().collect();
    Stop {
        reason: format!("{}: {}", stop.reason, output.join(" | ")),
        ..stop
    }
}

/// One service's run.
pub(super) struct Executor {
    pub(super) kind: RunKind,
    pub(super) env: String,
    pub(super) project_dir: PathBuf,
    /// The project's `.cutover/` (in the main worktree when run from a linked one).
    pub(super) state_dir: StateDir,
    pub(super) service: ResolvedService,
    pub(super) planned: PlannedService,
    pub(super) release: Release,
    pub(super) secrets: BTreeMap<String, String>,
    pub(super) checks: Arc<Semaphore>,
    pub(super) build: Arc<Semaphore>,
    pub(super) store: Arc<dyn ReleaseStore>,
    pub(super) agent: Option<AgentClient>,
    /// `deploy --smoke` (see `smoke_verify.rs`).
    pub(super) smoke: bool,
    pub(super) env_names: Vec<String>,
    pub(super) keep_releases: usize,
    pub(super) tx: mpsc::UnboundedSender<ExecMsg>,
    pub(super) cancel: CancellationToken,
    pub(super) require_approval: bool,
    /// The Docker target, when the service runs in containers (its image is built, hooks run
    /// in containers of it).
    pub(super) container: Option<Arc<crate::target::docker::ContainerTarget>>,
}

impl Executor {
    /// Says how a rollback of this service to `to` ended.
    pub(super) fn rollback_finished(&self, to: &str, rolled: &Result<(), String>) {
        self.send(crate::rollback::finished_event(
            &self.service.name,
            to,
            rolled,
        ));
    }

    pub(super) fn send(&self, kind: EventKind) {
        let _ = self.tx.send(ExecMsg::Event(kind));
    }

    /// Runs the service to its end; always sends `Finished` (unless it panics, which the
    /// dispatcher notices).
    pub(super) async fn run(self) {
        let (result, reason, tail) = match self.stages().await {
            Ok(()) => (Outcome::Succeeded, None, Vec::new()),
            Err(stop) => (stop.result, Some(stop.reason), stop.tail),
        };
        let _ = self.tx.send(ExecMsg::Finished {
            service: self.service.name.clone(),
            result,
            reason,
            tail,
        });
    }

    async fn stages(&self) -> Result<(), Stop> {
        let release = self.announce_release();
        let env = self.command_env(&release);

        if !self.service.checks.is_empty() {
            let dir = self.project_dir.join(&self.service.path);
            self.stage(Stage::Checks, &self.checks, async {
                for command in &self.service.checks {
                    self.command(Stage::Checks, command, &dir, &env).await?;
                }
                Ok(())
            })
            .await?;
        }

        if self.kind == RunKind::Build {
            self.wait_for_dependencies().await?;
        }

        let dest = self.state_dir.release(&self.service.name, &release);
        self.stage(Stage::Build, &self.build, async {
            let src = self.project_dir.join(&self.service.path);
            let (s, d) = (src.clone(), dest.clone());
            tokio::task::spawn_blocking(move || snapshot::copy_tree(&s, &d))
                .await
                .map_err(|e| Stop::failed(format!("snapshot task failed: {e}")))?
                .map_err(|e| Stop::failed(format!("snapshot of {} failed: {e}", src.display())))?;
            self.set_artifact(&release, &dest).await;
            if let Some(build) = &self.service.build {
                self.command(Stage::Build, build, &dest, &env).await?;
            }
            if let Some(target) = &self.container {
                self.build_image(target, &release, &dest).await?;
            }
            Ok(())
        })
        .await?;

        if self.kind == RunKind::Deploy {
            self.wait_for_approval().await?;
            self.wait_for_dependencies().await?;
            let previous = self.active_release().await;
            self.hooks(Stage::PreDeploy, &self.service.pre_deploy, &dest, &env)
                .await?;
            self.deploy(&release, &dest).await?;
            self.post_deploy(&release, &dest, &env, previous).await?;
        }
        self.prune_snapshots(&release).await;
        Ok(())
    }

    /// Keeps at most `keep_releases` snapshots of the service, never removing the one just
    /// made, one that is ACTIVE in any environment, nor the release `rollback` would go back to.
    async fn prune_snapshots(&self, release: &str) {
        let store = self.store.clone();
        let service = self.service.name.clone();
        let envs = self.env_names.clone();
        let keep = self.keep_releases;
        let dir = self.state_dir.service_releases(&service);
        let mut protected = vec![release.to_string()];
        let keep_activated = if self.kind == RunKind::Deploy { 1 } else { 2 };
        let pruned = tokio::task::spawn_blocking(move || {
            let mut known: Vec<(chrono::DateTime<Utc>, String)> = Vec::new();
            for env in &envs {
                let Ok(releases) = store.releases(&service, env, 1000) else {
                    continue;
                };
                known.extend(releases.iter().map(|r| (r.created_at, r.id.clone())));
                // The ACTIVE release, and the release a rollback would go back to: after a
                // deploy that is the ACTIVE one it replaces; after a build, the one before it.
                let mut activated: Vec<_> = releases
                    .iter()
                    .filter(|r| r.activated_at.is_some())
                    .collect();
                activated.sort_by_key(|r| std::cmp::Reverse(r.activated_at));
                protected.extend(activated.iter().take(keep_activated).map(|r| r.id.clone()));
            }
            // Newest first; `releases` lists same-time releases newest first already.
            known.sort_by_key(|k| std::cmp::Reverse(k.0));
            let order: Vec<String> = known.into_iter().map(|(_, id)| id).collect();
            snapshot::prune(&dir, keep, &protected, &order)
        })
        .await;
        if let (Some(target), Ok(Ok(removed))) = (&self.container, pruned)
            && !removed.is_empty()
        {
            target.prune(&self.service, &removed).await;
        }
    }

    /// Hands the release to the agent and follows it through deploy and verify.
    async fn deploy(&self, release: &str, dir: &Path) -> Result<(), Stop> {
        let Some(agent) = &self.agent else {
            return Err(Stop::failed("no agent to deploy to"));
        };
        let svc = &self.service;
        // In a container, `run` is optional: the image's own command runs without it.
        let run = match &self.container {
            Some(_) => Some(svc.run.clone().unwrap_or_default()),
            None => svc.run.clone(),
        };
        let (Some(run), true) = (run, svc.port.is_some() || !svc.hosts.is_empty()) else {
            return Err(Stop::failed(format!(
                "{} has no `run`, or neither `port` nor `hosts`, which the local target needs",
                svc.name
            )));
        };
        let port = svc.port;
        let mut spec =
            crate::target::release_spec(&self.env, svc, release, dir, run, port, &self.secrets);
        spec.container = self
            .container
            .as_ref()
            .map(|t| t.container_spec(svc, release));
        let request = DeployRequest { spec };
        let name = svc.name.clone();
        self.send(EventKind::StageStarted {
            service: name.clone(),
            stage: Stage::Deploy,
        });
        let mut stage = Stage::Deploy;
        let canary = request.spec.canary.is_some();
        let (outcome, canceled) = {
            let deploy = agent.deploy(&request, false, |step| {
                if matches!(step, DeployProgress::Verifying) && stage == Stage::Deploy {
                    self.send(EventKind::StageFinished {
                        service: name.clone(),
                        stage: Stage::Deploy,
                        result: Outcome::Succeeded,
                        reason: None,
                    });
                    self.send(EventKind::StageStarted {
                        service: name.clone(),
                        stage: Stage::Verify,
                    });
                    stage = Stage::Verify;
                }
                if step.describe().is_some() {
                    self.send(EventKind::Progress {
                        service: name.clone(),
                        stage,
                        step: step.clone(),
                    });
                }
            });
            tokio::pin!(deploy);
            // Ctrl-C during a canary aborts it (traffic back on stable); other deploys are short
            // and finish their switch (the agent would finish it anyway).
            let mut canceled = false;
            let outcome = tokio::select! {
                o = &mut deploy => o,
                () = self.cancel.cancelled() => {
                    canceled = true;
                    if canary {
                        let _ = agent.abort(&self.env, &svc.name).await;
                    }
                    deploy.await
                }
            };
            (outcome, canceled)
        };
        let result = match outcome {
            Ok(DeployProgress::Active) => Ok(()),
            Ok(DeployProgress::Failed { reason }) => {
                Err(Stop::failed(format!("{}: {reason}", stage.as_str())))
            }
            Ok(DeployProgress::RolledBack { reason }) if canceled => Err(Stop::canceled(format!(
                "canceled during the canary; all traffic is back on the stable release ({reason})"
            ))),
            Ok(DeployProgress::RolledBack { reason }) => Err(Stop {
                result: Outcome::RolledBack,
                reason: format!("canary: {reason}"),
                tail: Vec::new(),
            }),
            Ok(_) => Err(Stop::failed("the agent ended the deploy without a verdict")),
            Err(e) => Err(Stop::failed(format!("{}: {e}", stage.as_str()))),
        };
        let result = match result {
            Ok(()) if self.smoke => self
                .smoke_verify(release, agent)
                .await
                .map_err(|why| Stop::failed(format!("{}: {why}", stage.as_str()))),
            other => other,
        };
        self.send(EventKind::StageFinished {
            service: name,
            stage,
            result: match &result {
                Ok(()) => Outcome::Succeeded,
                Err(stop) => stop.result,
            },
            reason: result.as_ref().err().map(|s| s.reason.clone()),
        });
        result
    }

    /// Runs `body` as `stage`, holding one of `permits`, with started/finished events.
    async fn stage(
        &self,
        stage: Stage,
        permits: &Semaphore,
        body: impl Future<Output = Result<(), Stop>>,
    ) -> Result<(), Stop> {
        let _permit = tokio::select! {
            p = permits.acquire() => p.map_err(|_| Stop::canceled("the run is shutting down"))?,
            () = self.cancel.cancelled() => return Err(Stop::canceled(format!("canceled before {}", stage.as_str()))),
        };
        self.send(EventKind::StageStarted {
            service: self.service.name.clone(),
            stage,
        });
        let result = body.await;
        self.send(EventKind::StageFinished {
            service: self.service.name.clone(),
            stage,
            result: match &result {
                Ok(()) => Outcome::Succeeded,
                Err(stop) => stop.result,
            },
            reason: result.as_ref().err().map(|s| s.reason.clone()),
        });
        result
    }

    async fn command(
        &self,
        stage: Stage,
        command: &str,
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<(), Stop> {
        let name = &self.service.name;
        self.send(EventKind::CommandStarted {
            service: name.clone(),
            stage,
            command: command.to_string(),
        });
        let spec = CommandSpec {
            command,
            dir,
            env,
            timeout: self.service.timeout,
        };
        let result = run_command(&spec, &self.cancel, |stream, line| {
            self.send(EventKind::Output {
                service: name.clone(),
                stage,
                stream,
                line: line.to_string(),
            });
        })
        .await;
        let description = result.describe(command);
        self.send(EventKind::CommandFinished {
            service: name.clone(),
            stage,
            command: command.to_string(),
            success: result.outcome.is_success(),
            description: description.clone(),
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        });
        match result.outcome {
            crate::command::CommandOutcome::Succeeded => Ok(()),
            crate::command::CommandOutcome::Canceled => Err(Stop {
                result: Outcome::Canceled,
                reason: format!("{}: {description}", stage.as_str()),
                tail: result.tail,
            }),
            _ => Err(Stop {
                result: Outcome::Failed,
                reason: format!("{}: {description}", stage.as_str()),
                tail: result.tail,
            }),
        }
    }

    /// Builds (and pushes) the release's image from the snapshot `dir`, its output in the
    /// service's log like a command's; a failure quotes the build output's tail.
    async fn build_image(
        &self,
        target: &crate::target::docker::ContainerTarget,
        release: &str,
        dir: &Path,
    ) -> Result<(), Stop> {
        let name = &self.service.name;
        let what = format!(
            "docker build ({})",
            target.release_image(&self.service, release)
        );
        self.send(EventKind::CommandStarted {
            service: name.clone(),
            stage: Stage::Build,
            command: what.clone(),
        });
        let started = std::time::Instant::now();
        let mut on_line = |line: &str| {
            self.send(EventKind::Output {
                service: name.clone(),
                stage: Stage::Build,
                stream: crate::command::Stream::Stdout,
                line: line.to_string(),
            });
        };
        let built = tokio::select! {
            r = target.build(&self.service, release, self.release.sha.as_deref().unwrap_or(""), dir, &mut on_line) => r,
            () = self.cancel.cancelled() => Err("canceled".to_string()),
        };
        self.send(EventKind::CommandFinished {
            service: name.clone(),
            stage: Stage::Build,
            command: what.clone(),
            success: built.is_ok(),
            description: match &built {
                Ok(()) => format!("`{what}` succeeded"),
                Err(e) => format!("`{what}` failed: {}", e.lines().next().unwrap_or("")),
            },
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        built.map_err(|e| {
            if self.cancel.is_cancelled() {
                Stop::canceled("build: canceled")
            } else {
                Stop::failed(format!("build: {e}"))
            }
        })
    }

    /// Runs hook `command` in a one-off container of the release's image with the service's
    /// environment (for migrations); its output goes to the run's log like a command's.
    async fn container_hook(
        &self,
        target: &crate::target::docker::ContainerTarget,
        stage: Stage,
        command: &str,
        env: &[(String, String)],
    ) -> Result<(), Stop> {
        let name = &self.service.name;
        let release = self.release.id.clone();
        self.send(EventKind::CommandStarted {
            service: name.clone(),
            stage,
            command: command.to_string(),
        });
        let started = std::time::Instant::now();
        let mut tail: Vec<String> = Vec::new();
        let mut on_line = |line: &str| {
            tail.push(line.to_string());
            if tail.len() > 10 {
                tail.remove(0);
            }
            self.send(EventKind::Output {
                service: name.clone(),
                stage,
                stream: crate::command::Stream::Stdout,
                line: line.to_string(),
            });
        };
        // The run's own marks mean nothing inside a container.
        let env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| !k.starts_with("CUTOVER_RUN") && k != "CUTOVER_STATE_DIR")
            .cloned()
            .collect();
        let ran = tokio::select! {
            r = target.hook(&self.service, &release, command, &env, self.service.timeout, &mut on_line) => r,
            () = self.cancel.cancelled() => Err("canceled".to_string()),
        };
        let description = match &ran {
            Ok(0) => format!("`{command}` succeeded (in a container)"),
            Ok(code) => format!("`{command}` exited with code {code} (in a container)"),
            Err(e) => format!("`{command}` could not run in a container: {e}"),
        };
        self.send(EventKind::CommandFinished {
            service: name.clone(),
            stage,
            command: command.to_string(),
            success: matches!(ran, Ok(0)),
            description: description.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        match ran {
            Ok(0) => Ok(()),
            _ if self.cancel.is_cancelled() => {
                Err(Stop::canceled(format!("{}: canceled", stage.as_str())))
            }
            _ => Err(Stop {
                result: Outcome::Failed,
                reason: format!("{}: {description}: {}", stage.as_str(), tail.join(" | ")),
                tail,
            }),
        }
    }

    /// In an environment with `require_approval`: waits until the run is approved (or
    /// refused, or canceled) before anything of the deploy runs.
    async fn wait_for_approval(&self) -> Result<(), Stop> {
        if !self.require_approval {
            return Ok(());
        }
        self.ask_gate(
            |service, reply| ExecMsg::Approval { service, reply },
            "canceled while awaiting approval",
        )
        .await
    }

    /// Asks the dispatcher whether this service may go on (the message `ask` builds), and
    /// turns its answer (or a cancellation, saying `canceled`) into the service's stop.
    async fn ask_gate(
        &self,
        ask: impl FnOnce(String, oneshot::Sender<Gate>) -> ExecMsg,
        canceled: &str,
    ) -> Result<(), Stop> {
        let (reply, answer) = oneshot::channel();
        let _ = self.tx.send(ask(self.service.name.clone(), reply));
        tokio::select! {
            a = answer => match a {
                Ok(Gate::Proceed) => Ok(()),
                Ok(Gate::Skip(reason)) => Err(Stop { result: Outcome::Skipped, reason, tail: Vec::new() }),
                Ok(Gate::Refused(reason)) => Err(Stop::canceled(reason)),
                Ok(Gate::Fail(reason)) => Err(Stop::failed(reason)),
                Err(_) => Err(Stop::canceled("the run is shutting down")),
            },
            () = self.cancel.cancelled() => Err(Stop::canceled(canceled)),
        }
    }

    /// The service's ACTIVE release in this environment before this deploy (what a failed
    /// post_deploy hook rolls back to).
    async fn active_release(&self) -> Option<Release> {
        let store = self.store.clone();
        let (svc, env) = (self.service.name.clone(), self.env.clone());
        tokio::task::spawn_blocking(move || store.active_release(&svc, &env))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// Runs `commands` (pre_deploy or post_deploy hooks) in the release snapshot as `stage`;
    /// a failure's reason carries the last lines of the hook's output.
    async fn hooks(
        &self,
        stage: Stage,
        commands: &[String],
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<(), Stop> {
        if commands.is_empty() {
            return Ok(());
        }
        // Hooks run one service at a time per service; no stage-wide permit bounds them.
        let unbounded = Semaphore::new(1);
        self.stage(stage, &unbounded, async {
            for command in commands {
                match &self.container {
                    Some(target) => self.container_hook(target, stage, command, env).await?,
                    None => self
                        .command(stage, command, dir, env)
                        .await
                        .map_err(with_output)?,
                }
            }
            Ok(())
        })
        .await
    }

    /// After the release is serving: records it ACTIVE, runs the post_deploy hooks, and when
    /// one fails either reports it (the release keeps serving) or, with
    /// `rollback_on_hook_failure`, rolls back to `previous` through the agent.
    async fn post_deploy(
        &self,
        release: &str,
        dir: &Path,
        env: &[(String, String)],
        previous: Option<Release>,
    ) -> Result<(), Stop> {
        let svc = &self.service;
        if svc.post_deploy.is_empty() {
            return Ok(());
        }
        self.send(EventKind::PhaseChanged {
            service: svc.name.clone(),
            release: release.to_string(),
            phase: ReleasePhase::Active,
            reason: None,
        });
        let Err(stop) = self
            .hooks(Stage::PostDeploy, &svc.post_deploy, dir, env)
            .await
        else {
            return Ok(());
        };
        if stop.result == Outcome::Canceled {
            return Err(stop);
        }
        if !svc.rollback_on_hook_failure {
            return Err(Stop {
                reason: format!(
                    "{} (the release stays ACTIVE; rollback_on_hook_failure = true would roll it back)",
                    stop.reason
                ),
                ..stop
            });
        }
        let Some(previous) = previous.filter(|p| p.id != release) else {
            return Err(Stop {
                reason: format!(
                    "{}; no previous ACTIVE release to roll back to, so it stays ACTIVE",
                    stop.reason
                ),
                ..stop
            });
        };
        let Some(agent) = &self.agent else {
            return Err(stop);
        };
        self.send(EventKind::RollbackStarted {
            service: svc.name.clone(),
            from: Some(release.to_string()),
            to: previous.id.clone(),
            reason: stop.reason.clone(),
        });
        let rolled_back = format!("{}; rolled back to {}", stop.reason, previous.id);
        let phases = crate::rollback::RollbackPhases {
            target: &previous.id,
            current: Some(release),
            why: &rolled_back,
        };
        self.send(phases.started().event(&svc.name));
        let rolled = crate::rollback::redeploy(
            agent,
            &self.state_dir,
            &self.env,
            svc,
            &previous.id,
            &self.secrets,
            self.container.as_deref(),
        )
        .await;
        self.rollback_finished(&previous.id, &rolled);
        for step in phases.finished(&rolled) {
            self.send(step.event(&svc.name));
        }
        match rolled {
            Ok(()) => Err(Stop {
                result: Outcome::RolledBack,
                reason: rolled_back,
                tail: stop.tail,
            }),
            Err(why) => Err(Stop {
                reason: format!("{}; rollback to {} failed: {why}", stop.reason, previous.id),
                ..stop
            }),
        }
    }

    async fn wait_for_dependencies(&self) -> Result<(), Stop> {
        let in_run = !self.planned.depends_on.is_empty();
        if !in_run {
            return Ok(());
        }
        self.ask_gate(
            |service, reply| ExecMsg::Gate { service, reply },
            "canceled while waiting for dependencies",
        )
        .await
    }

    /// Tells the dispatcher which release this run makes (recorded before the run began).
    fn announce_release(&self) -> String {
        self.send(EventKind::ReleaseCreated {
            service: self.service.name.clone(),
            release: self.release.id.clone(),
            sha: self.release.sha.clone(),
            dirty: self.release.dirty,
        });
        self.release.id.clone()
    }

    async fn set_artifact(&self, release: &str, dir: &Path) {
        let store = self.store.clone();
        let (svc, rel, art) = (
            self.service.name.clone(),
            release.to_string(),
            dir.display().to_string(),
        );
        // Where the snapshot is can be found again from its path; a failure here is not fatal.
        let _ = tokio::task::spawn_blocking(move || store.set_artifact(&svc, &rel, &art)).await;
    }

    /// The service's `env` (secrets resolved) plus CUTOVER_SERVICE, CUTOVER_RELEASE, CUTOVER_ENV,
    /// and the run's marks (`CUTOVER_RUN`, `CUTOVER_STATE_DIR`: see [`command::end_leftovers`]).
    fn command_env(&self, release: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .service
            .env
            .iter()
            .filter_map(|(k, v)| match v {
                EnvValue::Plain(s) => Some((k.clone(), s.clone())),
                EnvValue::Secret(name) => self.secrets.get(name).map(|s| (k.clone(), s.clone())),
            })
            .collect();
        env.push(("CUTOVER_SERVICE".into(), self.service.name.clone()));
        env.push(("CUTOVER_RELEASE".into(), release.to_string()));
        env.push(("CUTOVER_ENV".into(), self.env.clone()));
        env.extend(command::run_marks(
            &self.release.run_id,
            self.state_dir.path(),
        ));
        env
    }
}
