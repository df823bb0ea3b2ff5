//! The agent: owns every instance and listener of one project.
//!
//! Per (environment, service) it keeps one proxy and at most two release sets: the `live` one
//! (receiving traffic) and a `warm` one (the previous live set, kept for `scale_down_delay` so a
//! rollback is a route flip). Deploys of one service are serialised by a lock; deploys of
//! different services run at once. Every deploy follows the same order: start the new set, wait
//! until the probes call every instance ready (an exit fails at once), swap the route in one
//! store and read it back, then drain the old set and stop it later.

mod autoscale;
mod canary;
mod handover;
mod recover;
mod rolling;
mod set;
#[cfg(test)]
mod tests;

pub use recover::StoreLocation;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use cutover_store::StateDir;
use cutover_store::atomic::{Durability, write_atomic};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::types::{
    AgentStatus, CanaryStatus, DeployCount, DeployProgress, InstanceStatus, LiveNumbers,
    ReleaseSetStatus, ReleaseSpec, ServiceStatus, Strategy, TlsSpec, Traffic,
};
use crate::exposition::Format;
use crate::metrics::{Metrics, ReleaseMetrics};
use crate::proxy::{
    AccessLog, Edge, EdgeCertSource, EdgeTls, Proxy, ProxyOptions, RouteRelease, RouteTable,
};
use crate::supervisor::InstanceState;
use set::{Member, ReleaseSet, SpawnContext};

/// How often a service's sets are looked at to keep its route current (and its numbers sampled
/// every fifth time).
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// The longest `down` waits for a recovery in progress to finish.
const RECOVERY_WAIT: Duration = Duration::from_secs(120);
/// The window of a service's live numbers (`status`, `monitor`).
const NUMBERS_WINDOW: Duration = Duration::from_secs(10);
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

/// What the agent runs for one (environment, service).
pub(crate) struct ServiceRuntime {
    env: String,
    service: String,
    proxy: Proxy,
    generation: AtomicU64,
    /// Held for a whole deploy: deploys of one service go one at a time.
    deploying: Mutex<()>,
    /// The sets; held only for short looks and changes, never across a wait.
    sets: Mutex<Sets>,
    /// The control channel of the canary in progress (`promote`, `abort`).
    control: std::sync::Mutex<Option<mpsc::UnboundedSender<Control>>>,
    /// The service's traffic totals, sampled every second for its live numbers.
    samples: std::sync::Mutex<VecDeque<(Instant, ReleaseMetrics)>>,
    /// Stops the service's watcher.
    watcher: CancellationToken,
    /// The release a deploy (or rollback) is bringing in right now.
    in_progress: std::sync::Mutex<Option<String>>,
    /// Where clients reach it (`status`): its own port, else its first host on the shared
    /// listener.
    url: std::sync::Mutex<String>,
    /// Whether it has a claim on the shared listener (to take back when it stops).
    on_edge: std::sync::atomic::AtomicBool,
    /// Its access log, once a deploy asked for one (kept open across deploys).
    access_log: std::sync::Mutex<Option<AccessLog>>,
}

/// The release sets of one service.
#[derive(Default)]
pub(crate) struct Sets {
    /// Receives traffic.
    live: Option<Arc<ReleaseSet>>,
    /// The previous live set, kept for `scale_down_delay` (rollback is a route flip).
    warm: Option<Arc<ReleaseSet>>,
    /// Switches that made a set warm so far: the scale-down each one schedules stops the warm
    /// set only if no later switch made it warm again (a set flipped back and forth stays
    /// warm for `scale_down_delay` after the latest switch, not the first).
    warmed: u64,
    /// A set joining the live one: a canary, or a rolling update's new instances.
    next: Option<Next>,
    /// Instances asked for.
    desired: u32,
    /// The canary in progress, for `status`.
    canary: Option<CanaryStatus>,
    /// The autoscaler's last change, for `status`.
    scaled: Option<crate::api::types::Scaled>,
}

/// A set beside the live one, and its share of the traffic.
pub(crate) struct Next {
    set: Arc<ReleaseSet>,
    weighting: Weighting,
    sticky: bool,
}

/// How traffic is split between the live set and the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weighting {
    /// The next set gets this percent (a canary step).
    Percent(u8),
    /// Each set in proportion to its ready instances (a rolling update).
    ByInstances,
}

/// What `promote` and `abort` send to a canary in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// End the current and every later pause.
    Promote,
    /// Go to 100% now, without further judgement.
    PromoteFull,
    /// Roll back now.
    Abort,
}

