//! Going back to an earlier release: shared by `cutover rollback` and by a `post_deploy` hook
//! that fails with `rollback_on_hook_failure = true`.
//!
//! A rollback reuses the earlier release's snapshot (no checks, no build) and asks the agent
//! for it through `/v1/rollback`: a route flip when its instances are still warm
//! (`scale_down_delay`), else a blue-green start of the snapshot. The phases a rollback records
//! are decided here ([`RollbackPhases`]); the caller applies them, to the store directly
//! (`cutover rollback`, `--atomic`) or as `PhaseChanged` events (a pipeline's rollback).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cutover_config::ResolvedService;
use cutover_runtime::api::client::AgentClient;
use cutover_runtime::api::types::{DeployProgress, DeployRequest};
use cutover_store::{Release, ReleasePhase, ReleaseStore, StateDir};

use crate::event::{EventKind, Outcome};

/// Whether a rollback may make `release` ACTIVE again: it served once (was ACTIVE) and did not
/// end FAILED, ROLLED_BACK or CANCELED (a release judged bad or never finished never becomes
/// stable again).
pub fn can_roll_back_to(release: &Release) -> bool {
    release.activated_at.is_some()
        && !matches!(
            release.phase,
            ReleasePhase::Failed | ReleasePhase::RolledBack | ReleasePhase::Canceled
        )
}

/// The release that was ACTIVE before `current`: the most recently activated one that is
/// not current and [`can_roll_back_to`].
pub fn previous_active(releases: &[Release], current: Option<&Release>) -> Option<Release> {
    let mut candidates: Vec<&Release> = releases
        .iter()
        .filter(|r| can_roll_back_to(r))
        .filter(|r| current.is_none_or(|c| c.id != r.id))
        .collect();
    candidates.sort_by_key(|r| r.activated_at);
    candidates.last().map(|r| (*r).clone())
}

/// The phases a rollback of one service records: `target` goes DEPLOYING when the rollback
/// starts; when it succeeds `current` becomes ROLLED_BACK (with `why`) and `target` ACTIVE
/// again, and when it fails `target` becomes FAILED with the agent's reason.
#[derive(Debug, Clone, Copy)]
pub struct RollbackPhases<'a> {
    /// The release going back into service.
    pub target: &'a str,
    /// The release it replaces, when there is one.
    pub current: Option<&'a str>,
    /// Why `current` is rolled back (its ROLLED_BACK reason).
    pub why: &'a str,
}

/// One phase change of one release, to record in the store or send as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseStep {
    /// The release.
    pub release: String,
    /// Its new phase.
    pub phase: ReleasePhase,
    /// Why, when the phase needs one.
    pub reason: Option<String>,
}

impl RollbackPhases<'_> {
    /// The change recorded before the agent is asked: the target is DEPLOYING.
    pub fn started(&self) -> PhaseStep {
        PhaseStep {
            release: self.target.to_string(),
            phase: ReleasePhase::Deploying,
            reason: None,
        }
    }

    /// The changes recorded once the agent answered (`rolled`: its verdict), in order.
    pub fn finished(&self, rolled: &Result<(), String>) -> Vec<PhaseStep> {
        match rolled {
            Ok(()) => {
                let mut steps = Vec::with_capacity(2);
                if let Some(current) = self.current {
                    steps.push(PhaseStep {
                        release: current.to_string(),
                        phase: ReleasePhase::RolledBack,
                        reason: Some(self.why.to_string()),
                    });
                }
                steps.push(PhaseStep {
                    release: self.target.to_string(),
                    phase: ReleasePhase::Active,
                    reason: None,
                });
                steps
            }
            Err(why) => vec![PhaseStep {
                release: self.target.to_string(),
                phase: ReleasePhase::Failed,
                reason: Some(format!("rollback to it failed: {why}")),
            }],
        }
    }
}

