//! The agent: owns every instance and listener of one project.
//!
//! Per (environment, service) it keeps one proxy and at most two release sets: the `live` one
//! (receiving traffic) and a `warm` one (the previous live set, kept for `scale_down_delay` so a
//! rollback is a route flip). Deploys of one service are serialised by a lock; deploys of
//! different services run at once. Every deploy follows the same order: start the new set, wait
//! until the probes call every instance ready (an exit fails at once), swap the route in one
//! store and read it back, then drain the old set and stop it later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::types::{
    AgentStatus, DeployProgress, EnvVar, InstanceStatus, ReleaseSetStatus, ReleaseSpec,
    ServiceStatus, Strategy, Traffic,
};
use crate::metrics::Metrics;
use crate::probe::Probe;
use crate::proxy::{Proxy, RouteRelease, RouteTable};
use crate::supervisor::{Instance, InstanceSpec, InstanceState, RestartPolicy, free_port};

/// How long an instance gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a live set's readiness is looked at to keep its route current.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// The longest a deploy waits between two looks at its new instances (it is woken by their
/// watch channels first).
const WAIT_EVERY: Duration = Duration::from_millis(500);
/// The environment variable that marks an instance as this agent's (used after a crash to find
/// instances the previous agent left behind).
pub const AGENT_MARK: &str = "CUTOVER_AGENT";

/// Writes a timestamped line to the agent's stderr (its log).
pub fn log(message: &str) {
    eprintln!(
        "{} {message}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
}

/// One running instance with its probe.
struct Member {
    index: u32,
    port: u16,
    instance: Instance,
    probe: Probe,
}

impl Member {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The instances of one release of one service.
struct ReleaseSet {
    spec: ReleaseSpec,
    members: Vec<Member>,
    /// Stops the set's route/liveness watcher.
    watcher: CancellationToken,
}

impl ReleaseSet {
    fn ready_addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.probe.status().ready && m.instance.state().is_running())
            .map(Member::addr)
            .collect()
    }

    fn all_ready(&self) -> bool {
        self.ready_addrs().len() == self.members.len()
    }

    async fn stop(&self) {
        self.watcher.cancel();
        for m in &self.members {
            m.probe.stop();
        }
        let stops = self.members.iter().map(|m| m.instance.stop(STOP_GRACE));
        for stop in stops {
            stop.await;
        }
    }

    /// Waits until every member is ready, or says why one never will be. Woken by the probes'
    /// and instances' watch channels, so a flip is seen at once (an exit fails at once).
    async fn wait_ready(&self) -> Result<(), String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut forwarders = Vec::new();
        for m in &self.members {
            let mut probe = m.probe.watch();
            let mut instance = m.instance.watch();
            let tx = tx.clone();
            forwarders.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = probe.changed() => if r.is_err() { return },
                        r = instance.changed() => if r.is_err() { return },
                    }
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let verdict = loop {
            match self.readiness() {
                Some(v) => break v,
                None => {
                    // A missed notification cannot stall the wait: look again at least every
                    // half second.
                    let _ = tokio::time::timeout(WAIT_EVERY, rx.recv()).await;
                }
            }
        };
        for f in forwarders {
            f.abort();
        }
        verdict
    }

    /// `Some(Ok)` when every member is ready, `Some(Err(why))` when one never will be, `None`
    /// while undecided.
    fn readiness(&self) -> Option<Result<(), String>> {
        let mut ready = 0;
        for m in &self.members {
            match m.instance.state() {
                InstanceState::Exited { code, signal, .. } => {
                    let how = match (code, signal) {
                        (Some(c), _) => format!("exited with code {c}"),
                        (_, Some(s)) => format!("was killed by signal {s}"),
                        _ => "exited".to_string(),
                    };
                    return Some(Err(self.reason(m, &format!("{how} before it became ready"))));
                }
                InstanceState::Stopped => {
                    return Some(Err(self.reason(m, "was stopped before it became ready")));
                }
                _ => {}
            }
            let probe = m.probe.status();
            if probe.ready {
                ready += 1;
            } else if !probe.live {
                return Some(Err(self.reason(m, "never became healthy")));
            }
        }
        (ready == self.members.len()).then_some(Ok(()))
    }

    /// "instance 0 of api (release R, port P) exited with code 1 ...; last probes: ...; last log
    /// lines: ..."
    fn reason(&self, m: &Member, what: &str) -> String {
        let mut out = format!(
            "instance {} of {} (release {}, port {}) {what}",
            m.index, self.spec.service, self.spec.release, m.port
        );
        let history = m.probe.status().history;
        if !history.is_empty() {
            out.push_str("\nlast probes:");
            for r in history.iter().rev().take(5).rev() {
                out.push_str(&format!("\n  {} {}", r.at.format("%H:%M:%S%.3f"), r.detail));
            }
        }
        let lines = m.instance.last_lines(20);
        if !lines.is_empty() {
            out.push_str("\nlast log lines:");
            for l in lines {
                out.push_str(&format!("\n  {l}"));
            }
        }
        out
    }
}

