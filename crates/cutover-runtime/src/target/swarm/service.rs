//! One swarm service the agent drives: made, scaled, rolled and removed through the manager's
//! API, with a reconciler that keeps its seats bound to its running tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, Limit, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::seat::SeatLink;
use crate::api::types::SwarmSpec;
use crate::target::docker::{
    Engine, LABEL_AGENT, LABEL_ENV, LABEL_PROJECT, LABEL_RELEASE, LABEL_SERVICE,
};

/// How often the reconciler looks at the service's tasks.
const EVERY: Duration = Duration::from_millis(300);
/// Seat changes this recent are left to settle before replicas follow them (the agent adds a
/// set's instances one after another).
const SETTLE: Duration = Duration::from_millis(30);
/// How often (in passes) a settled service's own spec is read again (about every 3 s).
const RECHECK: u32 = 10;
/// Docker's longest service name.
const NAME_MAX: usize = 63;

/// What a release's swarm service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmRun {
    /// The project (`cutover.project`).
    pub project: String,
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// The release id.
    pub release: String,
    /// Image reference with its tag (in the registry every node pulls from).
    pub image: String,
    /// `run`, through `sh -c`; empty: the image's own command.
    pub command: String,
    /// The tasks' environment (`PORT` included; secrets too: never in labels).
    pub env_vars: Vec<(String, String)>,
    /// Where the service listens inside its tasks.
    pub container_port: u16,
    /// The agent's socket (`cutover.agent`).
    pub agent: String,
    /// Limits and placement.
    pub spec: SwarmSpec,
    /// Deployed with the rolling strategy (updates the live service in place).
    pub rolling: bool,
    /// Tasks replaced at a time by a rolling update.
    pub batch: u32,
    /// Swarm's wait between two batches of a rolling update.
    pub delay: Duration,
    /// How long swarm watches an updated task for a failure.
    pub monitor: Duration,
    /// Between SIGTERM and SIGKILL when swarm stops a task.
    pub stop_grace: Duration,
}

impl SwarmRun {
    fn labels(&self) -> HashMap<String, String> {
        [
            (LABEL_PROJECT, self.project.clone()),
            (LABEL_ENV, self.env.clone()),
            (LABEL_SERVICE, self.service.clone()),
            (LABEL_RELEASE, self.release.clone()),
            (LABEL_AGENT, self.agent.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The swarm service spec of this release with `replicas` tasks, named `name`.
    fn service_spec(&self, name: &str, replicas: u32) -> ServiceSpec {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        // `run` replaces the image's command (CMD), as on the Docker target; swarm's
        // `Command` would replace its entrypoint.
        let args = (!self.command.trim().is_empty())
            .then(|| vec!["sh".to_string(), "-c".to_string(), self.command.clone()]);
        let limits =
            (self.spec.nano_cpus.is_some() || self.spec.memory.is_some()).then_some(Limit {
                nano_cpus: self.spec.nano_cpus,
                memory_bytes: self.spec.memory,
                pids: None,
            });
        ServiceSpec {
            name: Some(name.to_string()),
            labels: Some(self.labels()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    labels: Some(self.labels()),
                    args,
                    env: Some(
                        self.env_vars
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect(),
                    ),
                    init: Some(true),
                    stop_grace_period: Some(nanos(self.stop_grace)),
                    ..Default::default()
                }),
                resources: limits.map(|l| TaskSpecResources {
                    limits: Some(l),
                    ..Default::default()
                }),
                placement: (!self.spec.constraints.is_empty()).then(|| TaskSpecPlacement {
                    constraints: Some(self.spec.constraints.clone()),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(nanos(Duration::from_secs(1))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(replicas)),
                }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(i64::from(self.batch.max(1))),
                delay: Some(nanos(self.delay)),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(nanos(self.monitor)),
                max_failure_ratio: Some(0.0),
                order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                parallelism: Some(0),
                order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
                monitor: Some(nanos(Duration::from_secs(1))),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                // No virtual IP (this kernel has no IPVS, and the agent's proxy balances).
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(self.container_port)),
                    published_port: None,
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    name: None,
                }]),
            }),
            ..Default::default()
        }
    }

    /// `<project>-<env>-<service>`, and the same with the release after it, as swarm names
    /// go (letters, digits, `-`; at most 63 characters).
    fn names(&self) -> (String, String) {
        let base = clean(&format!("{}-{}-{}", self.project, self.env, self.service));
        let release = clean(&self.release);
        let room = NAME_MAX.saturating_sub(base.len() + 1).max(8);
        // The end of a release id is what tells releases apart.
        let tail: String = release
            .chars()
            .skip(release.chars().count().saturating_sub(room))
            .collect();
        let mut suffixed = format!("{}-{}", base, tail.trim_matches('-'));
        suffixed.truncate(NAME_MAX);
        let mut base = base;
        base.truncate(NAME_MAX);
        (
            base.trim_end_matches('-').to_string(),
            suffixed.trim_end_matches('-').to_string(),
        )
    }
}

