//! Autoscaling: a live release with `autoscale = { min, max, target_inflight }` gets between
//! `min` and `max` instances, by the requests in flight through the proxy per instance.
//!
//! Every second the service's watcher samples the live release's in-flight requests; the
//! average over the last [`WINDOW`] samples decides ([`decide`]). Growing is quick (after
//! [`UP_COOLDOWN`] since the last change): new instances join the route only once ready.
//! Shrinking waits until the load has been low for [`DOWN_AFTER`] (and [`DOWN_COOLDOWN`]
//! since the last change), only to a count that would run at most 80% of the target each
//! (hysteresis, so a steady load does not flap), and the instances leaving are drained first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::set::{ReleaseSet, SpawnContext, stop_members};
use super::{ServiceRuntime, Sets, log};
use crate::api::types::{AutoscaleSpec, Scaled};

/// Watcher ticks between two samples (the watcher ticks every 200 ms: one second).
pub(crate) const EVERY: u64 = 5;
/// Samples averaged.
const WINDOW: usize = 5;
/// The least time between a change and growing again.
const UP_COOLDOWN: Duration = Duration::from_secs(3);
/// The least time between a change and shrinking.
const DOWN_COOLDOWN: Duration = Duration::from_secs(15);
/// How long the load must have been low before shrinking.
const DOWN_AFTER: Duration = Duration::from_secs(10);

/// The instance count for `avg` requests in flight, `current` instances and `spec`.
pub(crate) fn decide(avg: f64, current: u32, spec: AutoscaleSpec) -> u32 {
    let target = f64::from(spec.target_inflight.max(1));
    let max = spec.max.max(spec.min);
    let count = |per: f64| -> u32 {
        let n = (avg / per).ceil();
        if n.is_finite() && n > 0.0 {
            // `n` is a small positive whole number here.
            format!("{n:.0}").parse().unwrap_or(u32::MAX)
        } else {
            0
        }
    };
    let want = count(target).clamp(spec.min, max);
    if want >= current {
        return want;
    }
    // Shrink only as far as keeps each instance at 80% of the target or less.
    count(target * 0.8)
        .clamp(spec.min, max)
        .clamp(want, current)
}

/// One service's autoscaler state, kept by its watcher.
#[derive(Default)]
pub(crate) struct Autoscaler {
    samples: VecDeque<usize>,
    release: Option<String>,
    last_change: Option<Instant>,
    low_since: Option<Instant>,
    busy: Arc<AtomicBool>,
}

impl Autoscaler {
    /// Samples the live release of `sets` and starts a scale when the numbers say so.
    pub(crate) fn step(&mut self, rt: &Arc<ServiceRuntime>, sets: &Sets, ctx: &SpawnContext) {
        let Some(live) = sets.live.clone() else {
            self.samples.clear();
            return;
        };
        let Some(spec) = live.spec.autoscale else {
            return;
        };
        if self.release.as_deref() != Some(live.spec.release.as_str()) {
            // A new release starts with a fresh window (its deploy set its count).
            self.release = Some(live.spec.release.clone());
            self.samples.clear();
            self.low_since = None;
            self.last_change = Some(Instant::now());
        }
        self.samples
            .push_back(rt.proxy.in_flight(&live.spec.release));
        while self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        // A deploy or a scale in progress decides the count for now.
        if sets.next.is_some() || self.busy.load(Ordering::SeqCst) || self.samples.len() < 2 {
            return;
        }
        let avg = self.samples.iter().sum::<usize>() as f64 / self.samples.len() as f64;
        let current = live.len();
        let want = decide(avg, current, spec);
        let since_change = self.last_change.map_or(Duration::MAX, |t| t.elapsed());
        if want > current && since_change >= UP_COOLDOWN {
            self.low_since = None;
            self.start(rt, live, current, want, avg, ctx);
        } else if want < current {
            let low = *self.low_since.get_or_insert_with(Instant::now);
            if low.elapsed() >= DOWN_AFTER && since_change >= DOWN_COOLDOWN {
                self.low_since = None;
                self.start(rt, live, current, want, avg, ctx);
            }
        } else {
            self.low_since = None;
        }
    }