/// What the agent runs for one (environment, service).
struct ServiceRuntime {
    env: String,
    service: String,
    proxy: Proxy,
    generation: AtomicU64,
    sets: Mutex<Sets>,
}

#[derive(Default)]
struct Sets {
    live: Option<Arc<ReleaseSet>>,
    warm: Option<Arc<ReleaseSet>>,
    desired: u32,
}

impl ServiceRuntime {
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn route_to(&self, set: &ReleaseSet, backends: Vec<SocketAddr>) -> u64 {
        let generation = self.next_generation();
        self.proxy.set_route(RouteTable::new(
            generation,
            vec![RouteRelease {
                release: set.spec.release.clone(),
                weight: 100,
                backends,
            }],
        ));
        generation
    }
}

/// The agent of one project.
pub struct Agent {
    state_dir: PathBuf,
    socket: PathBuf,
    started: Instant,
    services: Mutex<BTreeMap<(String, String), Arc<ServiceRuntime>>>,
    metrics: Arc<Metrics>,
    /// True while services are being restored after a restart: the desired state on disk is
    /// not rewritten until every one is back (a crash then must not forget the rest).
    recovering: std::sync::atomic::AtomicBool,
    /// Fires when the agent should stop (API `stop`, SIGTERM).
    pub shutdown: CancellationToken,
}

impl Agent {
    /// An agent keeping its state under `state_dir` (the project's `.cutover/`).
    pub fn new(state_dir: PathBuf, socket: PathBuf) -> Arc<Agent> {
        Arc::new(Agent {
            state_dir,
            socket,
            started: Instant::now(),
            services: Mutex::new(BTreeMap::new()),
            metrics: Metrics::new(),
            recovering: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        })
    }

    fn desired_path(&self) -> PathBuf {
        self.state_dir.join("agent").join("desired.json")
    }

    /// Deploys `spec`, reporting progress on `progress`; ends with `Active` or `Failed`.
    pub async fn deploy(
        self: Arc<Self>,
        spec: ReleaseSpec,
        progress: mpsc::UnboundedSender<DeployProgress>,
    ) {
        self.deploy_as(spec, progress, false).await;
    }

    /// A deploy, or (with `restore`) bringing a service back after a restart: a restore never
    /// replaces a service that already has a live set, so a deploy that came in while the agent
    /// was recovering is not undone by the older release it had recorded.
    async fn deploy_as(
        self: Arc<Self>,
        spec: ReleaseSpec,
        progress: mpsc::UnboundedSender<DeployProgress>,
        restore: bool,
    ) {
        let name = format!("{}/{} {}", spec.env, spec.service, spec.release);
        let last = match self.deploy_inner(spec, &progress, restore).await {
            Ok(()) => {
                log(&format!("{name}: live"));
                DeployProgress::Active
            }
            Err(reason) => {
                log(&format!(
                    "{name}: failed: {}",
                    reason.lines().next().unwrap_or("")
                ));
                DeployProgress::Failed { reason }
            }
        };
        let _ = progress.send(last);
        if let Err(e) = self.persist().await {
            log(&format!("could not record the desired state: {e}"));
        }
    }