impl PhaseStep {
    /// Writes the change to `store` (a release of `service`), at `at`.
    pub fn record(
        &self,
        store: &dyn ReleaseStore,
        service: &str,
        at: DateTime<Utc>,
    ) -> Result<Release, cutover_store::StoreError> {
        store.set_phase(
            service,
            &self.release,
            self.phase,
            self.reason.as_deref(),
            at,
        )
    }

    /// The change as the event the store reporter records (a release of `service`).
    pub fn event(self, service: &str) -> EventKind {
        EventKind::PhaseChanged {
            service: service.to_string(),
            release: self.release,
            phase: self.phase,
            reason: self.reason,
        }
    }
}

/// The `rollback.finished` event of a rollback of `service` to `to` that ended with `rolled`.
pub fn finished_event(service: &str, to: &str, rolled: &Result<(), String>) -> EventKind {
    EventKind::RollbackFinished {
        service: service.to_string(),
        to: to.to_string(),
        result: if rolled.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        reason: rolled.as_ref().err().cloned(),
    }
}

/// Asks the agent to serve `target` (a release of `svc` in `env` whose snapshot is in the
/// project's `state_dir`) again; Err says why it could not, in plain words.
pub async fn redeploy(
    agent: &AgentClient,
    state_dir: &StateDir,
    env: &str,
    svc: &ResolvedService,
    target: &str,
    secrets: &BTreeMap<String, String>,
    container: Option<&crate::target::docker::ContainerTarget>,
) -> Result<(), String> {
    let dir = state_dir.release(&svc.name, target);
    if !dir.is_dir() {
        return Err(format!(
            "the snapshot of {target} is gone ({}); it was pruned by keep_releases",
            dir.display()
        ));
    }
    let run = match container {
        Some(_) => Some(svc.run.clone().unwrap_or_default()),
        None => svc.run.clone(),
    };
    let (Some(run), true) = (run, svc.port.is_some() || !svc.hosts.is_empty()) else {
        return Err(format!(
            "{} has no `run`, or neither `port` nor `hosts`",
            svc.name
        ));
    };
    let port = svc.port;
    let mut spec = crate::target::release_spec(env, svc, target, &dir, run, port, secrets);
    // On the Docker target the release's image runs (tagged with its id when it was built).
    spec.container = container
        .filter(|_| svc.target.runs_images())
        .map(|c| c.container_spec(svc, target));
    match agent.deploy(&DeployRequest { spec }, true, |_| {}).await {
        Ok(DeployProgress::Active) => Ok(()),
        Ok(DeployProgress::Failed { reason }) => Err(reason),
        Ok(_) => Err("the agent ended without a verdict".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(release: &str, phase: ReleasePhase, reason: Option<&str>) -> PhaseStep {
        PhaseStep {
            release: release.to_string(),
            phase,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn a_rollback_that_succeeds_retires_the_current_release_and_reactivates_the_target() {
        let phases = RollbackPhases {
            target: "r1",
            current: Some("r2"),
            why: "hook failed",
        };
        assert_eq!(phases.started(), step("r1", ReleasePhase::Deploying, None));
        assert_eq!(
            phases.finished(&Ok(())),
            vec![
                step("r2", ReleasePhase::RolledBack, Some("hook failed")),
                step("r1", ReleasePhase::Active, None),
            ]
        );
    }

    #[test]
    fn without_a_current_release_only_the_target_changes() {
        let phases = RollbackPhases {
            target: "r1",
            current: None,
            why: "asked",
        };
        assert_eq!(
            phases.finished(&Ok(())),
            vec![step("r1", ReleasePhase::Active, None)]
        );
    }

    #[test]
    fn a_rollback_that_fails_leaves_the_current_release_and_fails_the_target() {
        let phases = RollbackPhases {
            target: "r1",
            current: Some("r2"),
            why: "hook failed",
        };
        assert_eq!(
            phases.finished(&Err("port in use".into())),
            vec![step(
                "r1",
                ReleasePhase::Failed,
                Some("rollback to it failed: port in use")
            )]
        );
    }
}
