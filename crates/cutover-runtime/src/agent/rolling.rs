//! The rolling strategy: replace `batch` instances at a time; each new one is ready before an
//! old one leaves, and an old instance leaves the route and drains before it is stopped.
//!
//! Traffic is shared by ready instances (both releases serve during the roll). A new instance
//! that never becomes ready stops the roll: old instances already stopped are started again,
//! and only once they are ready do the new ones leave, so the service never drops below the
//! capacity it had.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::set::{Member, ReleaseSet, stop_members};
use super::{Agent, DeployError, Next, ServiceRuntime, Weighting, log};
use crate::api::types::{DeployProgress, ReleaseSpec};

/// Rolls the live set `old` over to `spec`.
pub(super) async fn run(
    agent: &Arc<Agent>,
    rt: &Arc<ServiceRuntime>,
    old: Arc<ReleaseSet>,
    spec: ReleaseSpec,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) -> Result<(), DeployError> {
    if spec.container.as_ref().is_some_and(|c| c.swarm.is_some()) {
        return swarm(agent, rt, old, spec, progress).await;
    }
    let total = spec.instances.max(1);
    let batch = spec.batch.clamp(1, total);
    let drain = Duration::from_millis(spec.drain_timeout_ms);
    let new = Arc::new(ReleaseSet::new(spec));
    join_beside(rt, &new).await;
    let ctx = agent.spawn_context();
    let mut removed: u32 = 0;
    while new.len() < total {
        let k = batch.min(total - new.len());
        let _ = progress.send(DeployProgress::Starting { instances: k });
        let members = match new.start(k, &ctx) {
            Ok(m) => m,
            Err(e) => return Err(restore(agent, rt, &old, &new, removed, total, e).await),
        };
        let _ = progress.send(DeployProgress::Verifying);
        let reporting = super::set::report_starting(new.clone(), progress.clone());
        let ready = new.wait_ready(&members).await;
        reporting.finish();
        let members = match ready {
            Ok(members) => members,
            Err(reason) => return Err(restore(agent, rt, &old, &new, removed, total, reason).await),
        };
        for m in &members {
            m.instance.set_restart(true);
        }
        // One route swap: the new instances join as the old ones they replace leave.
        let leaving = old.take(k);
        removed += u32::try_from(leaving.len()).unwrap_or(0);
        retire(rt, &leaving, drain).await;
        let _ = progress.send(DeployProgress::Batch {
            replaced: new.len(),
            total,
        });
        log(&format!(
            "{}/{} {}: {}/{total} instances replaced",
            rt.env,
            rt.service,
            new.spec.release,
            new.len()
        ));
    }
    // At the switch every new instance is ready: one that failed since its batch fails the
    // roll, never a release live with fewer ready instances than asked for. A crashed one is
    // seen by its state at once (its probe may still say ready until its failures add up).
    let ready = new.wait_ready(&new.members()).await;
    if let Err(reason) = ready.and_then(|_| new.all_running()) {
        return Err(restore(agent, rt, &old, &new, removed, total, reason).await);
    }
    let leftover = make_live(rt, &old, &new, progress).await;
    // Scaling down: what is left of the old set leaves now (it is out of the route already).
    if let Some(previous) = leftover {
        let rest = previous.take(u32::MAX);
        let rt = rt.clone();
        let release = previous.spec.release.clone();
        tokio::spawn(async move {
            retire(&rt, &rest, drain).await;
            if !rest.is_empty() {
                log(&format!(
                    "{}/{} {release}: {} old instance(s) scaled down",
                    rt.env,
                    rt.service,
                    rest.len()
                ));
            }
        });
    }
    Ok(())
}

/// The roll is done: `new` is the live set (restarts on), `old` leaves the route (restarts off);
/// returns the set that was live, for its scale-down.
async fn make_live(
    rt: &ServiceRuntime,
    old: &ReleaseSet,
    new: &Arc<ReleaseSet>,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) -> Option<Arc<ReleaseSet>> {
    let mut sets = rt.sets.lock().await;
    sets.next = None;
    new.set_restart(true);
    old.set_restart(false);
    let previous = sets.live.replace(Arc::clone(new));
    let generation = rt.reroute(&sets);
    if rt.proxy.route().generation() == generation {
        let _ = progress.send(DeployProgress::Switched { generation });
    }
    previous
}

/// Puts `new` beside the live set, traffic shared by ready instances; a warm set left from an
/// earlier deploy is stopped.
async fn join_beside(rt: &ServiceRuntime, new: &Arc<ReleaseSet>) {
    let mut sets = rt.sets.lock().await;
    if let Some(stale) = sets.warm.take() {
        tokio::spawn(async move { stale.stop().await });
    }
    sets.next = Some(Next {
        set: Arc::clone(new),
        weighting: Weighting::ByInstances,
        sticky: false,
    });
}