    async fn runtime_for(&self, spec: &ReleaseSpec) -> Result<Arc<ServiceRuntime>, String> {
        let key = (spec.env.clone(), spec.service.clone());
        let addr = SocketAddr::new(spec.listen, spec.port);
        let mut services = self.services.lock().await;
        if let Some(rt) = services.get(&key) {
            if rt.proxy.addr().port() == spec.port {
                return Ok(rt.clone());
            }
            return Err(format!(
                "{} in {} moves from port {} to {}: run `cutover down` first, then deploy",
                spec.service,
                spec.env,
                rt.proxy.addr().port(),
                spec.port
            ));
        }
        if let Some(other) = services
            .values()
            .find(|rt| rt.proxy.addr().port() == spec.port)
        {
            return Err(format!(
                "port {} is already the public port of {} in {}",
                spec.port, other.service, other.env
            ));
        }
        let proxy = Proxy::bind(&spec.service, addr, self.metrics.clone())
            .await
            .map_err(|e| e.to_string())?;
        let rt = Arc::new(ServiceRuntime {
            env: spec.env.clone(),
            service: spec.service.clone(),
            proxy,
            generation: AtomicU64::new(0),
            sets: Mutex::new(Sets::default()),
        });
        services.insert(key, rt.clone());
        Ok(rt)
    }

    async fn deploy_inner(
        self: &Arc<Self>,
        spec: ReleaseSpec,
        progress: &mpsc::UnboundedSender<DeployProgress>,
        restore: bool,
    ) -> Result<(), String> {
        let rt = self.runtime_for(&spec).await?;
        let mut sets = rt.sets.lock().await;
        if restore && sets.live.is_some() {
            log(&format!(
                "{}/{}: not restoring {}: a newer deploy already serves",
                spec.env, spec.service, spec.release
            ));
            return Ok(());
        }
        sets.desired = spec.instances;

        // A rollback to the warm set is a route flip.
        if let Some(warm) = sets
            .warm
            .clone()
            .filter(|w| w.spec.release == spec.release && w.all_ready())
        {
            sets.warm = None;
            let _ = progress.send(DeployProgress::Verifying);
            self.switch(&rt, &mut sets, warm, progress);
            return Ok(());
        }
        if let Some(live) = sets.live.clone()
            && live.spec == spec
            && live.all_ready()
        {
            let _ = progress.send(DeployProgress::Verifying);
            return Ok(());
        }

        if spec.strategy == Strategy::Immediate {
            if let Some(old) = sets.live.take() {
                rt.proxy
                    .set_route(RouteTable::new(rt.next_generation(), Vec::new()));
                old.stop().await;
            }
            if let Some(warm) = sets.warm.take() {
                warm.stop().await;
            }
        }

        let _ = progress.send(DeployProgress::Starting {
            instances: spec.instances,
        });
        let set = Arc::new(self.start_set(&spec)?);
        let _ = progress.send(DeployProgress::Verifying);
        if let Err(reason) = set.wait_ready().await {
            set.stop().await;
            return Err(reason);
        }
        self.switch(&rt, &mut sets, set, progress);
        Ok(())
    }

