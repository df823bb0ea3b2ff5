//! The dispatcher: sole owner of the run state and sole emitter of events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cutover_store::{
    Approval, ApprovalState, Release, ReleasePhase, ReleaseStore, RunKind, StateDir,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::RunRequest;
use super::executor::{ExecMsg, Executor, Gate};
use crate::event::{Event, EventKind, Outcome, ReleaseRef, ServiceBrief, Stage};
use crate::report::Fanout;
use crate::summary::{RunSummary, ServiceSummary, StageSummary};

/// One service as the dispatcher tracks it.
struct ServiceState {
    name: String,
    affected: bool,
    plan_reason: String,
    depends_on: Vec<String>,
    result: Option<Outcome>,
    reason: Option<String>,
    release: Option<String>,
    stages: Vec<StageSummary>,
    tail: Vec<String>,
    /// The phase of this run's release as last emitted.
    phase: Option<ReleasePhase>,
}

/// Where the run's approval gate stands (environments with `require_approval`).
enum ApprovalGate {
    /// No approval needed, or not every service has reached the gate yet.
    Collecting,
    /// Recorded in the store; the watcher task polls for a decision.
    Waiting,
    /// Approved: every service goes on.
    Approved,
    /// Rejected, timed out or canceled: every service at the gate ends with this reason.
    Refused(String),
}

/// Owns the run state for one run.
pub(super) struct Dispatcher {
    run_id: String,
    kind: RunKind,
    env: String,
    started_at: DateTime<Utc>,
    services: Vec<ServiceState>,
    index: HashMap<String, usize>,
    gates: BTreeMap<String, oneshot::Sender<Gate>>,
    store: Arc<dyn ReleaseStore>,
    /// Services waiting at the approval gate.
    approval_waiters: BTreeMap<String, oneshot::Sender<Gate>>,
    approval: ApprovalGate,
    approval_timeout: std::time::Duration,
    decided: Option<Approval>,
}

impl Dispatcher {
    pub(super) fn new(
        request: &RunRequest,
        run_id: String,
        started_at: DateTime<Utc>,
        store: Arc<dyn ReleaseStore>,
    ) -> Self {
        let services: Vec<ServiceState> = request
            .plan
            .services
            .iter()
            .map(|p| ServiceState {
                name: p.name.clone(),
                affected: p.affected,
                plan_reason: p.reason.clone(),
                depends_on: p.depends_on.clone(),
                result: None,
                reason: None,
                release: None,
                stages: Vec::new(),
                tail: Vec::new(),
                phase: None,
            })
            .collect();
        let index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Dispatcher {
            run_id,
            kind: request.kind,
            env: request.env.name.clone(),
            started_at,
            services,
            index,
            gates: BTreeMap::new(),
            store,
            approval_waiters: BTreeMap::new(),
            approval: ApprovalGate::Collecting,
            approval_timeout: request.approval_timeout,
            decided: None,
        }
    }

    fn emit(&self, fanout: &Fanout, kind: EventKind) {
        fanout.send(Event {
            at: Utc::now(),
            run: self.run_id.clone(),
            kind,
        });
    }