/// `text` with every character swarm refuses in a name turned into `-`.
fn clean(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

/// How the latest rolling update of a service went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollOutcome {
    /// No update asked.
    Idle,
    /// Swarm is replacing tasks.
    Updating,
    /// Every task runs the new release.
    Completed,
    /// Swarm rolled the service back: its reason.
    RolledBack(String),
}

/// One task as `status` and the seats see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// Its slot in the service.
    pub slot: i64,
    /// Its node's host name.
    pub node: String,
    /// Where it serves (node address, published port) once it runs.
    pub addr: Option<SocketAddr>,
    /// Its state (`running`, `starting`, `failed`...).
    pub state: TaskState,
    /// Whether swarm wants it running.
    pub wanted: bool,
    /// Its release (label).
    pub release: String,
    /// Why it failed, when it did.
    pub err: Option<String>,
    /// Its container's exit code, when it exited.
    pub exit_code: Option<i64>,
    /// When its status last changed.
    pub at: chrono::DateTime<Utc>,
}

/// One seat in the service: an instance of `release`, bound to a task or waiting for one.
struct SeatSlot {
    id: u64,
    release: String,
    task: Option<String>,
    since: chrono::DateTime<Utc>,
    link: Arc<SeatLink>,
}

struct State {
    /// The swarm service's name, once made (or adopted).
    name: Option<String>,
    /// Names to try when making it: `<project>-<env>-<service>`, then with the release.
    candidates: Vec<String>,
    /// What the service runs (after a roll: the new release).
    current: SwarmRun,
    /// What it ran before the roll in progress.
    previous: Option<SwarmRun>,
    /// A rolling update to send.
    roll_pending: bool,
    /// A rolling update (or its rollback) in progress.
    rolling: bool,
    seats: Vec<SeatSlot>,
    next_seat: u64,
    /// When the seats last changed.
    changed: tokio::time::Instant,
    /// Removed: no seat is left.
    gone: bool,
    tasks: Vec<TaskView>,
    /// Node id → (address, host name).
    nodes: BTreeMap<String, (IpAddr, String)>,
    /// The last error talking to the manager (logged once per change).
    last_error: Option<String>,
    /// Replicas the service was last seen to have as asked (no roll since): the reconciler
    /// then looks at the service itself only every [`RECHECK`]th pass, its tasks every pass.
    in_step: Option<u32>,
    /// Passes since the service itself was last looked at.
    quiet: u32,
}

/// A swarm service and its seats.
pub struct SwarmService {
    engine: Arc<Engine>,
    state: Mutex<State>,
    /// One reconcile pass at a time.
    pass: tokio::sync::Mutex<()>,
    wake: Notify,
    cancel: CancellationToken,
    outcome: watch::Sender<RollOutcome>,
}

