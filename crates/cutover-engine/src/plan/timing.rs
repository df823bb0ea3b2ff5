//! The least time a service's deploy strategy takes once its instances start, for `plan`.
//!
//! What counts (the rest is the service's own start time, which the plan cannot know):
//! - readiness: probing starts at once and `initial_delay` is a grace (failures before it ends
//!   don't count), not a wait, so an instance can be ready after `success_threshold - 1` probe
//!   periods; with the default threshold 1 that is 0.
//! - blue-green and immediate: one readiness.
//! - rolling: one readiness per batch (`ceil(instances / batch)` batches, one after another).
//! - canary: one readiness for the canary set, then per step the longer of its timed `pause`
//!   and one `interval`: every step needs a passing judgement, the first one comes one
//!   `interval` after the step began, and judgements go on during the pause (the agent's
//!   `agent/canary.rs`). A manual pause counts as no pause (one `interval`) and is reported
//!   apart: it lasts until someone runs `cutover promote`.
//!
//! Not counted: `scale_down_delay` and `drain_timeout` (old instances leave after the deploy
//! is done), builds and checks, and canary steps that wait for `min_requests` of traffic. The
//! first release of a canary service skips its steps (it goes live like blue-green).

use std::time::Duration;

use cutover_config::{Pause, ResolvedService, StrategyKind};

/// The least time a deploy of a service takes, and the manual canary pauses (ended by
/// `cutover promote`) it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MinDuration {
    /// The timed part.
    pub time: Duration,
    /// Canary steps with `pause = "manual"` (each waits for `cutover promote`).
    pub manual_pauses: u32,
}

/// The least time `svc`'s strategy takes (see the module docs for what counts).
pub fn min_duration(svc: &ResolvedService) -> MinDuration {
    let readiness = svc
        .health
        .period
        .saturating_mul(svc.health.success_threshold.saturating_sub(1));
    match svc.strategy {
        StrategyKind::BlueGreen | StrategyKind::Immediate => MinDuration {
            time: readiness,
            manual_pauses: 0,
        },
        StrategyKind::Rolling => {
            let batches = svc.instances.max(1).div_ceil(svc.batch.max(1));
            MinDuration {
                time: readiness.saturating_mul(batches),
                manual_pauses: 0,
            }
        }
        StrategyKind::Canary => {
            let mut out = MinDuration {
                time: readiness,
                manual_pauses: 0,
            };
            if let Some(canary) = &svc.canary {
                for step in &canary.steps {
                    let pause = match step.pause {
                        Pause::None => Duration::ZERO,
                        Pause::Timed(d) => d,
                        Pause::Manual => {
                            out.manual_pauses += 1;
                            Duration::ZERO
                        }
                    };
                    out.time = out.time.saturating_add(pause.max(canary.interval));
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use cutover_config::{Canary, CanaryStep};

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn service(strategy: StrategyKind) -> ResolvedService {
        let dir = tempfile::tempdir().unwrap();
        let project = cutover_config::parse(
            "[project]\nname = \"t\"\n[services.api]\npath = \".\"\nrun = \"true\"\nport = 9000\n",
            &dir.path().join("cutover.toml"),
            dir.path(),
        )
        .unwrap();
        let env = project.resolve("development").unwrap();
        let mut svc = env.service("api").unwrap().clone();
        svc.strategy = strategy;
        svc
    }

    #[test]
    fn blue_green_counts_only_extra_probe_successes() {
        let mut svc = service(StrategyKind::BlueGreen);
        svc.health.initial_delay = secs(30);
        assert_eq!(min_duration(&svc).time, Duration::ZERO);
        svc.health.success_threshold = 3;
        svc.health.period = secs(10);
        assert_eq!(min_duration(&svc).time, secs(20));
    }

    #[test]
    fn rolling_waits_for_readiness_once_per_batch() {
        let mut svc = service(StrategyKind::Rolling);
        svc.health.success_threshold = 2;
        svc.health.period = secs(1);
        svc.instances = 5;
        svc.batch = 2;
        assert_eq!(min_duration(&svc).time, secs(3));
    }

    #[test]
    fn canary_sums_each_steps_pause_or_first_judgement() {
        let mut svc = service(StrategyKind::Canary);
        svc.canary = Some(Canary {
            steps: vec![
                CanaryStep {
                    weight: 5,
                    pause: Pause::Timed(secs(1800)),
                },
                CanaryStep {
                    weight: 25,
                    pause: Pause::Manual,
                },
                CanaryStep {
                    weight: 50,
                    pause: Pause::Timed(secs(900)),
                },
                CanaryStep {
                    weight: 75,
                    pause: Pause::Timed(secs(3)),
                },
                CanaryStep {
                    weight: 100,
                    pause: Pause::None,
                },
            ],
            interval: secs(10),
            max_error_rate: 0.05,
            max_p99_latency: secs(1),
            min_requests: 20,
            verdict_timeout: secs(600),
            sticky: false,
            prometheus: None,
        });
        assert_eq!(
            min_duration(&svc),
            MinDuration {
                // 30m, manual (one judgement), 15m, 3s < interval, none (one judgement).
                time: secs(1800 + 10 + 900 + 10 + 10),
                manual_pauses: 1
            }
        );
    }
}