    /// Starts the instances of `spec`, restarts off until the deploy is verified.
    fn start_set(&self, spec: &ReleaseSpec) -> Result<ReleaseSet, String> {
        let log = self
            .state_dir
            .join("logs")
            .join("services")
            .join(&spec.service)
            .join(format!("{}.log", spec.release));
        let mut members = Vec::new();
        for index in 0..spec.instances.max(1) {
            let port = free_port().map_err(|e| format!("no free port for an instance: {e}"))?;
            let mut env: Vec<(String, String)> = spec
                .env_vars
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect();
            env.push(("PORT".into(), port.to_string()));
            env.push(("CUTOVER_SERVICE".into(), spec.service.clone()));
            env.push(("CUTOVER_RELEASE".into(), spec.release.clone()));
            env.push(("CUTOVER_ENV".into(), spec.env.clone()));
            env.push((AGENT_MARK.into(), self.socket.display().to_string()));
            let instance = Instance::spawn(
                InstanceSpec {
                    service: spec.service.clone(),
                    release: spec.release.clone(),
                    index,
                    command: spec.run.clone(),
                    dir: spec.dir.clone(),
                    env,
                    port,
                    log: log.clone(),
                    redact: spec
                        .env_vars
                        .iter()
                        .filter(|v| v.secret.is_some())
                        .map(|v| v.value.clone())
                        .collect(),
                },
                RestartPolicy {
                    restart: false,
                    ..RestartPolicy::default()
                },
            );
            let probe = Probe::spawn(
                spec.health.clone(),
                SocketAddr::from(([127, 0, 0, 1], port)),
            );
            members.push(Member {
                index,
                port,
                instance,
                probe,
            });
        }
        Ok(ReleaseSet {
            spec: spec.clone(),
            members,
            watcher: CancellationToken::new(),
        })
    }