impl std::fmt::Debug for SwarmService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmService")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl SwarmService {
    /// A service for `run` (made on the first reconcile, named after the names in `taken`), or
    /// the running one named `adopt`; its reconciler runs from now until no seat is left.
    pub(crate) fn spawn(
        engine: Arc<Engine>,
        run: SwarmRun,
        adopt: Option<&str>,
        taken: &[String],
    ) -> Arc<SwarmService> {
        let (base, suffixed) = run.names();
        let candidates = if taken.contains(&base) {
            vec![suffixed]
        } else {
            vec![base, suffixed]
        };
        let svc = Arc::new(SwarmService {
            engine,
            state: Mutex::new(State {
                name: adopt.map(str::to_string),
                candidates,
                current: run,
                previous: None,
                roll_pending: false,
                rolling: false,
                seats: Vec::new(),
                next_seat: 0,
                changed: tokio::time::Instant::now(),
                gone: false,
                tasks: Vec::new(),
                nodes: BTreeMap::new(),
                last_error: None,
                in_step: None,
                quiet: 0,
            }),
            pass: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            outcome: watch::channel(RollOutcome::Idle).0,
        });
        let looping = Arc::clone(&svc);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = looping.cancel.cancelled() => return,
                    () = tokio::time::sleep(EVERY) => {}
                    () = looping.wake.notified() => {
                        tokio::time::sleep(SETTLE).await;
                    }
                }
                looping.reconcile().await;
            }
        });
        svc
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manager's engine.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The swarm service's name, once it has one.
    pub fn name(&self) -> Option<String> {
        self.lock().name.clone()
    }

    /// Removed (no seat left).
    pub(crate) fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// Whether seats of the release it runs are in it (it serves, or is about to).
    pub(crate) fn has_current_seats(&self) -> bool {
        let s = self.lock();
        !s.gone && s.seats.iter().any(|x| x.release == s.current.release)
    }

    /// The tasks as last seen.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.lock().tasks.clone()
    }

    /// Follows the latest rolling update.
    pub fn outcome(&self) -> watch::Receiver<RollOutcome> {
        self.outcome.subscribe()
    }

    /// Makes the service run `run` with swarm's rolling update (sent on the next reconcile).
    pub(crate) fn roll_to(&self, run: SwarmRun) {
        let mut s = self.lock();
        let old = std::mem::replace(&mut s.current, run);
        s.previous = Some(old);
        s.roll_pending = true;
        s.changed = tokio::time::Instant::now();
        drop(s);
        self.outcome.send_replace(RollOutcome::Updating);
        self.wake.notify_one();
    }

    /// Asks swarm to roll the service back to its previous spec (cutover's probes found the
    /// new tasks never ready): `why` is the outcome's reason.
    pub async fn roll_back(&self, why: &str) -> Result<(), String> {
        let name = self.name().ok_or("the service was never made")?;
        let client = self.engine.client().await?;
        let svc = client
            .inspect_service(&name, None)
            .await
            .map_err(|e| self.api_error(&e))?;
        // Already rolling back (swarm saw the failure itself): asking again would flip it
        // forward to the failed spec.
        if matches!(
            svc.update_status.as_ref().and_then(|u| u.state),
            Some(
                ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
            )
        ) {
            return Ok(());
        }
        let version = svc.version.and_then(|v| v.index).unwrap_or(0);
        let spec = svc.spec.unwrap_or_default();
        let options = UpdateServiceOptionsBuilder::default()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .rollback("previous")
            .build();
        client
            .update_service(&name, spec, options, None)
            .await
            .map_err(|e| self.api_error(&e))?;
        {
            let mut s = self.lock();
            s.rolling = true;
            s.in_step = None;
        }
        crate::agent::log(&format!(
            "swarm service {name}: rolled back by cutover: {why}"
        ));
        Ok(())
    }

    /// Adds a seat for `release`; the replicas follow on the next reconcile.
    pub(crate) fn join(&self, release: &str, link: Arc<SeatLink>) -> u64 {
        let mut s = self.lock();
        let id = s.next_seat;
        s.next_seat += 1;
        s.seats.push(SeatSlot {
            id,
            release: release.to_string(),
            task: None,
            since: Utc::now(),
            link,
        });
        s.changed = tokio::time::Instant::now();
        drop(s);
        self.wake.notify_one();
        id
    }

    /// Takes seat `id` out and applies it now (the service shrinks, or is removed with its
    /// last seat).
    pub(crate) async fn leave(self: &Arc<Self>, id: u64) {
        {
            let mut s = self.lock();
            s.seats.retain(|x| x.id != id);
            s.changed = tokio::time::Instant::now() - SETTLE;
        }
        self.reconcile().await;
    }

    fn api_error(&self, e: &bollard::errors::Error) -> String {
        let why = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        format!(
            "the swarm manager at {} answered: {why}",
            self.engine.host()
        )
    }

    /// Tells every seat of `release` that it cannot run, and why.
    fn fail_seats(&self, release: Option<&str>, why: &str) {
        let s = self.lock();
        for seat in s
            .seats
            .iter()
            .filter(|x| release.is_none_or(|r| x.release == r))
        {
            seat.link.failed(why);
        }
    }

    fn note_error(&self, why: String) {
        let mut s = self.lock();
        if s.last_error.as_deref() != Some(why.as_str()) {
            crate::agent::log(&why);
            s.last_error = Some(why);
        }
    }

    /// One look: the service made, scaled, updated or removed as the seats and the roll say;
    /// then its tasks listed and bound to the seats.
    pub(crate) async fn reconcile(self: &Arc<Self>) {
        let _one = self.pass.lock().await;
        let client = match self.engine.client().await {
            Ok(c) => c.clone(),
            Err(why) => return self.note_error(why),
        };
        if let Err(why) = self.apply(&client).await {
            return self.note_error(why);
        }
        if self.is_gone() {
            return;
        }
        match self.look(&client).await {
            Ok(()) => self.lock().last_error = None,
            Err(why) => self.note_error(why),
        }
    }

    /// Makes the service's spec what the seats and the roll say.
    async fn apply(&self, client: &Docker) -> Result<(), String> {
        let (name, current, replicas, any_seat, roll, settled, rolling) = {
            let s = self.lock();
            let replicas = s
                .seats
                .iter()
                .filter(|x| x.release == s.current.release)
                .count();
            (
                s.name.clone(),
                s.current.clone(),
                u32::try_from(replicas).unwrap_or(u32::MAX),
                !s.seats.is_empty(),
                s.roll_pending,
                s.changed.elapsed() >= SETTLE,
                s.rolling,
            )
        };
        if !settled {
            return Ok(());
        }
        let Some(name) = name else {
            if replicas == 0 {
                if !any_seat {
                    self.finish();
                }
                return Ok(());
            }
            return self.create(client, &current, replicas).await;
        };
        if !any_seat {
            match client.delete_service(&name).await {
                Ok(()) => crate::agent::log(&format!("swarm service {name}: removed")),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.api_error(&e)),
            }
            self.finish();
            return Ok(());
        }
        {
            let mut s = self.lock();
            if !roll && !rolling && s.in_step == Some(replicas) {
                s.quiet += 1;
                if !s.quiet.is_multiple_of(RECHECK) {
                    return Ok(());
                }
            }
        }
        let svc = match client.inspect_service(&name, None).await {
            Ok(svc) => svc,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                // Removed behind the agent's back: made again.
                self.lock().name = None;
                return self.create(client, &current, replicas.max(1)).await;
            }
            Err(e) => return Err(self.api_error(&e)),
        };
        let version =
            i32::try_from(svc.version.and_then(|v| v.index).unwrap_or(0)).unwrap_or(i32::MAX);
        let options = UpdateServiceOptionsBuilder::default()
            .version(version)
            .build();
        if roll {
            let spec = current.service_spec(&name, replicas.max(1));
            client
                .update_service(&name, spec, options, None)
                .await
                .map_err(|e| self.api_error(&e))?;
            let mut s = self.lock();
            s.roll_pending = false;
            s.rolling = true;
            s.in_step = None;
            crate::agent::log(&format!(
                "swarm service {name}: rolling update to {} (batch {}, start-first, rollback on failure)",
                current.release, current.batch
            ));
            return Ok(());
        }
        let status = svc.update_status.clone().unwrap_or_default();
        if rolling {
            let message = status.message.clone().unwrap_or_default();
            match status.state {
                Some(ServiceUpdateStatusStateEnum::COMPLETED) => {
                    // `previous` stays until the next roll: cutover may still roll back to it.
                    self.lock().rolling = false;
                    self.outcome.send_replace(RollOutcome::Completed);
                }
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                    let mut s = self.lock();
                    s.rolling = false;
                    if let Some(previous) = s.previous.take() {
                        s.current = previous;
                    }
                    drop(s);
                    self.outcome.send_replace(RollOutcome::RolledBack(message));
                }
                Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                    // A failed update paused instead of rolling back: cutover rolls it back.
                    drop(self.roll_back(&message).await);
                }
                _ => {}
            }
            return Ok(());
        }
        let spec = svc.spec.unwrap_or_default();
        let have = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(0);
        if have == i64::from(replicas) {
            self.lock().in_step = Some(replicas);
        } else {
            let mut spec = spec;
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(replicas)),
                }),
                ..Default::default()
            });
            client
                .update_service(&name, spec, options, None)
                .await
                .map_err(|e| self.api_error(&e))?;
            crate::agent::log(&format!(
                "swarm service {name}: {have} -> {replicas} task(s)"
            ));
            self.lock().in_step = Some(replicas);
        }
        Ok(())
    }

    /// Makes the swarm service (the first free name of the candidates).
    async fn create(&self, client: &Docker, run: &SwarmRun, replicas: u32) -> Result<(), String> {
        let candidates = self.lock().candidates.clone();
        let mut last = String::new();
        for name in &candidates {
            match client
                .create_service(run.service_spec(name, replicas), None)
                .await
            {
                Ok(_) => {
                    self.lock().name = Some(name.clone());
                    crate::agent::log(&format!(
                        "swarm service {name}: created for {} with {replicas} task(s)",
                        run.release
                    ));
                    return Ok(());
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message,
                }) => {
                    last = message;
                }
                Err(e) => {
                    let why = self.api_error(&e);
                    self.fail_seats(Some(&run.release), &why);
                    return Err(why);
                }
            }
        }
        let why = format!(
            "cannot create a swarm service for {}: {last}; remove the service with `docker service rm` or let cutover's agent adopt it",
            run.release
        );
        self.fail_seats(Some(&run.release), &why);
        Err(why)
    }

    fn finish(&self) {
        let mut s = self.lock();
        s.gone = true;
        for seat in &s.seats {
            seat.link.unbind();
        }
        s.seats.clear();
        drop(s);
        self.cancel.cancel();
    }

    /// Lists the tasks (and, when a node is new, the nodes) and binds the seats.
    async fn look(&self, client: &Docker) -> Result<(), String> {
        let Some(name) = self.name() else {
            return Ok(());
        };
        let mut filters = HashMap::new();
        filters.insert("service".to_string(), vec![name.clone()]);
        let tasks = client
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await
            .map_err(|e| self.api_error(&e))?;
        let unknown_node = {
            let s = self.lock();
            tasks
                .iter()
                .filter_map(|t| t.node_id.as_ref())
                .any(|n| !s.nodes.contains_key(n))
        };
        if unknown_node {
            let nodes = client
                .list_nodes(None::<ListNodesOptions>)
                .await
                .map_err(|e| self.api_error(&e))?;
            let mut s = self.lock();
            for n in nodes {
                let (Some(id), Some(status)) = (n.id, n.status) else {
                    continue;
                };
                let Some(addr) = status.addr.and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                let host = n
                    .description
                    .and_then(|d| d.hostname)
                    .unwrap_or_else(|| id.chars().take(12).collect());
                s.nodes.insert(id, (addr, host));
            }
        }
        let mut s = self.lock();
        let port = s.current.container_port;
        let views: Vec<TaskView> = tasks
            .into_iter()
            .filter_map(|t| view(t, &s.nodes, port))
            .collect();
        bind(&mut s, &views);
        s.tasks = views;
        Ok(())
    }
}