/// Why a deploy did not end live.
#[derive(Debug)]
pub(crate) enum DeployError {
    /// It never served: traffic stayed on the previous release.
    Failed(String),
    /// It served some traffic and was taken back (a canary judgement or abort).
    RolledBack(String),
}

/// What a deploy request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deploy,
    /// Back to an earlier release: never steps or analysis.
    Rollback,
    /// Bringing a service back after a restart.
    Restore,
}

impl ServiceRuntime {
    /// The release a deploy is bringing in now, if one is.
    pub(crate) fn in_progress(&self) -> Option<String> {
        self.in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_in_progress(&self, release: Option<String>) {
        *self
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = release;
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The releases the route should have for `sets`.
    fn route_releases(sets: &Sets) -> (Vec<RouteRelease>, bool) {
        let live = sets.live.as_ref().map(|s| (s, s.ready_addrs()));
        let Some(next) = &sets.next else {
            return (
                live.map(|(s, backends)| RouteRelease {
                    release: s.spec.release.clone(),
                    weight: 100,
                    backends,
                })
                .into_iter()
                .collect(),
                false,
            );
        };
        let next_backends = next.set.ready_addrs();
        let (live_weight, next_weight) = match next.weighting {
            Weighting::Percent(w) => (100 - w.min(100), w.min(100)),
            Weighting::ByInstances => (
                u8::try_from(live.as_ref().map_or(0, |(_, b)| b.len())).unwrap_or(u8::MAX),
                u8::try_from(next_backends.len()).unwrap_or(u8::MAX),
            ),
        };
        let mut releases = Vec::new();
        if let Some((s, backends)) = live {
            releases.push(RouteRelease {
                release: s.spec.release.clone(),
                weight: live_weight,
                backends,
            });
        }
        releases.push(RouteRelease {
            release: next.set.spec.release.clone(),
            weight: next_weight,
            backends: next_backends,
        });
        (releases, next.sticky)
    }

    /// Routes by `sets` now, in one store; returns the generation applied.
    fn reroute(&self, sets: &Sets) -> u64 {
        let (releases, sticky) = Self::route_releases(sets);
        let generation = self.next_generation();
        self.proxy
            .set_route(RouteTable::new(generation, releases).with_sticky(sticky));
        generation
    }

    fn set_control(&self, tx: Option<mpsc::UnboundedSender<Control>>) {
        *self.control.lock().unwrap_or_else(PoisonError::into_inner) = tx;
    }

    /// Sends `c` to the canary in progress; `false` when there is none.
    fn send_control(&self, c: Control) -> bool {
        self.control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| tx.send(c).is_ok())
    }

    /// Adds a sample of the service's totals, keeping [`NUMBERS_WINDOW`] of them.
    fn sample(&self, metrics: &Metrics) {
        let totals = metrics.service_totals(&self.service);
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((now, totals));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > NUMBERS_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Requests per second, error rate and p99 over the sampled window.
    fn numbers(&self) -> Option<LiveNumbers> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (first_at, first) = samples.front()?;
        let (last_at, last) = samples.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let window = last.since(first);
        Some(LiveNumbers {
            requests_per_second: window.requests as f64 / seconds,
            error_rate: window.error_rate().unwrap_or(0.0),
            p99_ms: window.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
            requests: window.requests,
            window_seconds: seconds,
        })
    }
}

/// The agent of one project.
pub struct Agent {
    state_dir: StateDir,
    socket: PathBuf,
    started: Instant,
    services: Mutex<BTreeMap<(String, String), Arc<ServiceRuntime>>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Deploys handled, by (env, service, kind, result).
    deploys: std::sync::Mutex<BTreeMap<(String, String, String, String), u64>>,
    /// True while services are being restored after a restart: the desired state on disk is
    /// not rewritten until every one is back (a crash then must not forget the rest).
    recovering: std::sync::atomic::AtomicBool,
    /// Where the project's store is (secret values after a restart, run records).
    store: Option<StoreLocation>,
    /// Services whose recorded release the agent could not bring back, by (env, service):
    /// the release's spec (kept in the desired state) and why.
    problems: std::sync::Mutex<BTreeMap<(String, String), (ReleaseSpec, String)>>,
    /// Deploys whose command died, recorded by the agent when they end.
    handed: std::sync::Mutex<handover::HandedOver>,
    /// Fires when the agent should stop (API `stop`, SIGTERM).
    pub shutdown: CancellationToken,
    /// Hands out the instances' internal ports (and reserves adopted ones: [`Agent::ports`]).
    ports: crate::supervisor::Ports,
    /// The targets' backends (one client per Docker Engine).
    backends: crate::target::Backends,
    /// The shared listener (`[proxy] http`), once a service with `hosts` was deployed.
    edge: Mutex<Option<Edge>>,
    /// Certificates over ACME (`tls = "acme"`), and their renewal.
    acme: Arc<crate::acme::Issuer>,
}

impl Agent {
    /// An agent keeping its state under `state_dir` (the project's `.cutover/`), reading
    /// secrets and recording runs in the store at `store`.
    pub fn new(state_dir: StateDir, socket: PathBuf, store: Option<StoreLocation>) -> Arc<Agent> {
        Agent::with_backends(state_dir, socket, store, crate::target::Backends::default())
    }

