//! A release set: the instances of one release of one service, each with its probe.
//!
//! Its members can grow and shrink (a rolling update adds new instances and removes old ones a
//! batch at a time); everything else about the set is fixed by its [`ReleaseSpec`].
//!
//! Each member holds the lease of its internal port (from the agent's [`Ports`]) until it is
//! stopped or dropped, and its probe checks that the socket answering there is the member's
//! own before it calls it ready. A member that exits during its first readiness because its
//! port was taken after all ("Address already in use") is replaced by one on another port, a
//! few times at most, instead of failing the deploy or restarting on the same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cutover_config::format_duration;
use cutover_store::StateDir;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::AGENT_MARK;
use crate::api::types::{DeployProgress, ReleaseSpec};
use crate::probe::Probe;
use crate::supervisor::{InstanceSpec, InstanceState, PortLease, Ports, RestartPolicy};
use crate::target::{Backends, Found, Unit};

/// The variable carrying an instance's index (read back when a restarted agent adopts it).
pub(crate) const INSTANCE_VAR: &str = "CUTOVER_INSTANCE";
/// How long an instance gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest a wait for readiness goes between two looks at the instances (it is woken by
/// their watch channels first).
const WAIT_EVERY: Duration = Duration::from_millis(500);
/// How many times one wait for readiness replaces a member whose port was taken.
const PORT_RETRIES: u32 = 3;

/// Where instances log and how they are marked as this agent's.
#[derive(Debug, Clone)]
pub(crate) struct SpawnContext {
    /// The project's `.cutover/`.
    pub(crate) state_dir: StateDir,
    /// The agent's socket (the value of [`AGENT_MARK`]).
    pub(crate) socket: PathBuf,
    /// The agent's port allocator.
    pub(crate) ports: Ports,
    /// The targets (local processes, Docker engines).
    pub(crate) backends: Backends,
}

/// One running instance with its probe.
pub(crate) struct Member {
    pub(crate) index: u32,
    pub(crate) port: u16,
    pub(crate) instance: Arc<dyn Unit>,
    /// Where the unit is when it moves (a swarm task); `None`: `127.0.0.1:port`.
    address: Option<tokio::sync::watch::Receiver<Option<SocketAddr>>>,
    pub(crate) probe: Probe,
    /// When it was started (its `ready_timeout` counts from here).
    started: Instant,
    /// The port's lease, given back once the instance is stopped (or with the member).
    lease: Mutex<Option<PortLease>>,
}

impl Member {
    /// A member for `instance`, probed on its port from now on (a probe that checks the
    /// answering socket is the instance's own), holding `lease` until it is stopped.
    fn new(
        index: u32,
        port: u16,
        instance: Arc<dyn Unit>,
        health: &cutover_config::Health,
        lease: Option<PortLease>,
    ) -> Member {
        let address = instance.address();
        let probe = match &address {
            Some(moving) => {
                Probe::spawn_following(health.clone(), moving.clone(), instance.watch())
            }
            None => Probe::spawn_gated(
                health.clone(),
                SocketAddr::from(([127, 0, 0, 1], port)),
                instance.owner_check(port, index),
                Some(instance.watch()),
            ),
        };
        Member {
            index,
            port,
            instance,
            address,
            probe,
            started: Instant::now(),
            lease: Mutex::new(lease),
        }
    }

    /// Where the proxy reaches it: `127.0.0.1:port`, or a swarm task's current address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    /// Where it is when that moves (a swarm task), for `status`; `None` on `127.0.0.1:port`.
    pub(crate) fn remote_addr(&self) -> Option<SocketAddr> {
        self.address.as_ref().and_then(|a| *a.borrow())
    }

    pub(crate) fn ready(&self) -> bool {
        self.probe.ready() && self.instance.state().is_running()
    }

    async fn stop(&self) {
        self.probe.stop();
        self.instance.stop(STOP_GRACE).await;
        // The process group is gone: the port may be handed out again.
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Whether its last output says it could not bind its port.
    fn port_taken(&self) -> bool {
        self.instance.last_lines(20).iter().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("address already in use")
                || l.contains("eaddrinuse")
                || l.contains("port is already allocated")
        })
    }
}