/// A task as the seats see it.
fn view(
    t: bollard::models::Task,
    nodes: &BTreeMap<String, (IpAddr, String)>,
    container_port: u16,
) -> Option<TaskView> {
    let id = t.id?;
    let status = t.status.unwrap_or_default();
    let release = t
        .spec
        .and_then(|s| s.container_spec)
        .and_then(|c| c.labels)
        .and_then(|l| l.get(LABEL_RELEASE).cloned())
        .unwrap_or_default();
    let node = t.node_id.and_then(|n| nodes.get(&n).cloned());
    let published = status
        .port_status
        .as_ref()
        .and_then(|p| p.ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.target_port == Some(i64::from(container_port)))
                .and_then(|p| p.published_port)
        })
        .and_then(|p| u16::try_from(p).ok());
    let addr = match (&node, published) {
        (Some((ip, _)), Some(port)) => Some(SocketAddr::new(*ip, port)),
        _ => None,
    };
    let at = status
        .timestamp
        .as_ref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    Some(TaskView {
        id,
        slot: t.slot.unwrap_or(0),
        node: node.map(|(_, h)| h).unwrap_or_default(),
        addr,
        state: status.state.unwrap_or(TaskState::NEW),
        wanted: matches!(
            t.desired_state,
            Some(TaskState::RUNNING) | Some(TaskState::READY)
        ),
        release,
        err: status.err.filter(|e| !e.is_empty()),
        exit_code: status.container_status.and_then(|c| c.exit_code),
        at,
    })
}