    /// Sends all traffic to `new`, confirms it, keeps the previous live set warm and schedules
    /// its drain and stop.
    fn switch(
        self: &Arc<Self>,
        rt: &Arc<ServiceRuntime>,
        sets: &mut Sets,
        new: Arc<ReleaseSet>,
        progress: &mpsc::UnboundedSender<DeployProgress>,
    ) {
        for m in &new.members {
            m.instance.set_restart(true);
        }
        let generation = rt.route_to(&new, new.ready_addrs());
        if rt.proxy.route().generation() == generation {
            let _ = progress.send(DeployProgress::Switched { generation });
        }
        tokio::spawn(watch_live(rt.clone(), new.clone()));
        if let Some(stale) = sets.warm.take() {
            tokio::spawn(async move { stale.stop().await });
        }
        if let Some(old) = sets.live.replace(new) {
            old.watcher.cancel();
            for m in &old.members {
                m.instance.set_restart(false);
            }
            sets.warm = Some(old.clone());
            let rt = rt.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let drain = Duration::from_millis(old.spec.drain_timeout_ms);
                rt.proxy.drain(&old.spec.release, drain).await;
                let delay = Duration::from_millis(old.spec.scale_down_delay_ms);
                tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
                let mut sets = rt.sets.lock().await;
                if sets.warm.as_ref().is_some_and(|w| Arc::ptr_eq(w, &old)) {
                    sets.warm = None;
                    drop(sets);
                    old.stop().await;
                    log(&format!(
                        "{}/{} {}: scaled down",
                        rt.env, rt.service, old.spec.release
                    ));
                }
            });
        }
    }

    /// Stops every instance and listener of `env`; returns the services stopped.
    pub async fn down(&self, env: &str) -> Vec<String> {
        let taken: Vec<Arc<ServiceRuntime>> = {
            let mut services = self.services.lock().await;
            let keys: Vec<_> = services.keys().filter(|(e, _)| e == env).cloned().collect();
            keys.iter().filter_map(|k| services.remove(k)).collect()
        };
        let mut names = Vec::new();
        for rt in taken {
            stop_runtime(&rt).await;
            names.push(rt.service.clone());
        }
        if let Err(e) = self.persist().await {
            log(&format!("could not record the desired state: {e}"));
        }
        names
    }

    /// Stops everything (the agent is exiting). The desired state stays on disk, so the next
    /// agent brings the services back.
    pub async fn stop_all(&self) {
        let taken: Vec<Arc<ServiceRuntime>> = {
            let mut services = self.services.lock().await;
            std::mem::take(&mut *services).into_values().collect()
        };
        for rt in taken {
            stop_runtime(&rt).await;
        }
    }

    /// What runs now.
    pub async fn status(&self) -> AgentStatus {
        let runtimes: Vec<Arc<ServiceRuntime>> =
            self.services.lock().await.values().cloned().collect();
        let mut services = Vec::new();
        for rt in runtimes {
            let sets = rt.sets.lock().await;
            let route = rt.proxy.route();
            let traffic = route
                .weights()
                .into_iter()
                .map(|(release, weight)| Traffic { release, weight })
                .collect();
            let mut set_status = Vec::new();
            for (role, set) in [("live", &sets.live), ("warm", &sets.warm)] {
                if let Some(set) = set {
                    set_status.push(ReleaseSetStatus {
                        release: set.spec.release.clone(),
                        role: role.to_string(),
                        instances: set.members.iter().map(instance_status).collect(),
                    });
                }
            }
            let ready = sets.live.as_ref().map_or(0, |s| {
                u32::try_from(s.ready_addrs().len()).unwrap_or(u32::MAX)
            });
            let health = match &sets.live {
                None => "stopped",
                Some(_) if ready == 0 => "unhealthy",
                Some(s) if s.members.iter().any(|m| m.instance.crash_looping()) => "unhealthy",
                Some(_) if ready < sets.desired => "unhealthy",
                Some(_) => "healthy",
            };
            let addr = rt.proxy.addr();
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            services.push(ServiceStatus {
                env: rt.env.clone(),
                service: rt.service.clone(),
                release: sets.live.as_ref().map(|s| s.spec.release.clone()),
                health: health.to_string(),
                ready,
                desired: sets.desired,
                traffic,
                url: format!("http://{host}:{}", addr.port()),
                sets: set_status,
                numbers: None,
                canary: None,
            });
        }
        AgentStatus {
            pid: std::process::id(),
            socket: self.socket.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            services,
            deploys: Vec::new(),
        }
    }

    /// Prometheus text of the proxies' per-release numbers.
    pub async fn metrics_text(&self) -> String {
        crate::exposition::prometheus_text(&self.metrics)
    }

    /// Writes the live release of every service to `agent/desired.json` (secret values left
    /// out: they are named, and taken from the agent's environment on recovery).
    async fn persist(&self) -> std::io::Result<()> {
        if self.recovering.load(Ordering::SeqCst) {
            return Ok(());
        }
        let runtimes: Vec<Arc<ServiceRuntime>> =
            self.services.lock().await.values().cloned().collect();
        let mut specs = Vec::new();
        for rt in runtimes {
            if let Some(live) = &rt.sets.lock().await.live {
                let mut spec = live.spec.clone();
                for v in &mut spec.env_vars {
                    if v.secret.is_some() {
                        v.value.clear();
                    }
                }
                specs.push(spec);
            }
        }
        let body = serde_json::to_vec_pretty(&specs).map_err(std::io::Error::other)?;
        write_atomic(&self.desired_path(), &body)
    }

    /// Stops whatever instances an earlier agent of this project left running (after its
    /// `kill -9`). Must run before the API serves: afterwards, this agent's own new instances
    /// carry the same mark.
    pub fn stop_leftovers(&self) {
        let killed = kill_leftovers(&self.socket);
        if killed > 0 {
            log(&format!(
                "stopped {killed} instance(s) left by a previous agent"
            ));
        }
    }

    /// After a restart (or `kill -9` of the previous agent, once [`Agent::stop_leftovers`] ran):
    /// brings every service back to the release it served.
    pub async fn recover(self: &Arc<Self>) {
        let specs: Vec<ReleaseSpec> = match std::fs::read(self.desired_path()) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    log(&format!("ignoring an unreadable desired state: {e}"));
                    return;
                }
            },
            Err(_) => return,
        };
        self.recovering.store(true, Ordering::SeqCst);
        let mut restores = tokio::task::JoinSet::new();
        for mut spec in specs {
            if let Err(missing) = fill_secrets(&mut spec.env_vars) {
                log(&format!(
                    "{}/{}: cannot restart {}: secret {missing} is not in the agent's environment",
                    spec.env, spec.service, spec.release
                ));
                continue;
            }
            if !spec.dir.is_dir() {
                log(&format!(
                    "{}/{}: cannot restart {}: its snapshot {} is gone",
                    spec.env,
                    spec.service,
                    spec.release,
                    spec.dir.display()
                ));
                continue;
            }
            log(&format!(
                "{}/{}: restoring {}",
                spec.env, spec.service, spec.release
            ));
            let (tx, _rx) = mpsc::unbounded_channel();
            // Every service at once: they are independent, and each waits for its probes.
            restores.spawn(self.clone().deploy_as(spec, tx, true));
        }
        while restores.join_next().await.is_some() {}
        self.recovering.store(false, Ordering::SeqCst);
        if let Err(e) = self.persist().await {
            log(&format!("could not record the desired state: {e}"));
        }
    }
}