    fn start(
        &mut self,
        rt: &Arc<ServiceRuntime>,
        live: Arc<ReleaseSet>,
        from: u32,
        to: u32,
        avg: f64,
        ctx: &SpawnContext,
    ) {
        self.last_change = Some(Instant::now());
        self.busy.store(true, Ordering::SeqCst);
        let busy = Arc::clone(&self.busy);
        let (rt, ctx) = (Arc::clone(rt), ctx.clone());
        let target = live.spec.autoscale.map_or(0, |a| a.target_inflight);
        log(&format!(
            "{}/{} {}: scaling from {from} to {to} instances ({avg:.1} requests in flight over \
             {from}, target {target} each)",
            rt.env, rt.service, live.spec.release
        ));
        tokio::spawn(async move {
            let reached = if to > from {
                grow(&rt, &live, to - from, &ctx).await
            } else {
                shrink(&rt, &live, from - to).await
            };
            {
                let mut sets = rt.sets.lock().await;
                sets.desired = live.len();
                sets.scaled = Some(Scaled {
                    release: live.spec.release.clone(),
                    from,
                    to: live.len(),
                    in_flight: (avg * 10.0).round() / 10.0,
                    target_inflight: target,
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                });
            }
            log(&format!(
                "{}/{} {}: scaled from {from} to {reached} instances",
                rt.env, rt.service, live.spec.release
            ));
            busy.store(false, Ordering::SeqCst);
        });
    }
}

/// Starts `n` more instances of `live`; they join the route once ready (the watcher routes
/// every ready instance). Returns the count then.
async fn grow(rt: &ServiceRuntime, live: &Arc<ReleaseSet>, n: u32, ctx: &SpawnContext) -> u32 {
    match live.start(n, ctx) {
        Ok(started) => match live.wait_ready(&started).await {
            Ok(ready) => {
                for m in &ready {
                    m.instance.set_restart(true);
                }
            }
            Err(why) => {
                let failed: Vec<_> = live.members().into_iter().filter(|m| !m.ready()).collect();
                live.remove(&failed);
                stop_members(&failed).await;
                log(&format!(
                    "{}/{} {}: new instances did not get ready: {}",
                    rt.env,
                    rt.service,
                    live.spec.release,
                    why.lines().next().unwrap_or("")
                ));
            }
        },
        Err(why) => log(&format!(
            "{}/{} {}: cannot start more instances: {why}",
            rt.env, rt.service, live.spec.release
        )),
    }
    live.len()
}

/// Takes `n` instances of `live` out of the route, lets their requests finish, stops them.
async fn shrink(rt: &ServiceRuntime, live: &Arc<ReleaseSet>, n: u32) -> u32 {
    let leaving = live.take(n.min(live.len().saturating_sub(1)));
    rt.reroute(&*rt.sets.lock().await);
    let drain = Duration::from_millis(live.spec.drain_timeout_ms);
    for m in &leaving {
        m.instance.set_restart(false);
        rt.proxy.drain_backend(m.addr(), drain).await;
    }
    stop_members(&leaving).await;
    live.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: AutoscaleSpec = AutoscaleSpec {
        min: 1,
        max: 4,
        target_inflight: 10,
    };

    #[test]
    fn grows_to_keep_each_instance_at_the_target() {
        assert_eq!(decide(0.0, 1, SPEC), 1);
        assert_eq!(decide(10.0, 1, SPEC), 1);
        assert_eq!(decide(11.0, 1, SPEC), 2);
        assert_eq!(decide(35.0, 2, SPEC), 4);
        assert_eq!(decide(500.0, 2, SPEC), 4, "never past max");
    }

    #[test]
    fn shrinks_with_hysteresis_and_never_below_min() {
        // 17 in flight over 3: 2 would run at 8.5 each (85% of 10): stay at 3.
        assert_eq!(decide(17.0, 3, SPEC), 3);
        // 15 over 3: 2 would run at 7.5 (75%): shrink to 2.
        assert_eq!(decide(15.0, 3, SPEC), 2);
        assert_eq!(decide(0.0, 4, SPEC), 1);
        let floor = AutoscaleSpec { min: 2, ..SPEC };
        assert_eq!(decide(0.0, 4, floor), 2);
    }
}