/// Binds each seat to a task of its release that swarm wants running (keeping the task it has
/// while it is wanted), and tells each seat where it stands.
fn bind(s: &mut State, tasks: &[TaskView]) {
    let wanted = |id: &str, release: &str| {
        tasks
            .iter()
            .any(|t| t.id == id && t.wanted && t.release == release)
    };
    for seat in &mut s.seats {
        if let Some(id) = &seat.task
            && !wanted(id, &seat.release)
        {
            seat.task = None;
        }
    }
    let mut taken: Vec<String> = s.seats.iter().filter_map(|x| x.task.clone()).collect();
    for seat in &mut s.seats {
        if seat.task.is_some() {
            continue;
        }
        // A running task first, then one on its way.
        let pick = tasks
            .iter()
            .filter(|t| t.wanted && t.release == seat.release && !taken.contains(&t.id))
            .min_by_key(|t| (t.state != TaskState::RUNNING, t.slot));
        if let Some(t) = pick {
            seat.task = Some(t.id.clone());
            taken.push(t.id.clone());
        }
    }
    for seat in &s.seats {
        match seat
            .task
            .as_ref()
            .and_then(|id| tasks.iter().find(|t| &t.id == id))
        {
            Some(t) => seat.link.bound(t),
            None => {
                // The latest failure of its release since the seat was made, if any.
                let failed = tasks
                    .iter()
                    .filter(|t| {
                        t.release == seat.release
                            && matches!(t.state, TaskState::FAILED | TaskState::REJECTED)
                            && t.at >= seat.since
                    })
                    .max_by_key(|t| t.at);
                match failed {
                    Some(t) => seat.link.task_failed(t),
                    None => seat.link.unbind(),
                }
            }
        }
    }
}