    /// [`Agent::new`] with its targets given (tests run the strategies on a fake target).
    fn with_backends(
        state_dir: StateDir,
        socket: PathBuf,
        store: Option<StoreLocation>,
        backends: crate::target::Backends,
    ) -> Arc<Agent> {
        Arc::new(Agent {
            state_dir,
            socket,
            started: Instant::now(),
            services: Mutex::new(BTreeMap::new()),
            metrics: Metrics::new(),
            deploys: std::sync::Mutex::new(BTreeMap::new()),
            recovering: std::sync::atomic::AtomicBool::new(false),
            store,
            problems: std::sync::Mutex::new(BTreeMap::new()),
            handed: std::sync::Mutex::new(handover::HandedOver::default()),
            shutdown: CancellationToken::new(),
            ports: crate::supervisor::Ports::from_env(),
            backends,
            edge: Mutex::new(None),
            acme: Arc::new(crate::acme::Issuer::default()),
        })
    }

    /// Records that `spec`'s service could not be brought back, and why.
    pub(crate) fn set_problem(&self, spec: &ReleaseSpec, why: String) {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (spec.env.clone(), spec.service.clone()),
                (spec.clone(), why),
            );
    }

    /// The service runs what it should again (or was deployed anew).
    pub(crate) fn clear_problem(&self, env: &str, service: &str) {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(env.to_string(), service.to_string()));
    }

    /// The runtime of (`env`, `service`), when the agent runs it.
    async fn running(&self, env: &str, service: &str) -> Option<Arc<ServiceRuntime>> {
        self.services
            .lock()
            .await
            .get(&(env.to_string(), service.to_string()))
            .cloned()
    }

    fn problem(&self, env: &str, service: &str) -> Option<String> {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(env.to_string(), service.to_string()))
            .map(|(_, why)| why.clone())
    }

    /// The agent's port allocator: `ports().adopt(port)` reserves the port of an instance
    /// adopted after a restart.
    pub fn ports(&self) -> &crate::supervisor::Ports {
        &self.ports
    }

    fn desired_path(&self) -> PathBuf {
        self.state_dir.agent_desired()
    }

    pub(crate) fn spawn_context(&self) -> SpawnContext {
        SpawnContext {
            state_dir: self.state_dir.clone(),
            socket: self.socket.clone(),
            ports: self.ports.clone(),
            backends: self.backends.clone(),
        }
    }

    /// Deploys `spec` with its strategy, reporting progress on `progress`; ends with `Active`,
    /// `Failed` or `RolledBack`.
    pub async fn deploy(
        self: Arc<Self>,
        spec: ReleaseSpec,
        progress: mpsc::UnboundedSender<DeployProgress>,
    ) {
        self.deploy_as(spec, progress, Mode::Deploy).await;
    }

    /// Brings `spec` back: a route flip to warm instances, or blue-green (immediate for an
    /// immediate service), never canary steps or analysis. A canary in progress is aborted
    /// first.
    pub async fn rollback(
        self: Arc<Self>,
        spec: ReleaseSpec,
        progress: mpsc::UnboundedSender<DeployProgress>,
    ) {
        self.deploy_as(spec, progress, Mode::Rollback).await;
    }

    /// `promote` (`full`: 100% now) or `abort` of the canary of `service` in `env`.
    pub async fn canary_control(
        &self,
        env: &str,
        service: &str,
        control: Control,
    ) -> Result<(), String> {
        let rt = self.running(env, service).await;
        let sent = rt.is_some_and(|rt| rt.send_control(control));
        if sent {
            log(&format!("{env}/{service}: {control:?} asked"));
            Ok(())
        } else {
            Err(format!(
                "no canary of {service} is in progress in {env}: `cutover status` shows what runs"
            ))
        }
    }

    /// A deploy, a rollback, or (with [`Mode::Restore`]) bringing a service back after a
    /// restart: a restore never replaces a service that already has a live set, so a deploy
    /// that came in while the agent was recovering is not undone by the older release it had
    /// recorded.
    async fn deploy_as(
        self: Arc<Self>,
        spec: ReleaseSpec,
        progress: mpsc::UnboundedSender<DeployProgress>,
        mode: Mode,
    ) {
        let name = format!("{}/{} {}", spec.env, spec.service, spec.release);
        let (env, service) = (spec.env.clone(), spec.service.clone());
        let recorded = spec.clone();
        let (last, result) = match self.deploy_inner(spec, &progress, mode).await {
            Ok(()) => {
                log(&format!("{name}: live"));
                self.clear_problem(&env, &service);
                (DeployProgress::Active, "active")
            }
            Err(DeployError::Failed(reason)) => {
                log(&format!(
                    "{name}: failed: {}",
                    reason.lines().next().unwrap_or("")
                ));
                if mode == Mode::Restore {
                    let first = reason.lines().next().unwrap_or("").to_string();
                    self.set_problem(
                        &recorded,
                        format!("could not restart {}: {first}", recorded.release),
                    );
                }
                (DeployProgress::Failed { reason }, "failed")
            }
            Err(DeployError::RolledBack(reason)) => {
                log(&format!("{name}: rolled back: {reason}"));
                (DeployProgress::RolledBack { reason }, "rolled_back")
            }
        };
        let reason = match &last {
            DeployProgress::Failed { reason } | DeployProgress::RolledBack { reason } => {
                Some(reason.as_str())
            }
            _ => None,
        };
        self.deploy_ended(&env, &service, &recorded.release, result, reason);
        let rt = self
            .services
            .lock()
            .await
            .get(&(env.clone(), service.clone()))
            .cloned();
        if let Some(rt) = rt
            && rt.in_progress().as_deref() == Some(recorded.release.as_str())
        {
            rt.set_in_progress(None);
        }
        if mode != Mode::Restore {
            let kind = if mode == Mode::Rollback {
                "rollback"
            } else {
                "deploy"
            };
            *self
                .deploys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((env, service, kind.to_string(), result.to_string()))
                .or_default() += 1;
        }
        let _ = progress.send(last);
        if let Err(e) = self.persist().await {
            log(&format!("could not record the desired state: {e}"));
        }
    }

    async fn runtime_for(&self, spec: &ReleaseSpec) -> Result<Arc<ServiceRuntime>, String> {
        let key = (spec.env.clone(), spec.service.clone());
        let edge = self.edge_for(spec).await?;
        let mut services = self.services.lock().await;
        let rt = match services.get(&key) {
            Some(rt) => {
                let own = rt.proxy.addr().map(|a| a.port());
                if own != spec.port {
                    let port = |p: Option<u16>| p.map_or("none".to_string(), |p| p.to_string());
                    return Err(format!(
                        "{} in {} moves from port {} to {}: run `cutover down` first, then deploy",
                        spec.service,
                        spec.env,
                        port(own),
                        port(spec.port)
                    ));
                }
                rt.clone()
            }
            None => {
                if let Some(port) = spec.port
                    && let Some(other) = services
                        .values()
                        .find(|rt| rt.proxy.addr().map(|a| a.port()) == Some(port))
                {
                    return Err(format!(
                        "port {port} is already the public port of {} in {}",
                        other.service, other.env
                    ));
                }
                let proxy = match spec.port {
                    Some(port) => Proxy::bind(
                        &spec.service,
                        SocketAddr::new(spec.listen, port),
                        self.metrics.clone(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                    None => Proxy::unbound(&spec.service, self.metrics.clone()),
                };
                let rt = Arc::new(ServiceRuntime {
                    env: spec.env.clone(),
                    service: spec.service.clone(),
                    proxy,
                    generation: AtomicU64::new(0),
                    deploying: Mutex::new(()),
                    sets: Mutex::new(Sets::default()),
                    control: std::sync::Mutex::new(None),
                    samples: std::sync::Mutex::new(VecDeque::new()),
                    watcher: CancellationToken::new(),
                    in_progress: std::sync::Mutex::new(None),
                    url: std::sync::Mutex::new(String::new()),
                    on_edge: std::sync::atomic::AtomicBool::new(false),
                    access_log: std::sync::Mutex::new(None),
                });
                tokio::spawn(watch(
                    rt.clone(),
                    self.metrics.clone(),
                    self.spawn_context(),
                ));
                services.insert(key, rt.clone());
                rt
            }
        };
        let owner = format!("{}/{}", spec.env, spec.service);
        match (&edge, &spec.edge) {
            (Some(edge), Some(claim)) => {
                let tls = match (&claim.tls, claim.https) {
                    (Some(tls), Some(https)) => Some(EdgeTls {
                        https,
                        source: match tls {
                            TlsSpec::Files { cert, key } => EdgeCertSource::Files {
                                cert: cert.clone(),
                                key: key.clone(),
                            },
                            TlsSpec::Acme => EdgeCertSource::Acme,
                        },
                        redirect: claim.redirect_https,
                    }),
                    _ => None,
                };
                edge.claim(
                    &owner,
                    &rt.proxy,
                    &claim.hosts,
                    &claim.path_prefix,
                    tls.as_ref(),
                )?;
                if let (Some(TlsSpec::Acme), Some(acme)) = (&claim.tls, &claim.acme) {
                    self.acme
                        .ensure(
                            &self.state_dir.path().join("acme"),
                            edge,
                            &owner,
                            &claim.hosts,
                            acme,
                        )
                        .await
                        .map_err(|e| format!("{}: {e}", spec.service))?;
                }
                rt.on_edge.store(true, Ordering::SeqCst);
            }
            (Some(edge), None) => {
                edge.release(&owner);
                rt.on_edge.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
        *rt.url.lock().unwrap_or_else(PoisonError::into_inner) =
            service_url(spec, edge.as_ref().map(Edge::addr));
        let access_log = if spec.proxy.access_log {
            let mut open = rt.access_log.lock().unwrap_or_else(PoisonError::into_inner);
            if open.is_none() {
                let path = self.state_dir.access_log(&spec.service);
                *open =
                    Some(AccessLog::open(&path).map_err(|e| {
                        format!("cannot open the access log {}: {e}", path.display())
                    })?);
            }
            open.clone()
        } else {
            None
        };
        rt.proxy.set_options(ProxyOptions {
            max_body: spec.proxy.max_body,
            upstream_timeout: spec.proxy.upstream_timeout_ms.map(Duration::from_millis),
            access_log,
        });
        Ok(rt)
    }

    /// The shared listener `spec` needs, started on first use; `None` when it claims no host.
    /// The TLS listener (`[proxy] https`) is started too when the service has `tls`. Refused
    /// when a listener runs on another address than `[proxy]` now says.
    async fn edge_for(&self, spec: &ReleaseSpec) -> Result<Option<Edge>, String> {
        let mut edge = self.edge.lock().await;
        let Some(claim) = &spec.edge else {
            return Ok(edge.clone());
        };
        let Some(http) = claim.http else {
            return Err(format!(
                "{} claims hosts but [proxy] has no `http` listener: add [proxy] http = \"0.0.0.0:80\"",
                spec.service
            ));
        };
        let running = match edge.as_ref() {
            Some(running) => {
                if running.addr() != http && !(http.port() == 0 && running.addr().ip() == http.ip())
                {
                    return Err(format!(
                        "the shared listener runs on {}, but [proxy] http is now {http}: run `cutover agent stop`, then deploy again",
                        running.addr()
                    ));
                }
                running.clone()
            }
            None => {
                let started = Edge::bind(http).await.map_err(|e| e.to_string())?;
                log(&format!("shared listener on {}", started.addr()));
                *edge = Some(started.clone());
                started
            }
        };
        if claim.tls.is_some() {
            let Some(https) = claim.https else {
                return Err(format!(
                    "{} has `tls` but [proxy] has no `https` listener: add [proxy] https = \"0.0.0.0:443\"",
                    spec.service
                ));
            };
            if running.https_addr().is_none() {
                let bound = running.serve_https(https).await?;
                log(&format!("shared TLS listener on {bound}"));
            } else {
                running.serve_https(https).await?;
            }
        }
        Ok(Some(running))
    }

    async fn deploy_inner(
        self: &Arc<Self>,
        spec: ReleaseSpec,
        progress: &mpsc::UnboundedSender<DeployProgress>,
        mode: Mode,
    ) -> Result<(), DeployError> {
        let rt = self.runtime_for(&spec).await.map_err(DeployError::Failed)?;
        if mode == Mode::Rollback && rt.send_control(Control::Abort) {
            log(&format!(
                "{}/{}: rollback asked: aborting the canary in progress",
                spec.env, spec.service
            ));
        }
        let _deploying = rt.deploying.lock().await;
        rt.set_in_progress(Some(spec.release.clone()));
        let live = {
            let mut sets = rt.sets.lock().await;
            if mode == Mode::Restore && sets.live.is_some() {
                log(&format!(
                    "{}/{}: not restoring {}: a newer deploy already serves",
                    spec.env, spec.service, spec.release
                ));
                return Ok(());
            }
            sets.desired = spec.instances;

            // A rollback to the warm set is a route flip, when the set has the instances asked
            // for (`instances` may have changed since it served: then it starts afresh).
            if let Some(warm) = sets.warm.clone().filter(|w| {
                w.spec.release == spec.release && w.len() == spec.instances.max(1) && w.all_ready()
            }) {
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
            sets.live.clone().filter(|l| l.len() > 0)
        };

        let strategy = match (mode, spec.strategy) {
            (_, Strategy::Immediate) => Strategy::Immediate,
            (Mode::Deploy, s) => s,
            _ => Strategy::BlueGreen,
        };
        match (strategy, live, spec.canary.clone()) {
            (Strategy::Rolling, Some(live), _) => {
                rolling::run(self, &rt, live, spec, progress).await
            }
            (Strategy::Canary, Some(live), Some(canary)) => {
                canary::run(self, &rt, live, spec, canary, progress).await
            }
            (Strategy::Immediate, _, _) => {
                {
                    let mut sets = rt.sets.lock().await;
                    let old = [sets.live.take(), sets.warm.take()];
                    rt.reroute(&sets);
                    drop(sets);
                    for set in old.into_iter().flatten() {
                        set.stop().await;
                    }
                }
                self.blue_green(&rt, spec, progress).await
            }
            _ => self.blue_green(&rt, spec, progress).await,
        }
    }

    /// Starts every instance of `spec`, waits until each is ready, then switches to it.
    async fn blue_green(
        self: &Arc<Self>,
        rt: &Arc<ServiceRuntime>,
        spec: ReleaseSpec,
        progress: &mpsc::UnboundedSender<DeployProgress>,
    ) -> Result<(), DeployError> {
        let set = self.start_verified(spec, progress).await?;
        let mut sets = rt.sets.lock().await;
        self.switch(rt, &mut sets, set, progress);
        Ok(())
    }

    /// Starts a set of `spec.instances` instances and waits until every one is ready (stopping
    /// them and saying why when one never will be).
    pub(crate) async fn start_verified(
        &self,
        spec: ReleaseSpec,
        progress: &mpsc::UnboundedSender<DeployProgress>,
    ) -> Result<Arc<ReleaseSet>, DeployError> {
        let _ = progress.send(DeployProgress::Starting {
            instances: spec.instances,
        });
        let set = Arc::new(ReleaseSet::new(spec));
        let started = set.start(set.spec.instances.max(1), &self.spawn_context());
        let members = match started {
            Ok(m) => m,
            Err(e) => {
                set.stop().await;
                return Err(DeployError::Failed(e));
            }
        };
        let _ = progress.send(DeployProgress::Verifying);
        let reporting = set::report_starting(set.clone(), progress.clone());
        let ready = set.wait_ready(&members).await;
        reporting.finish();
        if let Err(reason) = ready {
            set.stop().await;
            return Err(DeployError::Failed(reason));
        }
        Ok(set)
    }

    /// Sends all traffic to `new`, confirms it, keeps the previous live set warm and schedules
    /// its drain and stop.
    pub(crate) fn switch(
        self: &Arc<Self>,
        rt: &Arc<ServiceRuntime>,
        sets: &mut Sets,
        new: Arc<ReleaseSet>,
        progress: &mpsc::UnboundedSender<DeployProgress>,
    ) {
        new.set_restart(true);
        if let Some(stale) = sets.warm.take() {
            tokio::spawn(async move { stale.stop().await });
        }
        let old = sets.live.replace(new);
        if let Some(old) = &old {
            old.set_restart(false);
            sets.warm = Some(old.clone());
            sets.warmed += 1;
        }
        let warmed = sets.warmed;
        let generation = rt.reroute(sets);
        if rt.proxy.route().generation() == generation {
            let _ = progress.send(DeployProgress::Switched { generation });
        }
        if let Some(old) = old {
            let rt = rt.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let drain = Duration::from_millis(old.spec.drain_timeout_ms);
                rt.proxy.drain(&old.spec.release, drain).await;
                let delay = Duration::from_millis(old.spec.scale_down_delay_ms);
                tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
                let mut sets = rt.sets.lock().await;
                if sets.warmed == warmed && sets.warm.as_ref().is_some_and(|w| Arc::ptr_eq(w, &old))
                {
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

    /// Pauses (`timeout`: how long a held request waits) or resumes (`None`) the proxy of
    /// `service` in `env`; an error when the agent does not run it.
    pub async fn pause(
        &self,
        env: &str,
        service: &str,
        timeout: Option<Duration>,
    ) -> Result<(), String> {
        let rt = self
            .running(env, service)
            .await
            .ok_or_else(|| format!("{service} does not run in {env}"))?;
        match timeout {
            Some(t) => {
                rt.proxy.pause(t);
                log(&format!(
                    "{env}/{service}: paused (requests wait up to {t:?})"
                ));
            }
            None => {
                rt.proxy.resume();
                log(&format!("{env}/{service}: resumed"));
            }
        }
        Ok(())
    }

    /// Stops every instance and listener of `env`; returns the services stopped. Waits for a
    /// recovery in progress first (a service it brings back would otherwise outlive `down`).
    pub async fn down(&self, env: &str) -> Vec<String> {
        let waited = Instant::now();
        while self.recovering.load(Ordering::SeqCst) && waited.elapsed() < RECOVERY_WAIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let taken: Vec<Arc<ServiceRuntime>> = {
            let mut services = self.services.lock().await;
            let keys: Vec<_> = services.keys().filter(|(e, _)| e == env).cloned().collect();
            keys.iter().filter_map(|k| services.remove(k)).collect()
        };
        let mut names = Vec::new();
        let edge = self.edge.lock().await.clone();
        for rt in taken {
            stop_runtime(&rt, edge.as_ref()).await;
            names.push(rt.service.clone());
        }
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(e, _), _| e != env);
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
        let edge = self.edge.lock().await.take();
        for rt in taken {
            stop_runtime(&rt, edge.as_ref()).await;
        }
        if let Some(edge) = edge {
            edge.shutdown().await;
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
            let next_role = match sets.next.as_ref().map(|n| n.weighting) {
                Some(Weighting::Percent(_)) => "canary",
                _ => "rolling",
            };
            let mut set_status = Vec::new();
            for (role, set) in [
                ("live", sets.live.as_ref()),
                ("warm", sets.warm.as_ref()),
                (next_role, sets.next.as_ref().map(|n| &n.set)),
            ] {
                if let Some(set) = set {
                    set_status.push(ReleaseSetStatus {
                        release: set.spec.release.clone(),
                        role: role.to_string(),
                        instances: set.members().iter().map(|m| instance_status(m)).collect(),
                    });
                }
            }
            let live_ready = sets.live.as_ref().map_or(0, |s| s.ready_addrs().len());
            let rolling_ready = sets
                .next
                .as_ref()
                .filter(|n| n.weighting == Weighting::ByInstances)
                .map_or(0, |n| n.set.ready_addrs().len());
            let ready = u32::try_from(live_ready + rolling_ready).unwrap_or(u32::MAX);
            let crash_looping =
                |s: &Arc<ReleaseSet>| s.members().iter().any(|m| m.instance.crash_looping());
            let health = match &sets.live {
                None => "stopped",
                Some(_) if ready == 0 => "unhealthy",
                Some(s) if crash_looping(s) => "unhealthy",
                Some(_) if ready < sets.desired => "unhealthy",
                Some(_) => "healthy",
            };
            let url = rt
                .url
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            services.push(ServiceStatus {
                env: rt.env.clone(),
                service: rt.service.clone(),
                release: sets.live.as_ref().map(|s| s.spec.release.clone()),
                health: health.to_string(),
                ready,
                desired: sets.desired,
                traffic,
                url,
                sets: set_status,
                numbers: rt.numbers(),
                canary: sets.canary.clone(),
                problem: self.problem(&rt.env, &rt.service),
                deploying: rt.in_progress(),
                scaled: sets.scaled.clone(),
            });
        }
        let problems: Vec<(ReleaseSpec, String)> = self
            .problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for (spec, why) in problems {
            if services
                .iter()
                .any(|s| s.env == spec.env && s.service == spec.service)
            {
                continue;
            }
            let url = service_url(&spec, spec.edge.as_ref().and_then(|e| e.http));
            services.push(ServiceStatus {
                env: spec.env.clone(),
                service: spec.service.clone(),
                release: None,
                health: "stopped".to_string(),
                ready: 0,
                desired: spec.instances,
                traffic: Vec::new(),
                url,
                sets: Vec::new(),
                numbers: None,
                canary: None,
                problem: Some(why),
                deploying: None,
                scaled: None,
            });
        }
        let deploys = self
            .deploys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((env, service, kind, result), count)| DeployCount {
                env: env.clone(),
                service: service.clone(),
                kind: kind.clone(),
                result: result.clone(),
                count: *count,
            })
            .collect();
        AgentStatus {
            pid: std::process::id(),
            socket: self.socket.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            services,
            deploys,
        }
    }

    /// The `/metrics` exposition in `format`: the proxies' per-release numbers and the
    /// agent's view of its services.
    pub async fn metrics_text(&self, format: Format) -> Result<String, std::fmt::Error> {
        crate::exposition::encode(&self.metrics, self.status().await, format)
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
        let unrestored: Vec<ReleaseSpec> = self
            .problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(spec, _)| spec.clone())
            .collect();
        for mut spec in unrestored {
            if specs
                .iter()
                .any(|s| s.env == spec.env && s.service == spec.service)
            {
                continue;
            }
            for v in &mut spec.env_vars {
                if v.secret.is_some() {
                    v.value.clear();
                }
            }
            specs.push(spec);
        }
        let body = serde_json::to_vec_pretty(&specs).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(self.state_dir.agent_dir())?;
        // What the agent brings back after a crash: it must survive one.
        write_atomic(&self.desired_path(), &body, Durability::Fsync)
    }

    /// The instances an earlier agent of this project left running (after its `kill -9`).
    /// Must run before the API serves: afterwards, this agent's own new instances carry the
    /// same mark.
    pub fn find_leftovers(&self) -> Leftovers {
        Leftovers(recover::leftovers(&self.socket))
    }

    /// After a restart (or `kill -9` of the previous agent): brings every service back to the
    /// release it served, adopting the instances in `found` that still serve it.
    pub async fn recover(self: &Arc<Self>, found: Leftovers) {
        self.recover_from(found.0).await;
    }
}

/// Instances an earlier agent left running, found by [`Agent::find_leftovers`].
pub struct Leftovers(Vec<recover::Leftover>);

impl Leftovers {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where clients reach a service: its own port, else its first host on the shared listener at
/// `edge` (an unspecified listen address is reached on loopback).
fn service_url(spec: &ReleaseSpec, edge: Option<SocketAddr>) -> String {
    let host = |ip: std::net::IpAddr| {
        if ip.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            ip.to_string()
        }
    };
    if let Some(port) = spec.port {
        return format!("http://{}:{port}", host(spec.listen));
    }
    match (&spec.edge, edge) {
        (Some(claim), Some(addr)) => {
            let name = claim
                .hosts
                .first()
                .map_or_else(|| host(addr.ip()), Clone::clone);
            let port = if addr.port() == 80 {
                String::new()
            } else {
                format!(":{}", addr.port())
            };
            let path = if claim.path_prefix == "/" {
                ""
            } else {
                claim.path_prefix.as_str()
            };
            format!("http://{name}{port}{path}")
        }
        _ => String::new(),
    }
}

async fn stop_runtime(rt: &ServiceRuntime, edge: Option<&Edge>) {
    if let Some(edge) = edge
        && rt.on_edge.load(Ordering::SeqCst)
    {
        edge.release(&format!("{}/{}", rt.env, rt.service));
    }
    rt.send_control(Control::Abort);
    rt.watcher.cancel();
    let mut sets = rt.sets.lock().await;
    rt.proxy.set_route(RouteTable::empty());
    let next = sets.next.take().map(|n| n.set);
    sets.canary = None;
    for set in [sets.live.take(), sets.warm.take(), next]
        .into_iter()
        .flatten()
    {
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
        ready: m.probe.ready(),
        restarts: m.instance.restarts(),
        node: m.instance.node(),
        addr: m.remote_addr().map(|a| a.to_string()),
        unit: Some(m.instance.describe()),
    }
}

/// Keeps a service's route equal to its sets' ready instances, restarts an instance whose
/// probe says it is no longer live (once its release serves), and samples its numbers.
async fn watch(rt: Arc<ServiceRuntime>, metrics: Arc<Metrics>, ctx: SpawnContext) {
    let mut restarted: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut tick: u64 = 0;
    let mut scaler = autoscale::Autoscaler::default();
    loop {
        tokio::select! {
            () = rt.watcher.cancelled() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        tick += 1;
        if tick.is_multiple_of(5) {
            rt.sample(&metrics);
        }
        let sets = rt.sets.lock().await;
        let serving = [sets.live.as_ref(), sets.next.as_ref().map(|n| &n.set)];
        for set in serving.into_iter().flatten() {
            for m in set.members() {
                let recently = restarted
                    .get(&m.port)
                    .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
                if m.instance.restart_enabled()
                    && !m.probe.live()
                    && m.instance.state().is_running()
                    && !recently
                {
                    log(&format!(
                        "{}/{} {}: instance {} failed its liveness probe; restarting it",
                        rt.env, rt.service, set.spec.release, m.index
                    ));
                    m.instance.restart();
                    restarted.insert(m.port, Instant::now());
                }
            }
        }
        restarted.retain(|_, at| at.elapsed() < Duration::from_secs(10));
        if tick.is_multiple_of(autoscale::EVERY) {
            scaler.step(&rt, &sets, &ctx);
        }
        let (want, sticky) = ServiceRuntime::route_releases(&sets);
        let route = rt.proxy.route();
        if route.releases() != want.as_slice() || route.sticky() != sticky {
            rt.reroute(&sets);
        }
    }
}
