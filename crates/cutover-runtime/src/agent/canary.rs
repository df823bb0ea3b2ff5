//! The canary strategy: a canary set beside the stable one, weighted steps, each judged on the
//! canary's own proxy numbers since the step began.
//!
//! Per step: apply the weight, then every `interval` judge the window. A failed judgement (or
//! `abort`) sends 100% to stable in one route store and stops the canary. A step advances when
//! its pause is over and its latest judgement passed; a manual pause waits for `promote`, which
//! also ends every later pause; `promote --full` goes live at once. A step without a verdict
//! `verdict_timeout` after its pause ended is rolled back: untested code is never promoted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::set::ReleaseSet;
use super::{Agent, CanaryStatus, Control, DeployError, Next, ServiceRuntime, Weighting, log};
use crate::analysis::{Verdict, judge, with_prometheus};
use crate::api::types::{
    CanarySpec, DeployProgress, Judgement, PauseSpec, PrometheusCheck, ReleaseSpec,
};
use crate::promql::{expand_query, query_scalar};

/// The longest a `[canary.prometheus]` query may take (at most one `interval`).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Clears the service's control channel when the canary ends, however it ends.
struct ControlGuard<'a>(&'a ServiceRuntime);

impl Drop for ControlGuard<'_> {
    fn drop(&mut self) {
        self.0.set_control(None);
    }
}

