//! `status`: every service of an environment as it is now (the agent's view, the store's
//! phases), the runs in progress and the environment's lock.

use chrono::{DateTime, Utc};
use cutover_config::ResolvedEnvironment;
use cutover_runtime::api::types::{AgentStatus, CanaryStatus, LiveNumbers, Traffic};
use cutover_store::{ApprovalState, Lock, ReleasePhase, ReleaseStore};
use serde::Serialize;

use super::{AgentLauncher, Context};
use crate::EngineError;

/// How long `status` waits for an agent it started to bring the recorded services back.
const RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// An environment's status.
#[derive(Debug, Clone)]
pub struct EnvStatus {
    /// The environment.
    pub env: String,
    /// Whether the agent runs.
    pub agent: AgentState,
    /// Every service of the environment, in declaration order.
    pub services: Vec<ServiceRow>,
    /// The runs in progress in the environment.
    pub runs: Vec<RunRow>,
    /// The environment's lock, when it is locked.
    pub lock: Option<Lock>,
}

/// Whether the project's agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// It runs (it may have been started by `status` to bring services back).
    Running,
    /// `cutover agent stop` stopped it: nothing runs until `agent start` or a deploy.
    StoppedByUser,
    /// None runs.
    NotRunning,
}

/// Ready and desired instances.
#[derive(Debug, Clone, Serialize)]
pub struct Instances {
    /// Instances passing their readiness probe.
    pub ready: u32,
    /// Instances there should be.
    pub desired: u32,
}

/// One service as it is now (the `services` of `status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRow {
    /// The service.
    pub name: String,
    /// The release it serves (the agent's), else the store's ACTIVE one.
    pub release: Option<String>,
    /// That release's phase in the store.
    pub phase: Option<String>,
    /// `healthy`, `unhealthy`, `unknown` or `stopped`.
    pub health: String,
    /// Ready and desired instances.
    pub instances: Instances,
    /// The traffic split between releases.
    pub traffic: Vec<Traffic>,
    /// Where it answers.
    pub url: String,
    /// The canary in progress: its weight, step and live numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Requests per second, error rate and p99 over the last seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbers: Option<LiveNumbers>,
    /// Why it does not run what it should (the agent could not bring it back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The autoscaler's last change (from, to, the numbers, when).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled: Option<cutover_runtime::api::types::Scaled>,
    /// Instances that run on other machines (swarm tasks): where each one is, live set first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskRow>,
    /// The phase of a newer release still on its way (a deploy in progress), when there is one.
    #[serde(skip)]
    pub in_progress: Option<String>,
    /// When the store's ACTIVE release became ACTIVE (when it was made, if never recorded).
    #[serde(skip)]
    pub activated_at: Option<DateTime<Utc>>,
}

/// An instance on another machine (`tasks` of `status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    /// Its release.
    pub release: String,
    /// `live`, `warm`, `starting`...
    pub role: String,
    /// The node it runs on.
    pub node: String,
    /// What it is ("task 3f2a9c1b0d4e on node-b (10.77.0.3:30001)").
    pub unit: String,
    /// Where the proxy reaches it.
    pub addr: Option<String>,
    /// `running`, `starting`...
    pub state: String,
    /// Its probe says ready.
    pub ready: bool,
}

/// A run in progress (the `runs` of `status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// The run.
    pub id: String,
    /// `running` or `awaiting_approval`.
    pub phase: String,
    /// What waits for approval (phase `awaiting_approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// The status of `env`. Services that should be running (the agent recorded them) bring an