/// The swarm services an agent on `socket` made: `(env, service, release, name, replicas)`.
pub(super) async fn leftovers(
    engine: &Engine,
    socket: &std::path::Path,
) -> Result<Vec<(String, String, String, String, u32)>, String> {
    let client = engine.client().await?;
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_AGENT}={}", socket.display())],
    );
    let list = client
        .list_services(Some(
            ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| format!("the swarm manager at {} answered: {e}", engine.host()))?;
    Ok(list
        .into_iter()
        .filter_map(|svc| {
            let spec = svc.spec?;
            let labels = spec.labels.clone().unwrap_or_default();
            let replicas = spec
                .mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0);
            Some((
                labels.get(LABEL_ENV)?.clone(),
                labels.get(LABEL_SERVICE)?.clone(),
                labels.get(LABEL_RELEASE)?.clone(),
                spec.name?,
                replicas,
            ))
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(release: &str) -> SwarmRun {
        SwarmRun {
            project: "Fleet".into(),
            env: "prod".into(),
            service: "api_v2".into(),
            release: release.into(),
            image: "r:5000/fleet-api:x".into(),
            command: String::new(),
            env_vars: Vec::new(),
            container_port: 8080,
            agent: "/tmp/a.sock".into(),
            spec: SwarmSpec::default(),
            rolling: false,
            batch: 1,
            delay: Duration::from_secs(1),
            monitor: Duration::from_secs(5),
            stop_grace: Duration::from_secs(10),
        }
    }

    #[test]
    fn names_are_what_swarm_accepts_and_tell_releases_apart() {
        let (base, suffixed) = run("deploy-20261204-101500-api").names();
        assert_eq!(base, "fleet-prod-api-v2");
        assert_eq!(suffixed, "fleet-prod-api-v2-deploy-20261204-101500-api");
        let long = run(&format!("{}-20261204-101501", "x".repeat(80)));
        let (_, a) = long.names();
        assert!(a.len() <= NAME_MAX, "{a}");
        assert!(a.ends_with("20261204-101501"), "{a}");
    }
}