/// Routes by the sets as they are now, which takes `leaving` out of the route (the caller
/// removed them from their set), waits for their requests, then stops them.
async fn retire(rt: &ServiceRuntime, leaving: &[Arc<Member>], drain: Duration) {
    rt.reroute(&*rt.sets.lock().await);
    for m in leaving {
        m.instance.set_restart(false);
        rt.proxy.drain_backend(m.addr(), drain).await;
    }
    stop_members(leaving).await;
}

/// Stops the roll: starts again the `removed` old instances, waits until they are ready, then
/// takes the new ones out and stops them.
async fn restore(
    agent: &Agent,
    rt: &ServiceRuntime,
    old: &Arc<ReleaseSet>,
    new: &Arc<ReleaseSet>,
    removed: u32,
    total: u32,
    reason: String,
) -> DeployError {
    let serving = new.members().iter().filter(|m| m.ready()).count();
    let mut restored = String::new();
    if removed > 0 {
        match old.start(removed, &agent.spawn_context()) {
            Ok(back) => match old.wait_ready(&back).await {
                Ok(back) => {
                    for m in &back {
                        m.instance.set_restart(true);
                    }
                }
                Err(e) => {
                    // Those it still has of the ones just started (a replaced one is in it).
                    let back: Vec<_> = old
                        .members()
                        .into_iter()
                        .filter(|m| back.iter().any(|b| b.index == m.index))
                        .collect();
                    old.remove(&back);
                    stop_members(&back).await;
                    restored = format!(
                        "; {removed} old instance(s) could not be started again: {}",
                        e.lines().next().unwrap_or("")
                    );
                }
            },
            Err(e) => restored = format!("; old instances could not be started again: {e}"),
        }
    }
    let leaving = new.take(u32::MAX);
    {
        let mut sets = rt.sets.lock().await;
        sets.next = None;
        rt.reroute(&sets);
    }
    for m in &leaving {
        rt.proxy
            .drain_backend(m.addr(), Duration::from_millis(new.spec.drain_timeout_ms))
            .await;
    }
    stop_members(&leaving).await;
    DeployError::Failed(format!(
        "{reason}\nthe roll stopped with {serving}/{total} new instance(s) serving; release {} is back on {} instance(s){restored}",
        old.spec.release,
        old.len()
    ))
}

/// How long cutover follows a swarm update or rollback past its own readiness wait.
const SWARM_SETTLE: Duration = Duration::from_secs(120);

/// The rolling strategy on swarm: the live service is updated in place by swarm's own rolling
/// update (start-first, `batch` tasks at a time, rollback on failure); the new release's seats
/// bind to the new tasks as swarm starts them and join the route once their probes pass, the old
/// ones leave it as swarm stops their tasks. Cutover follows the update to its end: a task that
/// fails makes swarm roll back, one that never gets ready makes cutover ask swarm to; either
/// way the release ends failed with swarm's reason and the task's last lines, and the old
/// release serves again.
async fn swarm(
    agent: &Arc<Agent>,
    rt: &Arc<ServiceRuntime>,
    old: Arc<ReleaseSet>,
    spec: ReleaseSpec,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) -> Result<(), DeployError> {
    use crate::target::swarm::RollOutcome;
    let total = spec.instances.max(1);
    let host = spec
        .container
        .as_ref()
        .map(|c| c.host.clone())
        .unwrap_or_default();
    let new = Arc::new(ReleaseSet::new(spec));
    join_beside(rt, &new).await;
    let ctx = agent.spawn_context();
    let _ = progress.send(DeployProgress::Starting { instances: total });
    let members = match new.start(total, &ctx) {
        Ok(m) => m,
        Err(e) => {
            take_out(rt, &new).await;
            return Err(DeployError::Failed(e));
        }
    };
    let svc = ctx
        .backends
        .swarm(&host)
        .ok()
        .and_then(|b| b.service(&new.spec.env, &new.spec.service, &new.spec.release));
    let Some(svc) = svc else {
        take_out(rt, &new).await;
        return Err(DeployError::Failed(
            "the swarm service of the release was not found".to_string(),
        ));
    };
    let mut outcome = svc.outcome();
    let _ = progress.send(DeployProgress::Verifying);
    let reporting = super::set::report_starting(new.clone(), progress.clone());
    let rolled_back = {
        let mut outcome = outcome.clone();
        async move {
            outcome_of(&mut outcome, Duration::MAX, |o| {
                matches!(o, RollOutcome::RolledBack(_))
            })
            .await
        }
    };
    let ready = tokio::select! {
        r = new.wait_ready(&members) => r.map(|_| ()),
        o = rolled_back => match o {
            Some(RollOutcome::RolledBack(why)) => Err(format!("swarm rolled the update back: {why}")),
            _ => Err("the swarm service went away during the update".to_string()),
        },
    };
    reporting.finish();
    // Ready by cutover's probes: now swarm's own verdict.
    let verdict = match ready {
        Ok(()) => {
            let done = outcome_of(&mut outcome, SWARM_SETTLE, |o| {
                matches!(o, RollOutcome::Completed | RollOutcome::RolledBack(_))
            })
            .await;
            match done {
                Some(RollOutcome::Completed) => Ok(()),
                Some(RollOutcome::RolledBack(why)) => {
                    Err(format!("swarm rolled the update back: {why}"))
                }
                _ => Err(format!(
                    "swarm's update did not finish within {}s of every new task being ready",
                    SWARM_SETTLE.as_secs()
                )),
            }
        }
        Err(why) => Err(why),
    };
    if let Err(reason) = verdict {
        return Err(swarm_failed(rt, &old, &new, &svc, reason).await);
    }
    let leftover = make_live(rt, &old, &new, progress).await;
    // The old seats' tasks are gone: they leave (the service keeps its new tasks).
    if let Some(previous) = leftover {
        previous.stop().await;
    }
    log(&format!(
        "{}/{} {}: swarm's rolling update completed ({total} task(s))",
        rt.env, rt.service, new.spec.release
    ));
    Ok(())
}

