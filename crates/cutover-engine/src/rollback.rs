//! Going back to an earlier release: shared by `cutover rollback` and by a `post_deploy` hook
//! that fails with `rollback_on_hook_failure = true`.
//!
//! A rollback reuses the earlier release's snapshot (no checks, no build) and asks the agent
//! for it through `/v1/rollback`: a route flip when its instances are still warm
//! (`scale_down_delay`), else a blue-green start of the snapshot. Phase bookkeeping is left to
//! the caller, which knows whether it writes the store directly or through events.

use std::collections::BTreeMap;

use cutover_config::ResolvedService;
use cutover_runtime::api::client::AgentClient;
use cutover_runtime::api::types::{DeployProgress, DeployRequest};
use cutover_store::{Release, ReleasePhase, StateDir};

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
    let (Some(run), Some(port)) = (run, svc.port) else {
        return Err(format!("{} has no `run` or `port`", svc.name));
    };
    let mut spec = crate::target::release_spec(env, svc, target, &dir, run, port, secrets);
    // On the Docker target the release's image runs (tagged with its id when it was built).
    spec.container = container
        .filter(|_| svc.target == cutover_config::TargetKind::Docker)
        .map(|c| c.container_spec(svc, target));
    match agent.deploy(&DeployRequest { spec }, true, |_| {}).await {
        Ok(DeployProgress::Active) => Ok(()),
        Ok(DeployProgress::Failed { reason }) => Err(reason),
        Ok(_) => Err("the agent ended without a verdict".to_string()),
        Err(e) => Err(e.to_string()),
    }
}