/// The instances of one release of one service.
pub(crate) struct ReleaseSet {
    pub(crate) spec: ReleaseSpec,
    members: Mutex<Vec<Arc<Member>>>,
    next_index: AtomicU32,
    /// The context of the last [`ReleaseSet::start`], for replacing a member.
    ctx: Mutex<Option<SpawnContext>>,
}

impl ReleaseSet {
    /// A set with no instance yet.
    pub(crate) fn new(spec: ReleaseSpec) -> ReleaseSet {
        ReleaseSet {
            spec,
            members: Mutex::new(Vec::new()),
            next_index: AtomicU32::new(0),
            ctx: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Member>>> {
        // Every change is one push or drain: the list is consistent whatever a panic interrupted.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The members now.
    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.lock().clone()
    }

    /// How many members it has.
    pub(crate) fn len(&self) -> u32 {
        u32::try_from(self.lock().len()).unwrap_or(u32::MAX)
    }

    /// The addresses of the ready, running members.
    pub(crate) fn ready_addrs(&self) -> Vec<SocketAddr> {
        self.lock()
            .iter()
            .filter(|m| m.ready())
            .map(|m| m.addr())
            .collect()
    }

    /// Every member is ready (and there is one).
    pub(crate) fn all_ready(&self) -> bool {
        let members = self.lock();
        !members.is_empty() && members.iter().all(|m| m.ready())
    }

    /// Starts `n` more instances (restarts off until [`ReleaseSet::set_restart`]); returns them.
    pub(crate) fn start(&self, n: u32, ctx: &SpawnContext) -> Result<Vec<Arc<Member>>, String> {
        *self.ctx.lock().unwrap_or_else(PoisonError::into_inner) = Some(ctx.clone());
        let mut started = Vec::new();
        for _ in 0..n {
            let index = self.next_index.fetch_add(1, Ordering::SeqCst);
            match self.spawn_member(index, ctx) {
                Ok(m) => started.push(m),
                Err(e) => {
                    self.lock().extend(started.iter().cloned());
                    return Err(e);
                }
            }
        }
        self.lock().extend(started.iter().cloned());
        Ok(started)
    }

    /// One instance numbered `index` on a newly leased port, with its probe (not yet a member).
    fn spawn_member(&self, index: u32, ctx: &SpawnContext) -> Result<Arc<Member>, String> {
        let spec = &self.spec;
        let lease = ctx
            .ports
            .allocate()
            .map_err(|e| format!("no port for instance {index} of {}: {e}", spec.service))?;
        let port = lease.port();
        let backend = ctx.backends.for_spec(spec)?;
        let instance = backend.start(
            self.instance_spec(index, port, ctx),
            RestartPolicy {
                restart: false,
                ..RestartPolicy::default()
            },
        );
        Ok(Arc::new(Member::new(
            index,
            port,
            instance,
            &spec.health,
            Some(lease),
        )))
    }

    /// Stops `old` (its port was taken) and puts a new instance with the same index on another
    /// port in its place.
    async fn replace(&self, old: &Arc<Member>) -> Result<Arc<Member>, String> {
        let ctx = self
            .ctx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| "the set was never started".to_string())?;
        old.stop().await;
        let new = self.spawn_member(old.index, &ctx)?;
        let replaced = {
            let mut members = self.lock();
            let at = members.iter().position(|m| Arc::ptr_eq(m, old));
            if let Some(i) = at {
                members[i] = Arc::clone(&new);
            }
            at.is_some()
        };
        if !replaced {
            new.stop().await;
            return Err(format!(
                "instance {} of {} left its set while it was being moved to another port",
                old.index, self.spec.service
            ));
        }
        Ok(new)
    }

    /// What instance `index` of this release runs, on `port`.
    fn instance_spec(&self, index: u32, port: u16, ctx: &SpawnContext) -> InstanceSpec {
        let spec = &self.spec;
        let mut env: Vec<(String, String)> = spec
            .env_vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let inner_port = spec.container.as_ref().map_or(port, |c| c.container_port);
        env.push(("PORT".into(), inner_port.to_string()));
        env.push(("CUTOVER_SERVICE".into(), spec.service.clone()));
        env.push(("CUTOVER_RELEASE".into(), spec.release.clone()));
        env.push(("CUTOVER_ENV".into(), spec.env.clone()));
        env.push((INSTANCE_VAR.into(), index.to_string()));
        if spec.container.is_none() {
            env.push((AGENT_MARK.into(), ctx.socket.display().to_string()));
        }
        let container = spec.container.as_ref().map(|c| {
            let mut run =
                crate::target::docker::ContainerRun::new(c, spec, index, port, &ctx.socket);
            run.swarm = c.swarm.as_ref().map(|s| swarm_run(spec, c, s, &env, ctx));
            run
        });
        InstanceSpec {
            container,
            service: spec.service.clone(),
            release: spec.release.clone(),
            index,
            command: spec.run.clone(),
            dir: spec.dir.clone(),
            env,
            port,
            log: ctx.state_dir.instance_log(&spec.service, &spec.release),
            redact: spec
                .env_vars
                .iter()
                .filter(|v| v.secret.is_some())
                .map(|v| v.value.clone())
                .collect(),
        }
    }

    /// Takes over instances of this release that an earlier agent started (`(index, port,
    /// what)` each), restarts on; returns them. Each keeps its port, reserved again in the
    /// agent's port table and lock (a port it cannot reserve is logged, and kept anyway: the
    /// instance listens there).
    pub(crate) fn adopt(
        &self,
        found: &[(u32, u16, Found)],
        ctx: &SpawnContext,
    ) -> Result<Vec<Arc<Member>>, String> {
        *self.ctx.lock().unwrap_or_else(PoisonError::into_inner) = Some(ctx.clone());
        let backend = ctx.backends.for_spec(&self.spec)?;
        let mut adopted = Vec::new();
        for (index, port, what) in found {
            let (index, port) = (*index, *port);
            self.next_index.fetch_max(index + 1, Ordering::SeqCst);
            // A swarm task has no port here: its seat gets a lease like a new one.
            let lease = match what {
                Found::SwarmService { .. } => ctx.ports.allocate(),
                _ => ctx.ports.adopt(port),
            };
            let port = lease.as_ref().map_or(port, PortLease::port);
            let lease = match lease {
                Ok(lease) => Some(lease),
                Err(e) => {
                    super::log(&format!(
                        "{}/{} {}: instance {index} keeps port {port} unreserved: {e}",
                        self.spec.env, self.spec.service, self.spec.release
                    ));
                    None
                }
            };
            let instance = backend.adopt(
                self.instance_spec(index, port, ctx),
                RestartPolicy::default(),
                what,
            );
            adopted.push(Arc::new(Member::new(
                index,
                port,
                instance,
                &self.spec.health,
                lease,
            )));
        }
        self.lock().extend(adopted.iter().cloned());
        Ok(adopted)
    }

    /// Takes up to `n` members out (the oldest first) and returns them; the caller reroutes,
    /// drains and stops them.
    pub(crate) fn take(&self, n: u32) -> Vec<Arc<Member>> {
        let mut members = self.lock();
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(members.len());
        members.drain(..n).collect()
    }

    /// Takes `members` out of the set (those still in it).
    pub(crate) fn remove(&self, members: &[Arc<Member>]) {
        self.lock()
            .retain(|m| !members.iter().any(|x| Arc::ptr_eq(x, m)));
    }

    /// Turns crash restarts on or off for every member.
    pub(crate) fn set_restart(&self, on: bool) {
        for m in self.lock().iter() {
            m.instance.set_restart(on);
        }
    }

    /// Stops every member.
    pub(crate) async fn stop(&self) {
        let members = std::mem::take(&mut *self.lock());
        stop_members(&members).await;
    }

    /// Waits until every one of `members` is ready, or says why one never will be; returns
    /// the members then (one whose port was taken has been replaced by another). Woken by the
    /// probes' and instances' watch channels, so a flip is seen at once (an exit fails at
    /// once).
    ///
    /// A member is *starting* until its first passing probe: failed probes then mean "not
    /// yet", and it fails only by exiting or by not being ready within the health's
    /// `ready_timeout`.
    pub(crate) async fn wait_ready(
        &self,
        members: &[Arc<Member>],
    ) -> Result<Vec<Arc<Member>>, String> {
        let mut members = members.to_vec();
        let mut retries = 0;
        loop {
            match self.wait_once(&members).await {
                Verdict::Ready => return Ok(members),
                Verdict::Failed(why) => return Err(why),
                Verdict::PortTaken(i) if retries < PORT_RETRIES => {
                    retries += 1;
                    let old = Arc::clone(&members[i]);
                    super::log(&format!(
                        "{}/{} {}: instance {} could not bind port {}; moving it to another port",
                        self.spec.env, self.spec.service, self.spec.release, old.index, old.port
                    ));
                    members[i] = self.replace(&old).await?;
                }
                Verdict::PortTaken(i) => {
                    let what =
                        format!("could not bind its port ({} ports tried)", PORT_RETRIES + 1);
                    return Err(self.reason(&members[i], &what));
                }
            }
        }
    }

    /// Waits until `members` are decided.
    async fn wait_once(&self, members: &[Arc<Member>]) -> Verdict {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut forwarders = Vec::new();
        for m in members {
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
        let ready_timeout = self.spec.health.ready_timeout;
        let verdict = loop {
            match self.readiness(members) {
                Some(v) => break v,
                None => {
                    // A missed notification cannot stall the wait: look again at least every
                    // half second, and when the first `ready_timeout` runs out.
                    let next_deadline = members
                        .iter()
                        .map(|m| {
                            (m.started + ready_timeout).saturating_duration_since(Instant::now())
                        })
                        .min()
                        .unwrap_or(WAIT_EVERY);
                    let wait = WAIT_EVERY.min(next_deadline + Duration::from_millis(1));
                    let _ = tokio::time::timeout(wait, rx.recv()).await;
                }
            }
        };
        for f in forwarders {
            f.abort();
        }
        verdict
    }

    /// `Some(Ready)` when every member is ready, `Some(Failed(why))` when one never will be,
    /// `Some(PortTaken(i))` when member `i` exited because its port was taken, `None` while
    /// undecided.
    fn readiness(&self, members: &[Arc<Member>]) -> Option<Verdict> {
        let mut ready = 0;
        let ready_timeout = self.spec.health.ready_timeout;
        for (i, m) in members.iter().enumerate() {
            match m.instance.state() {
                InstanceState::Exited { code, signal, .. } => {
                    if m.port_taken() {
                        return Some(Verdict::PortTaken(i));
                    }
                    let how = crate::supervisor::describe_exit(code, signal)
                        .unwrap_or_else(|| "exited".to_string());
                    let why = self.reason(m, &format!("{how} before it became ready"));
                    return Some(Verdict::Failed(why));
                }
                InstanceState::Stopped => {
                    let why = self.reason(m, "was stopped before it became ready");
                    return Some(Verdict::Failed(why));
                }
                _ => {}
            }
            if m.probe.ready() {
                ready += 1;
            } else if !m.probe.live() {
                let why = self.reason(m, "was ready, then failed its probes");
                return Some(Verdict::Failed(why));
            } else if m.started.elapsed() >= ready_timeout {
                let last = m
                    .probe
                    .status()
                    .last()
                    .map_or_else(|| "none yet".to_string(), |r| r.detail.clone());
                let why = self.reason(
                    m,
                    &format!(
                        "was not ready within {} (ready_timeout); last probe: {last}",
                        format_duration(ready_timeout)
                    ),
                );
                return Some(Verdict::Failed(why));
            }
        }
        (ready == members.len()).then_some(Verdict::Ready)
    }

    /// `Err(why)` for the first member that does not run now: it crashed (or was restarted)
    /// since it was ready. Its probe may still call it ready until its failures add up, so a
    /// strategy checks this too before it makes the set live.
    pub(crate) fn all_running(&self) -> Result<(), String> {
        for m in self.members() {
            let what = match m.instance.state() {
                InstanceState::Running { .. } => continue,
                InstanceState::Backoff { last_exit, .. } => {
                    format!("{last_exit} after it became ready (it is restarting)")
                }
                InstanceState::Exited { .. } => format!(
                    "{} after it became ready",
                    m.instance
                        .last_exit()
                        .unwrap_or_else(|| "exited".to_string())
                ),
                InstanceState::Starting => "was restarted after it became ready".to_string(),
                InstanceState::Stopped => "was stopped after it became ready".to_string(),
            };
            return Err(self.reason(&m, &what));
        }
        Ok(())
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

/// How a wait for readiness ended.
enum Verdict {
    Ready,
    Failed(String),
    /// The member at this position exited because its port was taken.
    PortTaken(usize),
}

/// How often a wait for readiness says who is still starting.
const REPORT_STARTING_EVERY: Duration = Duration::from_secs(2);
/// How often the instances' states are looked at for events.
const REPORT_UNITS_EVERY: Duration = Duration::from_millis(50);

/// What the reporter last saw of each member.
type SeenMembers = Arc<Mutex<Vec<(Arc<Member>, Seen)>>>;

/// What the reporter last saw of one member.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    running: bool,
    ready: bool,
    ended: bool,
}

/// While the returned guard lives, reports what the instances of `set` do as typed events:
/// [`DeployProgress::InstanceStarted`], [`DeployProgress::InstanceReady`],
/// [`DeployProgress::ProbeFailed`] (a ready instance's probes flipped),
/// [`DeployProgress::InstanceExited`], and every [`REPORT_STARTING_EVERY`]
/// [`DeployProgress::Waiting`] with the instances not ready yet (who is slow, and why). When
/// the guard drops, the last changes are still reported.
pub(crate) fn report_starting(
    set: Arc<ReleaseSet>,
    progress: mpsc::UnboundedSender<DeployProgress>,
) -> Reporting {
    let stop = tokio_util::sync::CancellationToken::new();
    let seen: SeenMembers = Arc::new(Mutex::new(Vec::new()));
    let guard = Reporting {
        stop: stop.clone(),
        set: Arc::clone(&set),
        seen: Arc::clone(&seen),
        progress: progress.clone(),
    };
    tokio::spawn(async move {
        let mut last_waiting = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REPORT_UNITS_EVERY) => {}
            }
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if stop.is_cancelled() || !unit_events(&set, &mut seen, &progress) {
                return;
            }
            drop(seen);
            if last_waiting.elapsed() >= REPORT_STARTING_EVERY {
                last_waiting = Instant::now();
                if !waiting(&set, &progress) {
                    return;
                }
            }
        }
    });
    guard
}