/// Runs the canary of `spec` against the live set `stable`.
pub(super) async fn run(
    agent: &Arc<Agent>,
    rt: &Arc<ServiceRuntime>,
    stable: Arc<ReleaseSet>,
    spec: ReleaseSpec,
    c: CanarySpec,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) -> Result<(), DeployError> {
    let canary = agent.start_verified(spec, progress).await?;
    canary.set_restart(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    rt.set_control(Some(tx));
    let _guard = ControlGuard(rt);
    {
        // A warm set from an earlier deploy is not a rollback target any more.
        let mut sets = rt.sets.lock().await;
        if let Some(stale) = sets.warm.take() {
            tokio::spawn(async move { stale.stop().await });
        }
    }

    let release = canary.spec.release.clone();
    let service = canary.spec.service.clone();
    let steps = u32::try_from(c.steps.len()).unwrap_or(u32::MAX);
    let interval = Duration::from_millis(c.interval_ms.max(1));
    let verdict_timeout = Duration::from_millis(c.verdict_timeout_ms);
    let mut promoted = false;

    for (i, step) in c.steps.iter().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let weight = step.weight.min(100);
        let started = Instant::now();
        let mut pause_end = match step.pause {
            PauseSpec::None => Some(started),
            // A pause too long to represent never ends on its own: like a manual one.
            PauseSpec::Timed { ms } => started.checked_add(Duration::from_millis(ms)),
            PauseSpec::Manual => None,
        };
        if promoted {
            pause_end = Some(started);
        }
        let status = |state: &str, judgement: Option<Judgement>| CanaryStatus {
            release: release.clone(),
            stable: stable.spec.release.clone(),
            step: number,
            steps,
            weight,
            state: state.to_string(),
            judgement,
        };
        let baseline = {
            let mut sets = rt.sets.lock().await;
            sets.next = Some(Next {
                set: canary.clone(),
                weighting: Weighting::Percent(weight),
                sticky: c.sticky,
            });
            sets.canary = Some(status(state_of(pause_end, started), None));
            rt.reroute(&sets);
            // Taken with the new weight applied: the window is this step's traffic only.
            agent
                .metrics
                .snapshot(&service, &release)
                .unwrap_or_default()
        };
        let _ = progress.send(DeployProgress::Step {
            number,
            steps,
            weight,
        });
        log(&format!(
            "{}/{} {release}: canary step {number}/{steps} at {weight}%",
            rt.env, rt.service
        ));

        let first = started.checked_add(interval).unwrap_or(started);
        let mut ticker = tokio::time::interval_at(first, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Verdict> = None;
        loop {
            let pause_timer = async {
                match pause_end {
                    Some(end) if end > Instant::now() => tokio::time::sleep_until(end).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                control = rx.recv() => match control {
                    Some(Control::Promote) => {
                        promoted = true;
                        let now = Instant::now();
                        pause_end = Some(pause_end.map_or(now, |end| end.min(now)));
                        if last == Some(Verdict::Pass) {
                            break;
                        }
                    }
                    Some(Control::PromoteFull) => {
                        log(&format!("{}/{} {release}: promoted to 100% by `cutover promote --full`", rt.env, rt.service));
                        go_live(agent, rt, &canary, progress).await;
                        return Ok(());
                    }
                    Some(Control::Abort) | None => {
                        return Err(roll_back(rt, &canary, format!(
                            "aborted by `cutover abort` at step {number}/{steps} ({weight}%)"
                        )).await);
                    }
                },
                () = pause_timer => {
                    if last == Some(Verdict::Pass) {
                        break;
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let window = agent
                        .metrics
                        .snapshot(&service, &release)
                        .unwrap_or_default()
                        .since(&baseline);
                    let mut judgement = judge(&window, &c, weight);
                    if let Some(check) = &c.prometheus {
                        let check = PrometheusCheck {
                            query: expand_query(&check.query, &service, &release),
                            ..check.clone()
                        };
                        let value = query_scalar(
                            &check.url,
                            &check.query,
                            PROMETHEUS_TIMEOUT.min(interval),
                        )
                        .await;
                        judgement = with_prometheus(judgement, &check, value);
                    }
                    let verdict = Verdict::parse(&judgement.verdict).unwrap_or(Verdict::NoVerdict);
                    let _ = progress.send(DeployProgress::Judgement {
                        number,
                        judgement: judgement.clone(),
                    });
                    {
                        let mut sets = rt.sets.lock().await;
                        sets.canary = Some(status(state_of(pause_end, now), Some(judgement.clone())));
                    }
                    last = Some(verdict);
                    let pause_over = pause_end.is_some_and(|end| now >= end);
                    match verdict {
                        Verdict::Fail => {
                            let reason = judgement.detail;
                            return Err(roll_back_after(rt, &canary, reason, Some(now)).await);
                        }
                        Verdict::Pass if pause_over => break,
                        Verdict::Pass => {}
                        Verdict::NoVerdict => {
                            if let Some(end) = pause_end
                                && end.checked_add(verdict_timeout).is_some_and(|t| now >= t)
                            {
                                return Err(roll_back(rt, &canary, format!(
                                    "no verdict: {} requests < min_requests {} in {} at step {number}/{steps} ({weight}%)",
                                    window.requests,
                                    c.min_requests,
                                    cutover_config::format_duration(verdict_timeout)
                                )).await);
                            }
                        }
                    }
                }
            }
            let mut sets = rt.sets.lock().await;
            if let Some(status) = sets.canary.as_mut() {
                status.state = state_of(pause_end, Instant::now()).to_string();
            }
        }
    }
    go_live(agent, rt, &canary, progress).await;
    Ok(())
}

/// The canary becomes the live set at 100%; the stable set drains and stays warm.
async fn go_live(
    agent: &Arc<Agent>,
    rt: &Arc<ServiceRuntime>,
    canary: &Arc<ReleaseSet>,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) {
    let mut sets = rt.sets.lock().await;
    sets.next = None;
    sets.canary = None;
    agent.switch(rt, &mut sets, canary.clone(), progress);
}

/// 100% back to stable in one route store, then the canary drains and stops.
async fn roll_back(
    rt: &Arc<ServiceRuntime>,
    canary: &Arc<ReleaseSet>,
    reason: String,
) -> DeployError {
    roll_back_after(rt, canary, reason, None).await
}

/// [`roll_back`]; with `judged_at`, the log says how long after the failed judgement the
/// route read back 100% stable (`scripts/bench-canary` collects it).
async fn roll_back_after(
    rt: &Arc<ServiceRuntime>,
    canary: &Arc<ReleaseSet>,
    reason: String,
    judged_at: Option<Instant>,
) -> DeployError {
    let confirmed = {
        let mut sets = rt.sets.lock().await;
        sets.next = None;
        sets.canary = None;
        let generation = rt.reroute(&sets);
        rt.proxy.route().generation() >= generation
    };
    let timing = match judged_at {
        Some(at) if confirmed => format!(
            " (100% stable {:.3}ms after the judgement)",
            at.elapsed().as_secs_f64() * 1000.0
        ),
        _ => String::new(),
    };
    log(&format!(
        "{}/{} {}: canary rolled back: {reason}{timing}",
        rt.env, rt.service, canary.spec.release
    ));
    let (rt, canary) = (rt.clone(), canary.clone());
    tokio::spawn(async move {
        canary.set_restart(false);
        let drain = Duration::from_millis(canary.spec.drain_timeout_ms);
        rt.proxy.drain(&canary.spec.release, drain).await;
        canary.stop().await;
    });
    DeployError::RolledBack(reason)
}

/// What the step waits for, for `status`.
fn state_of(pause_end: Option<Instant>, now: Instant) -> &'static str {
    match pause_end {
        None => "waiting_for_promote",
        Some(end) if now < end => "paused",
        Some(_) => "judging",
    }
}