    /// Runs every affected service to its end and returns the summary.
    pub(super) async fn run(
        mut self,
        request: &RunRequest,
        mut releases: HashMap<String, Release>,
        cancel: CancellationToken,
        fanout: &Fanout,
    ) -> RunSummary {
        let briefs = request
            .plan
            .services
            .iter()
            .map(|p| ServiceBrief {
                name: p.name.clone(),
                affected: p.affected,
                reason: p.reason.clone(),
                layer: p.layer,
            })
            .collect();
        self.emit(
            fanout,
            EventKind::RunStarted {
                kind: self.kind,
                env: self.env.clone(),
                services: briefs,
            },
        );

        let (tx, mut rx) = mpsc::unbounded_channel::<ExecMsg>();
        let permits = request.max_parallel.max(1);
        let checks = Arc::new(Semaphore::new(permits));
        let build = Arc::new(Semaphore::new(permits));
        let detected_at = Utc::now();
        let mut tasks = JoinSet::new();
        let mut task_names: HashMap<tokio::task::Id, String> = HashMap::new();
        // The Docker target of the environment (the engine was checked before the run began).
        let (container, container_error) =
            match crate::target::docker::ContainerTarget::of(&request.project.name, &request.env) {
                Ok(c) => (c, None),
                Err(e) => (None, Some(e)),
            };
        for planned in request.plan.services.iter() {
            let Some(i) = self.index.get(&planned.name).copied() else {
                continue;
            };
            if !planned.affected {
                let reason = planned.reason.clone();
                self.services[i].result = Some(Outcome::Skipped);
                self.services[i].reason = Some(reason.clone());
                self.emit(
                    fanout,
                    EventKind::ServiceFinished {
                        service: planned.name.clone(),
                        result: Outcome::Skipped,
                        release: None,
                        reason: Some(reason),
                        tail: Vec::new(),
                    },
                );
                continue;
            }
            self.services[i].stages.push(StageSummary {
                stage: Stage::Detect,
                result: Outcome::Succeeded,
                started_at: self.started_at,
                finished_at: Some(detected_at),
            });
            let on_docker = request
                .env
                .service(&planned.name)
                .is_some_and(|s| s.target.runs_images());
            if let (true, Some(why)) = (on_docker, &container_error) {
                self.services[i].result = Some(Outcome::Failed);
                self.services[i].reason = Some(why.clone());
                self.emit(
                    fanout,
                    EventKind::ServiceFinished {
                        service: planned.name.clone(),
                        result: Outcome::Failed,
                        release: None,
                        reason: Some(why.clone()),
                        tail: Vec::new(),
                    },
                );
                continue;
            }
            let (Some(svc), Some(release)) = (
                request.env.service(&planned.name).cloned(),
                releases.remove(&planned.name),
            ) else {
                continue;
            };
            let executor = Executor {
                kind: self.kind,
                env: self.env.clone(),
                project_dir: request.project.dir.clone(),
                state_dir: StateDir::of_root(&request.project.state_root),
                service: svc,
                planned: planned.clone(),
                release,
                secrets: request.secrets.clone(),
                agent: request.agent.clone(),
                smoke: request.smoke,
                env_names: request
                    .project
                    .environment_names()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                keep_releases: request.project.settings.keep_releases,
                checks: checks.clone(),
                build: build.clone(),
                store: self.store.clone(),
                tx: tx.clone(),
                cancel: cancel.clone(),
                require_approval: request.env.require_approval,
                container: container.clone().filter(|_| on_docker),
            };
            let handle = tasks.spawn(executor.run());
            task_names.insert(handle.id(), planned.name.clone());
        }
        // The approval watcher reports through the same channel as the executors.
        let watcher_tx = tx.clone();
        drop(tx);
        let mut watcher: Option<tokio::task::JoinHandle<()>> = None;

        let mut cancel_seen = false;
        while !tasks.is_empty() {
            tokio::select! {
                Some(msg) = rx.recv() => {
                    self.handle(msg, fanout);
                    self.check_approval(&mut watcher, &watcher_tx, &cancel);
                }
                joined = tasks.join_next_with_id() => {
                    // Everything the task sent before ending is already queued: take it first.
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg, fanout);
                    }
                    let (id, panic) = match joined {
                        Some(Ok((id, ()))) => (Some(id), None),
                        Some(Err(e)) => (Some(e.id()), Some(e.to_string())),
                        None => (None, None),
                    };
                    if let Some(name) = id.and_then(|id| task_names.remove(&id)) {
                        self.ensure_finished(&name, panic, fanout);
                    }
                    self.check_approval(&mut watcher, &watcher_tx, &cancel);
                }
                () = cancel.cancelled(), if !cancel_seen => {
                    cancel_seen = true;
                    self.emit(fanout, EventKind::RunCanceling { reason: "interrupted (Ctrl-C)".to_string() });
                }
            }
        }
        while let Ok(msg) = rx.try_recv() {
            self.handle(msg, fanout);
        }
        if let Some(w) = watcher.take() {
            w.abort();
        }
        self.close_approval(fanout).await;
        let summary = self.summary(cancel.is_cancelled());
        self.emit(
            fanout,
            EventKind::RunFinished {
                status: summary.status,
                summary: Box::new(summary.clone()),
            },
        );
        summary
    }

    fn handle(&mut self, msg: ExecMsg, fanout: &Fanout) {
        match msg {
            ExecMsg::Event(kind) => {
                self.observe(&kind);
                let phase = self.phase_for(&kind);
                self.emit(fanout, kind);
                if let Some(ev) = phase {
                    self.observe(&ev);
                    self.emit(fanout, ev);
                }
            }
            ExecMsg::Approval { service, reply } => match &self.approval {
                ApprovalGate::Approved => {
                    let _ = reply.send(Gate::Proceed);
                }
                ApprovalGate::Refused(why) => {
                    let _ = reply.send(Gate::Refused(why.clone()));
                }
                ApprovalGate::Collecting | ApprovalGate::Waiting => {
                    self.approval_waiters.insert(service, reply);
                }
            },
            ExecMsg::ApprovalRecorded(result) => match result {
                Ok(()) => {
                    let waiting = self.waiting_releases();
                    self.emit(
                        fanout,
                        EventKind::ApprovalRequested {
                            run: self.run_id.clone(),
                            env: self.env.clone(),
                            waiting,
                            timeout_ms: u64::try_from(self.approval_timeout.as_millis())
                                .unwrap_or(u64::MAX),
                        },
                    );
                }
                Err(why) => {
                    // The gate cannot work: the services fail (exit 1), nothing deploys.
                    let why = format!("the approval gate could not be recorded: {why}");
                    for (_, reply) in std::mem::take(&mut self.approval_waiters) {
                        let _ = reply.send(Gate::Fail(why.clone()));
                    }
                    self.approval = ApprovalGate::Refused(why);
                }
            },
            ExecMsg::ApprovalDecided(approval) => self.approval_decided(approval, fanout),
            ExecMsg::Gate { service, reply } => {
                self.gates.insert(service, reply);
                self.answer_gates();
            }
            ExecMsg::Finished {
                service,
                result,
                reason,
                tail,
            } => self.finish(&service, result, reason, tail, fanout),
        }
    }

    /// Updates the state from an executor fact.
    fn observe(&mut self, kind: &EventKind) {
        let Some(i) = kind.service().and_then(|s| self.index.get(s)).copied() else {
            return;
        };
        let st = &mut self.services[i];
        let now = Utc::now();
        match kind {
            EventKind::ReleaseCreated { release, .. } => st.release = Some(release.clone()),
            EventKind::StageStarted { stage, .. } => st.stages.push(StageSummary {
                stage: *stage,
                result: Outcome::Succeeded,
                started_at: now,
                finished_at: None,
            }),
            EventKind::StageFinished { stage, result, .. } => {
                if let Some(s) = st.stages.iter_mut().rev().find(|s| s.stage == *stage) {
                    s.result = *result;
                    s.finished_at = Some(now);
                }
            }
            EventKind::PhaseChanged { release, phase, .. }
                if st.release.as_deref() == Some(release.as_str()) =>
            {
                st.phase = Some(*phase);
            }
            _ => {}
        }
    }

    /// The release phase an executor fact implies.
    fn phase_for(&self, kind: &EventKind) -> Option<EventKind> {
        let EventKind::StageStarted { service, stage } = kind else {
            return None;
        };
        let phase = match stage {
            Stage::Checks => ReleasePhase::Validating,
            Stage::Build => ReleasePhase::Building,
            Stage::Deploy => ReleasePhase::Deploying,
            Stage::Verify => ReleasePhase::Verifying,
            Stage::Detect | Stage::Notify | Stage::PreDeploy | Stage::PostDeploy => return None,
        };
        let release = self.services[*self.index.get(service)?].release.clone()?;
        Some(EventKind::PhaseChanged {
            service: service.clone(),
            release,
            phase,
            reason: None,
        })
    }

    fn finish(
        &mut self,
        service: &str,
        result: Outcome,
        reason: Option<String>,
        tail: Vec<String>,
        fanout: &Fanout,
    ) {
        let Some(i) = self.index.get(service).copied() else {
            return;
        };
        if self.services[i].result.is_some() {
            return;
        }
        let now = Utc::now();
        {
            let st = &mut self.services[i];
            st.result = Some(result);
            st.reason.clone_from(&reason);
            st.tail.clone_from(&tail);
            for s in st.stages.iter_mut().filter(|s| s.finished_at.is_none()) {
                s.finished_at = Some(now);
                s.result = result;
            }
        }
        if let Some(release) = self.services[i].release.clone() {
            let phase = match (result, self.kind) {
                (Outcome::Succeeded, RunKind::Build) => Some(ReleasePhase::Built),
                (Outcome::Succeeded, _) => Some(ReleasePhase::Active),
                (Outcome::Failed, _) => Some(ReleasePhase::Failed),
                (Outcome::RolledBack, _) => Some(ReleasePhase::RolledBack),
                (Outcome::Canceled | Outcome::Skipped, _) => Some(ReleasePhase::Canceled),
            };
            // A release already recorded in its end phase keeps it; one that went ACTIVE
            // (before its post_deploy hooks) keeps serving unless it was rolled back.
            let phase = phase.filter(|p| {
                let current = self.services[i].phase;
                current != Some(*p)
                    && (current != Some(ReleasePhase::Active) || *p == ReleasePhase::RolledBack)
            });
            if let Some(phase) = phase {
                self.services[i].phase = Some(phase);
                self.emit(
                    fanout,
                    EventKind::PhaseChanged {
                        service: service.to_string(),
                        release,
                        phase,
                        reason: reason.clone(),
                    },
                );
            }
        }
        self.emit(
            fanout,
            EventKind::ServiceFinished {
                service: service.to_string(),
                result,
                release: self.services[i].release.clone(),
                reason,
                tail,
            },
        );
        self.answer_gates();
    }

    /// A task ended: if it never said how, it failed (a bug, reported as such).
    fn ensure_finished(&mut self, name: &str, panic: Option<String>, fanout: &Fanout) {
        let done = self
            .index
            .get(name)
            .is_some_and(|i| self.services[*i].result.is_some());
        if !done {
            let why = panic.unwrap_or_else(|| "its task ended without a result".to_string());
            self.finish(
                name,
                Outcome::Failed,
                Some(format!("internal error: {why}")),
                Vec::new(),
                fanout,
            );
        }
    }

    /// Answers every waiting gate whose dependencies have all ended.
    fn answer_gates(&mut self) {
        let waiting: Vec<String> = self.gates.keys().cloned().collect();
        for name in waiting {
            let Some(i) = self.index.get(&name).copied() else {
                continue;
            };
            let mut answer = Some(Gate::Proceed);
            for dep in &self.services[i].depends_on {
                let Some(d) = self.index.get(dep).map(|j| &self.services[*j]) else {
                    continue;
                };
                if !d.affected {
                    continue;
                }
                match d.result {
                    None => {
                        answer = None;
                        break;
                    }
                    Some(Outcome::Succeeded) => {}
                    Some(other) => {
                        answer = Some(Gate::Skip(format!(
                            "dependency `{dep}` {}",
                            other.as_str().replace('_', " ")
                        )));
                        break;
                    }
                }
            }
            if let Some(answer) = answer
                && let Some(reply) = self.gates.remove(&name)
            {
                let _ = reply.send(answer);
            }
        }
    }

    /// The releases of the services waiting at the approval gate.
    fn waiting_releases(&self) -> Vec<ReleaseRef> {
        self.approval_waiters
            .keys()
            .filter_map(|name| {
                let st = &self.services[*self.index.get(name)?];
                Some(ReleaseRef {
                    service: name.clone(),
                    release: st.release.clone()?,
                })
            })
            .collect()
    }

    /// Once every service still running waits at the approval gate, records the wait in the
    /// store and starts the watcher that polls for a decision (or the timeout, or Ctrl-C).
    fn check_approval(
        &mut self,
        watcher: &mut Option<tokio::task::JoinHandle<()>>,
        tx: &mpsc::UnboundedSender<ExecMsg>,
        cancel: &CancellationToken,
    ) {
        if !matches!(self.approval, ApprovalGate::Collecting) || self.approval_waiters.is_empty() {
            return;
        }
        let all_waiting = self
            .services
            .iter()
            .filter(|s| s.affected && s.result.is_none())
            .all(|s| self.approval_waiters.contains_key(&s.name));
        if !all_waiting {
            return;
        }
        self.approval = ApprovalGate::Waiting;
        let waiting = self
            .waiting_releases()
            .iter()
            .map(|w| format!("{} {}", w.service, w.release))
            .collect::<Vec<_>>()
            .join(", ");
        *watcher = Some(tokio::spawn(watch_approval(
            self.store.clone(),
            self.run_id.clone(),
            self.env.clone(),
            waiting,
            self.approval_timeout,
            cancel.clone(),
            tx.clone(),
        )));
    }

    fn approval_decided(&mut self, approval: Approval, fanout: &Fanout) {
        if !matches!(self.approval, ApprovalGate::Waiting) {
            return;
        }
        self.emit(
            fanout,
            EventKind::ApprovalDecided {
                state: approval.state,
                by: approval.decided_by.clone(),
                reason: approval.reason.clone(),
            },
        );
        let refusal = match approval.state {
            ApprovalState::Approved => None,
            ApprovalState::Rejected => Some(format!(
                "approval rejected by {}{}",
                approval.decided_by.as_deref().unwrap_or("someone"),
                approval
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            ApprovalState::TimedOut => Some(format!(
                "approval timed out: no decision within {}",
                cutover_config::format_duration(self.approval_timeout)
            )),
            ApprovalState::Canceled | ApprovalState::Waiting => Some(
                approval
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the approval wait was canceled".to_string()),
            ),
        };
        self.decided = Some(approval);
        match refusal {
            None => {
                self.approval = ApprovalGate::Approved;
                for (_, reply) in std::mem::take(&mut self.approval_waiters) {
                    let _ = reply.send(Gate::Proceed);
                }
            }
            Some(why) => self.refuse_approval(why),
        }
    }

    fn refuse_approval(&mut self, why: String) {
        for (_, reply) in std::mem::take(&mut self.approval_waiters) {
            let _ = reply.send(Gate::Refused(why.clone()));
        }
        self.approval = ApprovalGate::Refused(why);
    }

    /// At the end of the run: a gate still waiting (Ctrl-C) is recorded canceled, so nobody
    /// can approve a run that is over.
    async fn close_approval(&mut self, fanout: &Fanout) {
        if !matches!(self.approval, ApprovalGate::Waiting) {
            return;
        }
        let store = self.store.clone();
        let run = self.run_id.clone();
        let decided = tokio::task::spawn_blocking(move || {
            store.decide_approval(
                &run,
                ApprovalState::Canceled,
                None,
                Some("the run was interrupted while waiting"),
                Utc::now(),
            )
        })
        .await;
        let approval = match decided {
            Ok(Ok(Ok(a))) | Ok(Ok(Err(Some(a)))) => a,
            _ => return,
        };
        self.approval_decided(approval, fanout);
    }

    fn summary(&self, canceled: bool) -> RunSummary {
        let services: Vec<ServiceSummary> = self
            .services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name.clone(),
                result: s.result.unwrap_or(Outcome::Canceled),
                release: s.release.clone(),
                reason: s
                    .reason
                    .clone()
                    .or_else(|| (!s.affected).then(|| s.plan_reason.clone())),
                stages: s.stages.clone(),
                tail: s.tail.clone(),
            })
            .collect();
        RunSummary {
            run: self.run_id.clone(),
            env: self.env.clone(),
            status: RunSummary::status_from(&services, canceled),
            started_at: self.started_at,
            finished_at: Utc::now(),
            services,
            approval: self.decided.clone(),
        }
    }
}

