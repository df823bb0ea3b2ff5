//! Events: plain data the engine emits while a run goes on.
//!
//! Only the dispatcher (`run/dispatcher.rs`) creates them; reporters (terminal, log files,
//! status file, store) consume them and never drive the engine.

use chrono::{DateTime, Utc};
use cutover_store::{ApprovalState, ReleasePhase, RunKind, RunStatus};
use serde::{Deserialize, Serialize};

use crate::command::Stream;
use crate::summary::RunSummary;

/// One thing that happened in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The run it belongs to.
    pub run: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Change detection.
    Detect,
    /// The service's `checks`.
    Checks,
    /// Snapshot and `build`.
    Build,
    /// The service's `pre_deploy` hooks (before traffic changes).
    PreDeploy,
    /// Handing the release to the target.
    Deploy,
    /// Probes and analysis.
    Verify,
    /// The service's `post_deploy` hooks (after the release is ACTIVE).
    PostDeploy,
    /// Webhooks.
    Notify,
}

impl Stage {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Detect => "detect",
            Stage::Checks => "checks",
            Stage::Build => "build",
            Stage::PreDeploy => "pre_deploy",
            Stage::Deploy => "deploy",
            Stage::Verify => "verify",
            Stage::PostDeploy => "post_deploy",
            Stage::Notify => "notify",
        }
    }
}

/// How a stage or a service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Succeeded,
    /// Failed (the reason says why).
    Failed,
    /// Not run: unaffected, or a dependency failed.
    Skipped,
    /// Interrupted.
    Canceled,
    /// Reverted.
    RolledBack,
}

impl Outcome {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Canceled => "canceled",
            Outcome::RolledBack => "rolled_back",
        }
    }

    /// True for failed, canceled and rolled back.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::Canceled | Outcome::RolledBack
        )
    }
}

/// A service as the run sees it at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBrief {
    /// Service name.
    pub name: String,
    /// Whether the run works on it.
    pub affected: bool,
    /// Why (a sentence).
    pub reason: String,
    /// Dependency layer.
    pub layer: usize,
}