/// The new release failed on swarm: swarm rolls back (asked by cutover when it has not
/// already), the new seats leave once it has, and the old release serves again.
async fn swarm_failed(
    rt: &ServiceRuntime,
    old: &Arc<ReleaseSet>,
    new: &Arc<ReleaseSet>,
    svc: &crate::target::swarm::SwarmService,
    reason: String,
) -> DeployError {
    use crate::target::swarm::RollOutcome;
    let mut outcome = svc.outcome();
    let rolled_back = matches!(*outcome.borrow(), RollOutcome::RolledBack(_));
    let mut notes = Vec::new();
    if !rolled_back && let Err(e) = svc.roll_back(&reason).await {
        notes.push(format!("asking swarm to roll back failed: {e}"));
    }
    let back = outcome_of(&mut outcome, SWARM_SETTLE, |o| {
        matches!(o, RollOutcome::RolledBack(_))
    })
    .await;
    let swarm_says = match back {
        Some(RollOutcome::RolledBack(why)) if !why.is_empty() => Some(why),
        Some(_) => None,
        None => {
            notes.push(format!(
                "swarm had not rolled back within {}s",
                SWARM_SETTLE.as_secs()
            ));
            None
        }
    };
    let tails: Vec<String> = new
        .members()
        .iter()
        .filter_map(|m| {
            let lines = m.instance.last_lines(10);
            (!lines.is_empty()).then(|| {
                format!(
                    "last lines of instance {}:\n  {}",
                    m.index,
                    lines.join("\n  ")
                )
            })
        })
        .take(1)
        .collect();
    take_out(rt, new).await;
    let back_on = match old.wait_ready(&old.members()).await {
        Ok(m) => format!(
            "release {} serves again on {} task(s)",
            old.spec.release,
            m.len()
        ),
        Err(e) => format!(
            "release {} is not ready again: {}",
            old.spec.release,
            e.lines().next().unwrap_or("")
        ),
    };
    let mut text = reason;
    if let Some(why) = swarm_says
        && !text.contains(&why)
    {
        text.push_str(&format!("\nswarm: {why}"));
    }
    for n in notes {
        text.push_str(&format!("\n{n}"));
    }
    text.push_str(&format!("\n{back_on}"));
    for t in tails {
        text.push_str(&format!("\n{t}"));
    }
    DeployError::Failed(text)
}

/// Takes the set beside the live one out of the route and stops it.
async fn take_out(rt: &ServiceRuntime, new: &Arc<ReleaseSet>) {
    {
        let mut sets = rt.sets.lock().await;
        sets.next = None;
        rt.reroute(&sets);
    }
    new.stop().await;
}

/// The outcome once `done` says it is decided (`None`: not within `within`, or the service
/// went away).
async fn outcome_of(
    outcome: &mut tokio::sync::watch::Receiver<crate::target::swarm::RollOutcome>,
    within: Duration,
    done: impl FnMut(&crate::target::swarm::RollOutcome) -> bool,
) -> Option<crate::target::swarm::RollOutcome> {
    let wait = async { outcome.wait_for(done).await.map(|o| o.clone()).ok() };
    if within == Duration::MAX {
        return wait.await;
    }
    tokio::time::timeout(within, wait).await.ok().flatten()
}
