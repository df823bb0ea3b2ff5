//! What the dashboard shows, gathered from the store and the agent (never started here).

use chrono::{DateTime, Utc};
use cutover_config::{Project, ResolvedEnvironment};
use cutover_engine::ops::status;
use cutover_runtime::api::types::AgentStatus;
use cutover_store::ReleaseStore;

/// One service's line.
#[derive(Debug, Clone, Default)]
pub struct ServiceRow {
    /// The service.
    pub name: String,
    /// The release serving (else the ACTIVE one in the store).
    pub release: Option<String>,
    /// Its phase, or the phase of a newer release in progress.
    pub phase: Option<String>,
    /// healthy | unhealthy | unknown | stopped.
    pub health: String,
    /// Ready instances.
    pub ready: u32,
    /// Desired instances.
    pub desired: u32,
    /// The traffic split, e.g. `100%`, `90/10`, `can 25%` (a canary's weight).
    pub traffic: String,
    /// Public URL.
    pub url: String,
    /// Requests per second (None: not known).
    pub rps: Option<f64>,
    /// Error rate 0..=1.
    pub error_rate: Option<f64>,
    /// p99 latency in ms.
    pub p99_ms: Option<f64>,
    /// When its release last became ACTIVE.
    pub deployed_at: Option<DateTime<Utc>>,
}

/// One frame's data.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The project name.
    pub project: String,
    /// The environment.
    pub env: String,
    /// Whether an agent answered.
    pub agent_running: bool,
    /// Agent uptime.
    pub agent_uptime: Option<u64>,
    /// Every service of the environment, in configuration order.
    pub rows: Vec<ServiceRow>,
    /// When it was gathered.
    pub taken_at: DateTime<Utc>,
    /// A problem gathering it (the store could not be read...), shown in the summary.
    pub problem: Option<String>,
}

impl Snapshot {
    /// The summary line.
    pub fn summary(&self) -> String {
        let count = |h: &str| self.rows.iter().filter(|r| r.health == h).count();
        let rps: f64 = self.rows.iter().filter_map(|r| r.rps).sum();
        let any_rate = self.rows.iter().any(|r| r.rps.is_some());
        let mut s = format!(
            "{} services: {} healthy, {} unhealthy, {} stopped",
            self.rows.len(),
            count("healthy"),
            count("unhealthy"),
            count("stopped")
        );
        if count("unknown") > 0 {
            s.push_str(&format!(", {} unknown", count("unknown")));
        }
        if any_rate {
            s.push_str(&format!(" · {rps:.1} req/s"));
        }
        match (self.agent_running, self.agent_uptime) {
            (true, Some(up)) => s.push_str(&format!(" · agent up {}", age_secs(up))),
            (true, None) => s.push_str(" · agent running"),
            (false, _) => s.push_str(" · no agent: nothing runs"),
        }
        if let Some(p) = &self.problem {
            s.push_str(&format!(" · {p}"));
        }
        s
    }
}

/// Gathers a snapshot: the agent's status (None when no agent runs) joined with the store by
/// [`status::join`], as `cutover status` does. A store that cannot be read leaves the rows
/// with the agent's view alone and says so in `problem`.
pub fn gather(
    project: &Project,
    env: &ResolvedEnvironment,
    store: Option<&dyn ReleaseStore>,
    agent: Option<&AgentStatus>,
) -> Snapshot {
    let (joined, problem) = match status::join(env, store, agent) {
        Ok(rows) => (rows, None),
        Err(e) => (
            status::join(env, None, agent).unwrap_or_default(),
            Some(format!("store: {e}")),
        ),
    };
    Snapshot {
        project: project.name.clone(),
        env: env.name.clone(),
        agent_running: agent.is_some(),
        agent_uptime: agent.map(|a| a.uptime_seconds),
        rows: joined.into_iter().map(row).collect(),
        taken_at: Utc::now(),
        problem,
    }
}

/// A service's line from its joined status.
fn row(s: status::ServiceRow) -> ServiceRow {
    let numbers = s.numbers.as_ref();
    ServiceRow {
        traffic: traffic(&s),
        rps: numbers.map(|n| n.requests_per_second),
        error_rate: numbers.map(|n| n.error_rate),
        p99_ms: numbers.and_then(|n| n.p99_ms),
        phase: s.in_progress.or(s.phase),
        ready: s.instances.ready,
        desired: s.instances.desired,
        deployed_at: s.activated_at,
        name: s.name,
        release: s.release,
        health: s.health,
        url: s.url,
    }
}

/// The traffic split in a few characters (`-` when nothing serves).
fn traffic(s: &status::ServiceRow) -> String {
    if let Some(c) = &s.canary {
        return format!("can {}%", c.weight);
    }
    match s.traffic.as_slice() {
        [] => "-".to_string(),
        [one] => format!("{}%", one.weight),
        many => many
            .iter()
            .map(|t| t.weight.to_string())
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// A service's recent events (newest last), one line each, from its latest runs.
pub fn recent_events(
    store: Option<&dyn ReleaseStore>,
    service: &str,
    env: &str,
    limit: usize,
) -> Vec<String> {
    let Some(store) = store else {
        return vec!["no release store yet: nothing was deployed".into()];
    };
    let Ok(releases) = store.releases(service, env, 3) else {
        return vec!["the release store could not be read".into()];
    };
    let mut lines = Vec::new();
    for rel in releases.iter().rev() {
        let Ok(events) = store.events(&rel.run_id) else {
            continue;
        };
        for e in events
            .iter()
            .filter(|e| e.service.as_deref() == Some(service) && e.kind != "output")
        {
            let mut line = format!("{} {}", e.at.format("%m-%d %H:%M:%S"), e.kind);
            for key in ["stage", "phase", "result", "release", "command", "reason"] {
                if let Some(v) = e.data.get(key).and_then(|v| v.as_str()) {
                    line.push(' ');
                    line.push_str(v);
                }
            }
            lines.push(line);
        }
    }
    if lines.is_empty() {
        lines.push("no events recorded for this service in this environment".into());
    }
    let skip = lines.len().saturating_sub(limit);
    lines.split_off(skip)
}

/// The last `limit` lines of a release's instance log.
pub fn log_tail(
    state_dir: &cutover_store::StateDir,
    service: &str,
    release: &str,
    limit: usize,
) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = state_dir.instance_log(service, release);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return vec![format!("no log at {}", path.display())];
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.replace('\t', "    ")
                .chars()
                .filter(|c| !c.is_control())
                .collect()
        })
        .collect();
    let skip = lines.len().saturating_sub(limit);
    lines[skip..].to_vec()
}

/// An age like `42s`, `5m`, `3h`, `2d`.
pub fn age_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The age of `at` at `now`.
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    at.map_or("-".to_string(), |t| {
        age_secs(u64::try_from((now - t).num_seconds()).unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_pick_the_largest_unit() {
        assert_eq!(age_secs(5), "5s");
        assert_eq!(age_secs(125), "2m");
        assert_eq!(age_secs(7200), "2h");
        assert_eq!(age_secs(200_000), "2d");
    }
}