async fn stop_runtime(rt: &ServiceRuntime) {
    let mut sets = rt.sets.lock().await;
    rt.proxy.set_route(RouteTable::empty());
    for set in [sets.live.take(), sets.warm.take()].into_iter().flatten() {
        set.stop().await;
    }
    rt.proxy.shutdown().await;
}

fn instance_status(m: &Member) -> InstanceStatus {
    let state = match m.instance.state() {
        InstanceState::Starting => "starting",
        InstanceState::Running { .. } => "running",
        InstanceState::Exited { .. } => "exited",
        InstanceState::Backoff { .. } => "backoff",
        InstanceState::Stopped => "stopped",
    };
    InstanceStatus {
        index: m.index,
        port: m.port,
        pid: m.instance.pid(),
        state: state.to_string(),
        ready: m.probe.status().ready,
        restarts: m.instance.restarts(),
    }
}

/// Keeps a live set's route equal to its ready instances, and restarts an instance whose
/// probe says it is no longer live.
async fn watch_live(rt: Arc<ServiceRuntime>, set: Arc<ReleaseSet>) {
    let mut routed = set.ready_addrs();
    let mut restarted: BTreeMap<u32, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            () = set.watcher.cancelled() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        for m in &set.members {
            let probe = m.probe.status();
            let recently = restarted
                .get(&m.index)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
            if !probe.live && m.instance.state().is_running() && !recently {
                log(&format!(
                    "{}/{} {}: instance {} failed its liveness probe; restarting it",
                    rt.env, rt.service, set.spec.release, m.index
                ));
                m.instance.restart();
                restarted.insert(m.index, Instant::now());
            }
        }
        let ready = set.ready_addrs();
        if ready != routed && !set.watcher.is_cancelled() {
            rt.route_to(&set, ready.clone());
            routed = ready;
        }
    }
}

/// Puts secret values (named in `secret`) back from the environment.
fn fill_secrets(vars: &mut [EnvVar]) -> Result<(), String> {
    for v in vars.iter_mut() {
        if let Some(name) = &v.secret {
            match std::env::var(name) {
                Ok(value) => v.value = value,
                Err(_) => return Err(name.clone()),
            }
        }
    }
    Ok(())
}

/// Kills the process groups of instances an earlier agent on `socket` started (found by the
/// [`AGENT_MARK`] variable in their environment). Returns how many.
fn kill_leftovers(socket: &Path) -> usize {
    let mark = format!("{AGENT_MARK}={}", socket.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).is_ok_and(|p| p == me) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()) {
            continue;
        }
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok();
        if let Some(pgid) = pgid.filter(|g| g.as_raw() > 1) {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// Temp file + rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}