/// How often a waiting run looks for a decision in the store.
const APPROVAL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Records the wait, then polls the store until `cutover approve` decides, `timeout` passes
/// (recorded `timed_out`) or the run is canceled (left to `close_approval`).
async fn watch_approval(
    store: Arc<dyn ReleaseStore>,
    run: String,
    env: String,
    waiting: String,
    timeout: std::time::Duration,
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<ExecMsg>,
) {
    let blocking = |f: Box<dyn FnOnce() -> Result<Option<Approval>, String> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    };
    let recorded = {
        let (store, run) = (store.clone(), run.clone());
        blocking(Box::new(move || {
            store
                .request_approval(&run, &env, &waiting, Utc::now())
                .map(Some)
                .map_err(|e| e.to_string())
        }))
        .await
    };
    if let Err(why) = recorded {
        let _ = tx.send(ExecMsg::ApprovalRecorded(Err(why)));
        return;
    }
    let _ = tx.send(ExecMsg::ApprovalRecorded(Ok(())));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + APPROVAL_POLL)) => {}
            () = cancel.cancelled() => return,
        }
        let timed_out = tokio::time::Instant::now() >= deadline;
        let (store, run) = (store.clone(), run.clone());
        let seen = blocking(Box::new(move || {
            let current = store.approval(&run).map_err(|e| e.to_string())?;
            match current {
                Some(a) if a.state == ApprovalState::Waiting && timed_out => {
                    match store.decide_approval(
                        &run,
                        ApprovalState::TimedOut,
                        None,
                        None,
                        Utc::now(),
                    ) {
                        Ok(Ok(a)) | Ok(Err(Some(a))) => Ok(Some(a)),
                        Ok(Err(None)) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                }
                other => Ok(other),
            }
        }))
        .await;
        match seen {
            Ok(Some(a)) if a.state != ApprovalState::Waiting => {
                let _ = tx.send(ExecMsg::ApprovalDecided(a));
                return;
            }
            // A store that cannot be read now may be busy: try again until the deadline.
            _ if timed_out => {
                let _ = tx.send(ExecMsg::ApprovalRecorded(Err(
                    "the approval could not be read from the store".to_string(),
                )));
                return;
            }
            _ => {}
        }
    }
}
