//! DORA metrics of one environment over a window, computed from the release history.
//!
//! [`History::load`] reads what the metrics need from a store (runs, releases, and the phase
//! changes recorded as events); [`compute`] is a pure function of that history, the commit
//! times of the releases' shas, and the window, so it can be tested with made-up histories.
//!
//! Definitions (also in `docs/metrics.md`):
//! - a **deployment** is a release created by a deploy run that became ACTIVE in that run; its
//!   time is when it became ACTIVE (the `phase.changed` event, else `activated_at`);
//! - **deployment frequency**: deployments in the window / the window's length in days;
//! - **lead time for changes**: per deployment, the commit time of its sha to its deployment
//!   time; median and p90 (nearest rank). Releases whose sha git does not know (or that have
//!   none) are skipped and counted;
//! - **change failure rate**: of the deploy runs started in the window that reached the deploy
//!   stage (a release of theirs was handed to the target) and ended (not canceled), the share
//!   that ended `failed` or `rolled_back`, or one of whose releases was later ROLLED_BACK;
//! - **time to restore**: for each release that failed after reaching deploy (FAILED: from the
//!   time it failed) or was rolled back (ROLLED_BACK: from when it went live), the time until
//!   the next release of that service became ACTIVE; median. Failures not restored yet are
//!   counted, not timed.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Release, ReleasePhase, ReleaseStore, Run, RunKind, RunStatus};

/// A release's phase change as the run recorded it (a `phase.changed` event).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseMark {
    /// The run that recorded it.
    pub run_id: String,
    /// The service.
    pub service: String,
    /// The release.
    pub release: String,
    /// The phase it moved to.
    pub phase: ReleasePhase,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the metrics are computed from: one environment's runs, releases and phase changes.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The environment's runs (any order).
    pub runs: Vec<Run>,
    /// The environment's releases (any order).
    pub releases: Vec<Release>,
    /// Phase changes recorded by deploy runs.
    pub marks: Vec<PhaseMark>,
}

impl History {
    /// Reads the history of `env` for `services`: every run and release, and the phase changes
    /// of the deploy runs started at or after `since`.
    pub fn load(
        store: &dyn ReleaseStore,
        env: &str,
        services: &[String],
        since: DateTime<Utc>,
    ) -> crate::Result<History> {
        const ALL: usize = 1_000_000;
        let runs = store.runs(Some(env), ALL)?;
        let mut releases = Vec::new();
        for s in services {
            releases.extend(store.releases(s, env, ALL)?);
        }
        let mut marks = Vec::new();
        for run in runs
            .iter()
            .filter(|r| r.kind == RunKind::Deploy && r.started_at >= since)
        {
            for e in store.events(&run.id)? {
                if e.kind != "phase.changed" {
                    continue;
                }
                let phase = e.data.get("phase").and_then(|p| p.as_str());
                let release = e.data.get("release").and_then(|p| p.as_str());
                let (Some(phase), Some(release), Some(service)) = (phase, release, e.service)
                else {
                    continue;
                };
                let Ok(phase) = phase.parse::<ReleasePhase>() else {
                    continue;
                };
                marks.push(PhaseMark {
                    run_id: run.id.clone(),
                    service,
                    release: release.to_string(),
                    phase,
                    at: e.at,
                });
            }
        }
        Ok(History {
            runs,
            releases,
            marks,
        })
    }
}

/// Median and p90 of a list of durations, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadTime {
    /// Median (the mean of the two middle values for an even count); None without data.
    pub median: Option<f64>,
    /// 90th percentile, nearest rank; None without data.
    pub p90: Option<f64>,
}

/// Median time to restore, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToRestore {
    /// Median; None when no failure was restored in the window.
    pub median: Option<f64>,
}