/// The reporter of [`report_starting`]; dropping it stops reporting, [`Reporting::finish`]
/// first reports the last changes (so they come before whatever the caller sends next).
pub(crate) struct Reporting {
    stop: tokio_util::sync::CancellationToken,
    set: Arc<ReleaseSet>,
    seen: SeenMembers,
    progress: mpsc::UnboundedSender<DeployProgress>,
}

impl Reporting {
    /// Reports what changed since the last look, then stops.
    pub(crate) fn finish(self) {
        self.stop.cancel();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        unit_events(&self.set, &mut seen, &self.progress);
    }
}

impl Drop for Reporting {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sends the events of what changed in `set` since `seen`; false once nobody listens.
fn unit_events(
    set: &ReleaseSet,
    seen: &mut Vec<(Arc<Member>, Seen)>,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) -> bool {
    let release = &set.spec.release;
    for m in set.members() {
        let at = match seen.iter().position(|(x, _)| Arc::ptr_eq(x, &m)) {
            Some(at) => at,
            None => {
                seen.push((Arc::clone(&m), Seen::default()));
                seen.len() - 1
            }
        };
        let before = seen[at].1;
        let state = m.instance.state();
        let now = Seen {
            running: before.running || state.is_running(),
            ready: m.ready(),
            ended: state.is_ended(),
        };
        let mut events = Vec::new();
        if now.running && !before.running {
            events.push(DeployProgress::InstanceStarted {
                release: release.clone(),
                index: m.index,
                unit: m.instance.describe(),
                port: m.port,
            });
        }
        if now.ready && !before.ready {
            events.push(DeployProgress::InstanceReady {
                release: release.clone(),
                index: m.index,
            });
        }
        if before.ready && !now.ready && !now.ended {
            let detail = m.probe.status().last().map(|r| r.detail.clone());
            events.push(DeployProgress::ProbeFailed {
                release: release.clone(),
                index: m.index,
                detail: detail.unwrap_or_default(),
            });
        }
        if now.ended && !before.ended {
            events.push(DeployProgress::InstanceExited {
                release: release.clone(),
                index: m.index,
                reason: m
                    .instance
                    .last_exit()
                    .unwrap_or_else(|| "stopped".to_string()),
            });
        }
        seen[at].1 = now;
        for e in events {
            if progress.send(e).is_err() {
                return false;
            }
        }
    }
    true
}

/// Sends [`DeployProgress::Waiting`] for the members of `set` not ready yet; false once nobody
/// listens.
fn waiting(set: &ReleaseSet, progress: &mpsc::UnboundedSender<DeployProgress>) -> bool {
    let now = chrono::Utc::now();
    let starting: Vec<crate::api::types::StartingInstance> = set
        .members()
        .iter()
        .filter(|m| !m.ready())
        .map(|m| {
            let since = match m.instance.state() {
                InstanceState::Running { since, .. } => Some(since),
                _ => None,
            };
            crate::api::types::StartingInstance {
                index: m.index,
                seconds: since
                    .and_then(|s| (now - s).to_std().ok())
                    .map_or(0, |d| d.as_secs()),
                last_probe: m.probe.status().last().map(|r| r.detail.clone()),
                ready_timeout_seconds: set.spec.health.ready_timeout.as_secs(),
            }
        })
        .collect();
    starting.is_empty() || progress.send(DeployProgress::Waiting { starting }).is_ok()
}

/// Stops `members`, all at once.
pub(crate) async fn stop_members(members: &[Arc<Member>]) {
    let mut stops = tokio::task::JoinSet::new();
    for m in members {
        let m = Arc::clone(m);
        stops.spawn(async move { m.stop().await });
    }
    while stops.join_next().await.is_some() {}
}

/// What the swarm service of `spec`'s release runs: every task gets the same environment, its
/// slot as `CUTOVER_INSTANCE` (a swarm template).
fn swarm_run(
    spec: &ReleaseSpec,
    c: &crate::api::types::ContainerSpec,
    s: &crate::api::types::SwarmSpec,
    env: &[(String, String)],
    ctx: &SpawnContext,
) -> crate::target::swarm::SwarmRun {
    let env_vars = env
        .iter()
        .map(|(k, v)| {
            if k == INSTANCE_VAR {
                (k.clone(), "{{.Task.Slot}}".to_string())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let h = &spec.health;
    // What the probe needs to call a task ready, and some room: swarm waits this long between
    // batches, so a batch is ready before the next one replaces more.
    let ready = h.initial_delay + h.period * h.success_threshold.max(1) + Duration::from_secs(1);
    crate::target::swarm::SwarmRun {
        project: c.project.clone(),
        env: spec.env.clone(),
        service: spec.service.clone(),
        release: spec.release.clone(),
        image: c.image.clone(),
        command: spec.run.clone(),
        env_vars,
        container_port: c.container_port,
        agent: ctx.socket.display().to_string(),
        spec: s.clone(),
        rolling: spec.strategy == crate::api::types::Strategy::Rolling,
        batch: spec.batch.max(1),
        delay: ready.max(Duration::from_secs(1)).min(h.ready_timeout),
        monitor: (ready * 2).max(Duration::from_secs(5)),
        stop_grace: Duration::from_millis(spec.drain_timeout_ms).max(Duration::from_secs(1)),
    }
}
