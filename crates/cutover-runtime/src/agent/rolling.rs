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
    let total = spec.instances.max(1);
    let batch = spec.batch.clamp(1, total);
    let drain = Duration::from_millis(spec.drain_timeout_ms);
    let new = Arc::new(ReleaseSet::new(spec));
    {
        let mut sets = rt.sets.lock().await;
        if let Some(stale) = sets.warm.take() {
            tokio::spawn(async move { stale.stop().await });
        }
        sets.next = Some(Next {
            set: new.clone(),
            weighting: Weighting::ByInstances,
            sticky: false,
        });
    }
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
    let leftover = {
        let mut sets = rt.sets.lock().await;
        sets.next = None;
        new.set_restart(true);
        old.set_restart(false);
        let previous = sets.live.replace(new.clone());
        let generation = rt.reroute(&sets);
        if rt.proxy.route().generation() == generation {
            let _ = progress.send(DeployProgress::Switched { generation });
        }
        previous
    };
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