/// The four DORA metrics of one environment over a window, and their counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    /// Deployments per day over the window.
    pub deployment_frequency_per_day: f64,
    /// Commit to ACTIVE.
    pub lead_time_seconds: LeadTime,
    /// Failed or rolled-back deploy runs / deploy runs that reached deploy; None without any.
    pub change_failure_rate: Option<f64>,
    /// Failure to the next ACTIVE release of the service.
    pub time_to_restore_seconds: TimeToRestore,
    /// Deployments in the window.
    pub deployments: usize,
    /// Deployments whose lead time was measured.
    pub lead_time_samples: usize,
    /// Deployments skipped for lead time: no sha, or a sha git does not know.
    pub lead_time_skipped: usize,
    /// Deploy runs in the window that reached deploy and ended.
    pub deploy_runs: usize,
    /// Of those, the failed or rolled-back ones.
    pub failed_deploy_runs: usize,
    /// Failures in the window that a later ACTIVE release restored.
    pub restored_failures: usize,
    /// Failures in the window not restored yet.
    pub unrestored_failures: usize,
}

/// The metrics of `history` over `[since, until]`; `commit_times` maps a sha to its commit
/// time (shas missing from it are skipped for lead time).
pub fn compute(
    history: &History,
    commit_times: &HashMap<String, DateTime<Utc>>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Dora {
    let runs: HashMap<&str, &Run> = history.runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let in_window = |t: DateTime<Utc>| t >= since && t <= until;
    let is_deploy_run = |r: &Release| {
        runs.get(r.run_id.as_str())
            .is_some_and(|run| run.kind == RunKind::Deploy)
    };
    // Phase changes by service, then release.
    let mut marks: HashMap<&str, HashMap<&str, Vec<&PhaseMark>>> = HashMap::new();
    for m in &history.marks {
        marks
            .entry(m.service.as_str())
            .or_default()
            .entry(m.release.as_str())
            .or_default()
            .push(m);
    }
    let marks_of = |r: &Release| -> Vec<&PhaseMark> {
        marks
            .get(r.service.as_str())
            .and_then(|m| m.get(r.id.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    // When a release became ACTIVE in the deploy run that made it.
    let deployed_at = |r: &Release| -> Option<DateTime<Utc>> {
        if !is_deploy_run(r) {
            return None;
        }
        let marked = marks_of(r)
            .iter()
            .filter(|m| m.phase == ReleasePhase::Active && m.run_id == r.run_id)
            .map(|m| m.at)
            .min();
        marked.or_else(|| {
            let at = r.activated_at?;
            // A later rollback to it moves activated_at; its run's end bounds the first time.
            let end = runs.get(r.run_id.as_str()).and_then(|run| run.finished_at);
            Some(end.map_or(at, |end| at.min(end)))
        })
    };
    let reached_deploy = |r: &Release| {
        r.activated_at.is_some()
            || matches!(
                r.phase,
                ReleasePhase::Deploying
                    | ReleasePhase::Verifying
                    | ReleasePhase::Active
                    | ReleasePhase::Superseded
                    | ReleasePhase::RolledBack
            )
            || marks_of(r).iter().any(|m| {
                matches!(
                    m.phase,
                    ReleasePhase::Deploying | ReleasePhase::Verifying | ReleasePhase::Active
                )
            })
    };

    // Deployments, frequency and lead time.
    let deployments: Vec<(&Release, DateTime<Utc>)> = history
        .releases
        .iter()
        .filter_map(|r| deployed_at(r).map(|t| (r, t)))
        .filter(|(_, t)| in_window(*t))
        .collect();
    let days = (until - since).num_milliseconds() as f64 / 86_400_000.0;
    let frequency = if days > 0.0 {
        deployments.len() as f64 / days
    } else {
        0.0
    };
    let mut leads = Vec::new();
    let mut skipped = 0;
    for (r, at) in &deployments {
        match r.sha.as_ref().and_then(|sha| commit_times.get(sha)) {
            Some(commit) => leads.push(seconds(*at - *commit).max(0.0)),
            None => skipped += 1,
        }
    }

    // Change failure rate, by deploy run.
    let mut deploy_runs = 0;
    let mut failed_runs = 0;
    for run in history.runs.iter().filter(|r| {
        r.kind == RunKind::Deploy
            && in_window(r.started_at)
            && !matches!(r.status, RunStatus::InProgress | RunStatus::Canceled)
    }) {
        let releases: Vec<&Release> = history
            .releases
            .iter()
            .filter(|r| r.run_id == run.id)
            .collect();
        if !releases.iter().any(|r| reached_deploy(r)) {
            continue;
        }
        deploy_runs += 1;
        if matches!(run.status, RunStatus::Failed | RunStatus::RolledBack)
            || releases.iter().any(|r| r.phase == ReleasePhase::RolledBack)
        {
            failed_runs += 1;
        }
    }

    // Time to restore: each failure to the service's next activation.
    let mut activations: BTreeMap<&str, Vec<(DateTime<Utc>, &str)>> = BTreeMap::new();
    for r in &history.releases {
        let list = activations.entry(r.service.as_str()).or_default();
        list.extend(deployed_at(r).map(|t| (t, r.id.as_str())));
        list.extend(r.activated_at.map(|t| (t, r.id.as_str())));
    }
    for m in history
        .marks
        .iter()
        .filter(|m| m.phase == ReleasePhase::Active)
    {
        activations
            .entry(m.service.as_str())
            .or_default()
            .push((m.at, m.release.as_str()));
    }
    let mut restores = Vec::new();
    let mut unrestored = 0;
    for r in history
        .releases
        .iter()
        .filter(|r| is_deploy_run(r) && reached_deploy(r))
    {
        let start = match r.phase {
            ReleasePhase::Failed => r.updated_at,
            ReleasePhase::RolledBack => deployed_at(r).unwrap_or(r.updated_at),
            _ => continue,
        };
        if !in_window(start) {
            continue;
        }
        let next = activations.get(r.service.as_str()).and_then(|list| {
            list.iter()
                .filter(|(t, id)| *t > start && *id != r.id)
                .map(|(t, _)| *t)
                .min()
        });
        match next {
            Some(end) => restores.push(seconds(end - start)),
            None => unrestored += 1,
        }
    }

    let lead_time_samples = leads.len();
    Dora {
        deployment_frequency_per_day: frequency,
        lead_time_seconds: LeadTime {
            median: median(&mut leads),
            p90: percentile(&mut leads, 0.9),
        },
        change_failure_rate: (deploy_runs > 0).then(|| failed_runs as f64 / deploy_runs as f64),
        time_to_restore_seconds: TimeToRestore {
            median: median(&mut restores),
        },
        deployments: deployments.len(),
        lead_time_samples,
        lead_time_skipped: skipped,
        deploy_runs,
        failed_deploy_runs: failed_runs,
        restored_failures: restores.len(),
        unrestored_failures: unrestored,
    }
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn sort(values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
}

/// The median: the middle value, or the mean of the two middle ones.
fn median(values: &mut [f64]) -> Option<f64> {
    sort(values);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile `p` (0 < p <= 1): the smallest value at least `p` of the values
/// are at or below.
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    sort(values);
    let n = values.len();
    if n == 0 {
        return None;
    }
    let rank = (p * n as f64).ceil() as usize;
    values.get(rank.clamp(1, n) - 1).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// 2026-11-01 00:00:00 UTC plus `h` hours.
    fn t(h: f64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
            + chrono::TimeDelta::milliseconds((h * 3_600_000.0) as i64)
    }

    fn run(id: &str, kind: RunKind, status: RunStatus, start: f64, end: f64) -> Run {
        Run {
            id: id.into(),
            kind,
            env: "production".into(),
            status,
            started_at: t(start),
            finished_at: Some(t(end)),
            pid: None,
            reason: None,
        }
    }

    struct Rel<'a> {
        service: &'a str,
        id: &'a str,
        run: &'a str,
        sha: Option<&'a str>,
        phase: ReleasePhase,
        created: f64,
        updated: f64,
        activated: Option<f64>,
    }

    fn release(r: Rel<'_>) -> Release {
        Release {
            id: r.id.into(),
            service: r.service.into(),
            env: "production".into(),
            run_id: r.run.into(),
            sha: r.sha.map(str::to_string),
            dirty: false,
            branch: None,
            config_hash: "h".into(),
            artifact: None,
            phase: r.phase,
            reason: None,
            created_at: t(r.created),
            updated_at: t(r.updated),
            activated_at: r.activated.map(t),
            commit_at: None,
        }
    }

    fn mark(run: &str, service: &str, release: &str, phase: ReleasePhase, at: f64) -> PhaseMark {
        PhaseMark {
            run_id: run.into(),
            service: service.into(),
            release: release.into(),
            phase,
            at: t(at),
        }
    }

    /// Ten days of one service `api`:
    /// - d1: deployed at 24h (commit a at 20h) — later superseded;
    /// - d2: deployed at 48h (commit b at 46h) — superseded;
    /// - d3: failed at verify at 72h (reached deploy), restored by d4 at 75h;
    /// - d4: deployed at 75h (commit c at 74h);
    /// - d5: failed in checks at 80h (never reached deploy: not in CFR, not a restore);
    /// - d6: deployed at 100h (sha unknown to git) and rolled back by `cutover rollback` at
    ///   101h to d4 (d4's activated_at moves to 101h).
    /// - b1: a build run (not a deployment).
    fn history() -> History {
        use ReleasePhase::*;
        let runs = vec![
            run("d1", RunKind::Deploy, RunStatus::Succeeded, 23.9, 24.0),
            run("d2", RunKind::Deploy, RunStatus::Succeeded, 47.9, 48.0),
            run("d3", RunKind::Deploy, RunStatus::Failed, 71.9, 72.0),
            run("d4", RunKind::Deploy, RunStatus::Succeeded, 74.9, 75.0),
            run("d5", RunKind::Deploy, RunStatus::Failed, 79.9, 80.0),
            run("d6", RunKind::Deploy, RunStatus::Succeeded, 99.9, 100.0),
            run("r1", RunKind::Rollback, RunStatus::Succeeded, 101.0, 101.0),
            run("b1", RunKind::Build, RunStatus::Succeeded, 10.0, 10.1),
        ];
        let rel = |service, id, run, sha, phase, created, updated, activated| {
            release(Rel {
                service,
                id,
                run,
                sha,
                phase,
                created,
                updated,
                activated,
            })
        };
        let releases = vec![
            rel(
                "api",
                "r-1",
                "d1",
                Some("a"),
                Superseded,
                23.9,
                48.0,
                Some(24.0),
            ),
            rel(
                "api",
                "r-2",
                "d2",
                Some("b"),
                Superseded,
                47.9,
                75.0,
                Some(48.0),
            ),
            rel("api", "r-3", "d3", Some("c0"), Failed, 71.9, 72.0, None),
            rel(
                "api",
                "r-4",
                "d4",
                Some("c"),
                Active,
                74.9,
                101.0,
                Some(101.0),
            ),
            rel("api", "r-5", "d5", Some("c"), Failed, 79.9, 80.0, None),
            rel(
                "api",
                "r-6",
                "d6",
                Some("zzz"),
                RolledBack,
                99.9,
                101.0,
                Some(100.0),
            ),
            rel("api", "r-b", "b1", Some("a"), Built, 10.0, 10.1, None),
        ];
        let marks = vec![
            mark("d1", "api", "r-1", Deploying, 23.95),
            mark("d1", "api", "r-1", Active, 24.0),
            mark("d2", "api", "r-2", Deploying, 47.95),
            mark("d2", "api", "r-2", Active, 48.0),
            mark("d3", "api", "r-3", Deploying, 71.95),
            mark("d3", "api", "r-3", Failed, 72.0),
            mark("d4", "api", "r-4", Deploying, 74.95),
            mark("d4", "api", "r-4", Active, 75.0),
            mark("d5", "api", "r-5", Validating, 79.95),
            mark("d5", "api", "r-5", Failed, 80.0),
            mark("d6", "api", "r-6", Deploying, 99.95),
            mark("d6", "api", "r-6", Active, 100.0),
        ];
        History {
            runs,
            releases,
            marks,
        }
    }

    fn commits() -> HashMap<String, DateTime<Utc>> {
        [("a", 20.0), ("b", 46.0), ("c", 74.0), ("c0", 71.0)]
            .into_iter()
            .map(|(s, h)| (s.to_string(), t(h)))
            .collect()
    }

    #[test]
    fn a_made_up_history_gives_exact_numbers() {
        let d = compute(&history(), &commits(), t(0.0), t(240.0));
        // r-1, r-2, r-4, r-6 became ACTIVE in their deploy runs; 4 over 10 days.
        assert_eq!(d.deployments, 4);
        assert_eq!(d.deployment_frequency_per_day, 0.4);
        // Lead times 4h, 2h, 1h (r-4 at its first activation, 75h, not the rollback's 101h);
        // r-6's sha is unknown.
        assert_eq!(d.lead_time_samples, 3);
        assert_eq!(d.lead_time_skipped, 1);
        assert_eq!(d.lead_time_seconds.median, Some(7200.0));
        assert_eq!(d.lead_time_seconds.p90, Some(14400.0));
        // d1..d4 and d6 reached deploy (d5 failed in checks); d3 failed and d6's release was
        // rolled back: 2 of 5.
        assert_eq!(d.deploy_runs, 5);
        assert_eq!(d.failed_deploy_runs, 2);
        assert_eq!(d.change_failure_rate, Some(0.4));
        // r-3 failed at 72h, r-4 active at 75h: 3h. r-6 went live at 100h, the rollback made
        // r-4 ACTIVE at 101h: 1h. Median of 3h and 1h: 2h.
        assert_eq!(d.restored_failures, 2);
        assert_eq!(d.unrestored_failures, 0);
        assert_eq!(d.time_to_restore_seconds.median, Some(7200.0));
    }

    #[test]
    fn the_window_selects_what_happened_in_it() {
        // From 60h to 90h: r-4 only; d3, d4 (d5 never reached deploy).
        let d = compute(&history(), &commits(), t(60.0), t(90.0));
        assert_eq!(d.deployments, 1);
        assert_eq!(d.deployment_frequency_per_day, 0.8);
        assert_eq!(d.lead_time_seconds.median, Some(3600.0));
        assert_eq!(d.lead_time_seconds.p90, Some(3600.0));
        assert_eq!(d.change_failure_rate, Some(0.5));
        assert_eq!(d.time_to_restore_seconds.median, Some(3.0 * 3600.0));
    }

    #[test]
    fn a_failure_not_restored_yet_is_counted_not_timed() {
        let mut h = history();
        // Without r-4 (and r-6, which would restore it at 100h), r-3 stays failed.
        h.releases.retain(|r| r.id != "r-4" && r.id != "r-6");
        h.marks.retain(|m| m.release != "r-4" && m.release != "r-6");
        let d = compute(&h, &commits(), t(60.0), t(90.0));
        assert_eq!(d.unrestored_failures, 1);
        assert_eq!(d.time_to_restore_seconds.median, None);
    }

    #[test]
    fn no_history_has_no_numbers() {
        let d = compute(&History::default(), &HashMap::new(), t(0.0), t(720.0));
        assert_eq!(d.deployments, 0);
        assert_eq!(d.deployment_frequency_per_day, 0.0);
        assert_eq!(d.lead_time_seconds.median, None);
        assert_eq!(d.lead_time_seconds.p90, None);
        assert_eq!(d.change_failure_rate, None);
        assert_eq!(d.time_to_restore_seconds.median, None);
    }

    #[test]
    fn without_events_activation_times_come_from_the_releases() {
        let mut h = history();
        h.marks.clear();
        let d = compute(&h, &commits(), t(0.0), t(240.0));
        // r-4's activated_at moved to 101h by the rollback: bounded by its run's end, 75h.
        assert_eq!(d.deployments, 4);
        assert_eq!(d.lead_time_seconds.median, Some(7200.0));
        // Without events, r-3 (FAILED) cannot be shown to have reached deploy.
        assert_eq!(d.deploy_runs, 4);
        assert_eq!(d.failed_deploy_runs, 1);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.9), Some(9.0));
        assert_eq!(median(&mut v), Some(5.5));
        let mut one = vec![42.0];
        assert_eq!(percentile(&mut one, 0.9), Some(42.0));
        assert_eq!(median(&mut one), Some(42.0));
    }
}