/// agent that died back, unless `cutover agent stop` stopped it; then `status` waits until the
/// agent has restored them, so it reports them as they are (`notes` hears that it started
/// one). Runs whose process died are settled first.
pub fn status(
    cx: &Context,
    env: &ResolvedEnvironment,
    notes: &mut dyn FnMut(&str),
) -> Result<EnvStatus, EngineError> {
    let store = cx.store(false)?;
    let state = cx.state_dir();
    let stopped_by_user = state.agent_stopped().exists();
    let expected = std::fs::read(state.agent_desired())
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
        .map_or(0, |specs| specs.len());
    let was_running = cx.agent(false)?.is_some();
    let start = expected > 0 && !stopped_by_user;
    let agent: Option<AgentStatus> = match cx.agent(start)? {
        Some(client) => {
            let runtime = super::runtime()?;
            if !was_running {
                notes(&format!(
                    "the agent was not running: started it; restoring {expected} service(s)"
                ));
                let deadline = std::time::Instant::now() + RESTORE_WAIT;
                while std::time::Instant::now() < deadline {
                    let restored = runtime.block_on(client.status()).map_or(0, |s| {
                        s.services
                            .iter()
                            .filter(|x| x.release.is_some() || x.problem.is_some())
                            .count()
                    });
                    if restored >= expected {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            runtime.block_on(client.status()).ok()
        }
        None => None,
    };
    if let Some(store) = &store {
        super::settle_interrupted_runs(cx, store.as_ref())?;
    }
    let services = join(env, store.as_deref(), agent.as_ref())?;
    let runs: Vec<RunRow> = match &store {
        Some(s) => s
            .runs_in_progress()?
            .into_iter()
            .filter(|r| r.env == env.name)
            .map(|r| {
                let waiting = s
                    .approval(&r.id)
                    .ok()
                    .flatten()
                    .filter(|a| a.state == ApprovalState::Waiting);
                RunRow {
                    phase: match waiting {
                        Some(_) => "awaiting_approval".to_string(),
                        None => "running".to_string(),
                    },
                    waiting: waiting.map(|a| a.waiting),
                    id: r.id,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let lock = match &store {
        Some(s) => s.current_lock(&env.name)?,
        None => None,
    };
    Ok(EnvStatus {
        env: env.name.clone(),
        agent: match (&agent, stopped_by_user) {
            (Some(_), _) => AgentState::Running,
            (None, true) => AgentState::StoppedByUser,
            (None, false) => AgentState::NotRunning,
        },
        services,
        runs,
        lock,
    })
}

/// Every service of `env`, in declaration order, as `agent` reports it (None: no agent runs)
/// joined with what `store` records (None: nothing was deployed yet): the one view of a
/// service that `status` and `monitor` both show.
pub fn join(
    env: &ResolvedEnvironment,
    store: Option<&dyn ReleaseStore>,
    agent: Option<&AgentStatus>,
) -> Result<Vec<ServiceRow>, EngineError> {
    let mut services = Vec::new();
    for svc in &env.services {
        let live = agent.and_then(|a| {
            a.services
                .iter()
                .find(|s| s.env == env.name && s.service == svc.name)
        });
        let active = match store {
            Some(s) => s.active_release(&svc.name, &env.name)?,
            None => None,
        };
        let release = live
            .and_then(|l| l.release.clone())
            .or_else(|| active.as_ref().map(|a| a.id.clone()));
        let phase = match (store, &release) {
            (Some(s), Some(r)) => s
                .release(&svc.name, r)?
                .map(|r| r.phase.as_str().to_string()),
            _ => None,
        };
        // The newest release, when a deploy still brings it up; only a hint, so a store that
        // cannot list releases leaves it out.
        let in_progress = store
            .and_then(|s| s.releases(&svc.name, &env.name, 1).ok())
            .and_then(|mut v| v.pop())
            .filter(|n| {
                !n.phase.is_terminal()
                    && n.phase != ReleasePhase::Active
                    && Some(&n.id) != release.as_ref()
            })
            .map(|n| n.phase.as_str().to_string());
        let host = if svc.listen.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            svc.listen.to_string()
        };
        services.push(ServiceRow {
            name: svc.name.clone(),
            release,
            phase,
            health: live.map_or("stopped".to_string(), |l| l.health.clone()),
            instances: Instances {
                ready: live.map_or(0, |l| l.ready),
                desired: live.map_or(svc.instances, |l| l.desired),
            },
            traffic: live.map(|l| l.traffic.clone()).unwrap_or_default(),
            canary: live.and_then(|l| l.canary.clone()),
            numbers: live.and_then(|l| l.numbers.clone()),
            reason: live.and_then(|l| l.problem.clone()),
            scaled: live.and_then(|l| l.scaled.clone()),
            url: live.map(|l| l.url.clone()).unwrap_or_else(|| {
                svc.port
                    .map(|p| format!("http://{host}:{p}"))
                    .unwrap_or_default()
            }),
            tasks: live.map(task_rows).unwrap_or_default(),
            in_progress,
            activated_at: active.map(|a| a.activated_at.unwrap_or(a.created_at)),
        });
    }
    Ok(services)
}

/// The instances of `live`'s sets that run on other machines.
fn task_rows(live: &cutover_runtime::api::types::ServiceStatus) -> Vec<TaskRow> {
    live.sets
        .iter()
        .flat_map(|set| {
            set.instances.iter().filter_map(|i| {
                Some(TaskRow {
                    release: set.release.clone(),
                    role: set.role.clone(),
                    node: i.node.clone()?,
                    unit: i.unit.clone().unwrap_or_default(),
                    addr: i.addr.clone(),
                    state: i.state.clone(),
                    ready: i.ready,
                })
            })
        })
        .collect()
}

/// What the project's agent runs, in every environment, without starting it (empty when it
/// does not run): `status` when the configuration does not load.
pub fn agent_services(
    agents: &dyn AgentLauncher,
) -> Result<Vec<cutover_runtime::api::types::ServiceStatus>, EngineError> {
    let status = match agents.agent(false)? {
        Some(client) => super::runtime()?.block_on(client.status()).ok(),
        None => None,
    };
    Ok(status.map(|s| s.services).unwrap_or_default())
}