/// A service and the release a run made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRef {
    /// Service name.
    pub service: String,
    /// Release id.
    pub release: String,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began.
    RunStarted {
        /// Build or deploy.
        kind: RunKind,
        /// Environment.
        env: String,
        /// Every service of the plan.
        services: Vec<ServiceBrief>,
    },
    /// A service's release was recorded.
    ReleaseCreated {
        /// Service.
        service: String,
        /// Release id.
        release: String,
        /// Git sha.
        sha: Option<String>,
        /// Dirty flag.
        dirty: bool,
    },
    /// A stage began for a service.
    StageStarted {
        /// Service.
        service: String,
        /// Stage.
        stage: Stage,
    },
    /// A command began.
    CommandStarted {
        /// Service.
        service: String,
        /// Stage.
        stage: Stage,
        /// The command line.
        command: String,
    },
    /// A line of command output.
    Output {
        /// Service.
        service: String,
        /// Stage.
        stage: Stage,
        /// Which stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// A command ended.
    CommandFinished {
        /// Service.
        service: String,
        /// Stage.
        stage: Stage,
        /// The command line.
        command: String,
        /// True when it exited 0.
        success: bool,
        /// A sentence saying how it ended.
        description: String,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// A stage ended for a service.
    StageFinished {
        /// Service.
        service: String,
        /// Stage.
        stage: Stage,
        /// How.
        result: Outcome,
        /// Why, when not succeeded.
        reason: Option<String>,
    },
    /// A release changed phase.
    PhaseChanged {
        /// Service.
        service: String,
        /// Release id.
        release: String,
        /// The new phase.
        phase: ReleasePhase,
        /// Why, for end phases other than ACTIVE.
        reason: Option<String>,
    },
    /// A service is done (or will not run).
    ServiceFinished {
        /// Service.
        service: String,
        /// How.
        result: Outcome,
        /// Its release, when one was made.
        release: Option<String>,
        /// Why, when not succeeded.
        reason: Option<String>,
        /// Last output lines of the failed command.
        tail: Vec<String>,
    },
    /// The run stopped before any traffic changes and waits for `cutover approve RUN`.
    ApprovalRequested {
        /// The run's id (what `cutover approve` takes).
        run: String,
        /// Environment.
        env: String,
        /// What waits to be deployed.
        waiting: Vec<ReleaseRef>,
        /// How long it waits before giving up, in milliseconds.
        timeout_ms: u64,
    },
    /// The approval gate was decided: approved, rejected, timed out or canceled.
    ApprovalDecided {
        /// The decision.
        state: ApprovalState,
        /// Who decided (`user@host`), for approved and rejected.
        by: Option<String>,
        /// Why (`--reason`, or what ended the wait).
        reason: Option<String>,
    },
    /// A step of a deploy the agent reports: a canary step and its judgements, a rolling batch.
    Progress {
        /// Service.
        service: String,
        /// deploy or verify.
        stage: Stage,
        /// What happened, as data (an instance started, ready or ended, a probe flipped, a
        /// canary step and its judgement, a rolling batch); `step.describe()` says it in words.
        step: cutover_runtime::api::types::DeployProgress,
    },
    /// Cancellation began (Ctrl-C).
    RunCanceling {
        /// Why.
        reason: String,
    },
    /// A service starts going back to an earlier release (`rollback`, `--atomic`, a failed
    /// post_deploy hook or smoke test).
    RollbackStarted {
        /// Service.
        service: String,
        /// The release it leaves, if one was ACTIVE.
        from: Option<String>,
        /// The release it goes back to.
        to: String,
        /// Why.
        reason: String,
    },
    /// A rollback ended.
    RollbackFinished {
        /// Service.
        service: String,
        /// The release it went back to.
        to: String,
        /// `succeeded` (it serves) or `failed`.
        result: Outcome,
        /// Why it failed.
        reason: Option<String>,
    },
    /// `cutover merge` handled a service's branch.
    Merged {
        /// Service.
        service: String,
        /// Its branch.
        branch: String,
        /// The branch merged into.
        base: String,
        /// merged | up_to_date | conflict | skipped | failed.
        result: String,
        /// The merge commit, when one was made.
        commit: Option<String>,
        /// Why it was not merged.
        reason: Option<String>,
    },
    /// `cutover test` ran one check of a service.
    SmokeChecked {
        /// Service.
        service: String,
        /// The stage or smoke entry ("health", "smoke GET /api").
        check: String,
        /// Whether it passed.
        passed: bool,
        /// What it found.
        message: String,
        /// How long it took, in milliseconds.
        duration_ms: u64,
    },
    /// The run is over.
    RunFinished {
        /// Overall status.
        status: RunStatus,
        /// The whole summary.
        summary: Box<RunSummary>,
    },
}

impl EventKind {
    /// The dotted name used in the store and log files (`stage.started`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run.started",
            EventKind::ReleaseCreated { .. } => "release.created",
            EventKind::StageStarted { .. } => "stage.started",
            EventKind::CommandStarted { .. } => "command.started",
            EventKind::Output { .. } => "output",
            EventKind::CommandFinished { .. } => "command.finished",
            EventKind::StageFinished { .. } => "stage.finished",
            EventKind::PhaseChanged { .. } => "phase.changed",
            EventKind::ServiceFinished { .. } => "service.finished",
            EventKind::ApprovalRequested { .. } => "approval.requested",
            EventKind::ApprovalDecided { .. } => "approval.decided",
            EventKind::Progress { .. } => "progress",
            EventKind::RunCanceling { .. } => "run.canceling",
            EventKind::RunFinished { .. } => "run.finished",
            EventKind::RollbackStarted { .. } => "rollback.started",
            EventKind::RollbackFinished { .. } => "rollback.finished",
            EventKind::Merged { .. } => "merge.service",
            EventKind::SmokeChecked { .. } => "test.check",
        }
    }

    /// The service the event concerns, if any.
    pub fn service(&self) -> Option<&str> {
        match self {
            EventKind::ReleaseCreated { service, .. }
            | EventKind::StageStarted { service, .. }
            | EventKind::CommandStarted { service, .. }
            | EventKind::Output { service, .. }
            | EventKind::Progress { service, .. }
            | EventKind::CommandFinished { service, .. }
            | EventKind::StageFinished { service, .. }
            | EventKind::PhaseChanged { service, .. }
            | EventKind::ServiceFinished { service, .. }
            | EventKind::RollbackStarted { service, .. }
            | EventKind::RollbackFinished { service, .. }
            | EventKind::Merged { service, .. }
            | EventKind::SmokeChecked { service, .. } => Some(service),
            EventKind::RunStarted { .. }
            | EventKind::ApprovalRequested { .. }
            | EventKind::ApprovalDecided { .. }
            | EventKind::RunCanceling { .. }
            | EventKind::RunFinished { .. } => None,
        }
    }

    /// Applies `f` to every free-text field (command lines, output, reasons, tails), so the
    /// redactor can clean an event without knowing its shape.
    pub fn map_text(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self {
            EventKind::RunStarted { services, .. } => {
                services.iter_mut().for_each(|s| f(&mut s.reason));
            }
            EventKind::CommandStarted { command, .. } => f(command),
            EventKind::Output { line, .. } => f(line),
            EventKind::Progress { step, .. } => step.map_text(f),
            EventKind::CommandFinished {
                command,
                description,
                ..
            } => {
                f(command);
                f(description);
            }
            EventKind::StageFinished { reason, .. } | EventKind::PhaseChanged { reason, .. } => {
                if let Some(r) = reason {
                    f(r);
                }
            }
            EventKind::ServiceFinished { reason, tail, .. } => {
                if let Some(r) = reason {
                    f(r);
                }
                tail.iter_mut().for_each(&mut *f);
            }
            EventKind::RunCanceling { reason } | EventKind::RollbackStarted { reason, .. } => {
                f(reason)
            }
            EventKind::RollbackFinished { reason, .. } | EventKind::Merged { reason, .. } => {
                if let Some(r) = reason {
                    f(r);
                }
            }
            EventKind::SmokeChecked { message, .. } => f(message),
            EventKind::ApprovalDecided { by, reason, .. } => {
                for s in [by, reason].into_iter().flatten() {
                    f(s);
                }
            }
            EventKind::ApprovalRequested { .. } => {}
            EventKind::RunFinished { summary, .. } => summary.map_text(f),
            EventKind::ReleaseCreated { .. } | EventKind::StageStarted { .. } => {}
        }
    }
}
