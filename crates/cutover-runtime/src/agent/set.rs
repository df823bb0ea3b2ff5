//! A release set: the instances of one release of one service, each with its probe.
//!
//! Its members can grow and shrink (a rolling update adds new instances and removes old ones a
//! batch at a time); everything else about the set is fixed by its [`ReleaseSpec`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::AGENT_MARK;
use crate::api::types::ReleaseSpec;
use crate::probe::Probe;
use crate::supervisor::{Instance, InstanceSpec, InstanceState, RestartPolicy, free_port};

/// The variable carrying an instance's index (read back when a restarted agent adopts it).
pub(crate) const INSTANCE_VAR: &str = "CUTOVER_INSTANCE";
/// How long an instance gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest a wait for readiness goes between two looks at the instances (it is woken by
/// their watch channels first).
const WAIT_EVERY: Duration = Duration::from_millis(500);

/// Where instances log and how they are marked as this agent's.
#[derive(Debug, Clone)]
pub(crate) struct SpawnContext {
    /// The project's `.cutover/`.
    pub(crate) state_dir: PathBuf,
    /// The agent's socket (the value of [`AGENT_MARK`]).
    pub(crate) socket: PathBuf,
}

/// One running instance with its probe.
pub(crate) struct Member {
    pub(crate) index: u32,
    pub(crate) port: u16,
    pub(crate) instance: Instance,
    pub(crate) probe: Probe,
}

impl Member {
    /// A member for `instance`, probed on its port from now on.
    fn new(index: u32, port: u16, instance: Instance, health: &cutover_config::Health) -> Member {
        let probe = Probe::spawn(health.clone(), SocketAddr::from(([127, 0, 0, 1], port)));
        Member {
            index,
            port,
            instance,
            probe,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn ready(&self) -> bool {
        self.probe.ready() && self.instance.state().is_running()
    }

    async fn stop(&self) {
        self.probe.stop();
        self.instance.stop(STOP_GRACE).await;
    }
}

/// The instances of one release of one service.
pub(crate) struct ReleaseSet {
    pub(crate) spec: ReleaseSpec,
    members: Mutex<Vec<Arc<Member>>>,
    next_index: AtomicU32,
}

impl ReleaseSet {
    /// A set with no instance yet.
    pub(crate) fn new(spec: ReleaseSpec) -> ReleaseSet {
        ReleaseSet {
            spec,
            members: Mutex::new(Vec::new()),
            next_index: AtomicU32::new(0),
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
        let spec = &self.spec;
        let mut started = Vec::new();
        for _ in 0..n {
            let index = self.next_index.fetch_add(1, Ordering::SeqCst);
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    self.lock().extend(started.iter().cloned());
                    return Err(format!("no free port for an instance: {e}"));
                }
            };
            let instance = Instance::spawn(
                self.instance_spec(index, port, ctx),
                RestartPolicy {
                    restart: false,
                    ..RestartPolicy::default()
                },
            );
            started.push(Arc::new(Member::new(index, port, instance, &spec.health)));
        }
        self.lock().extend(started.iter().cloned());
        Ok(started)
    }

    /// What instance `index` of this release runs, on `port`.
    fn instance_spec(&self, index: u32, port: u16, ctx: &SpawnContext) -> InstanceSpec {
        let spec = &self.spec;
        let mut env: Vec<(String, String)> = spec
            .env_vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        env.push(("PORT".into(), port.to_string()));
        env.push(("CUTOVER_SERVICE".into(), spec.service.clone()));
        env.push(("CUTOVER_RELEASE".into(), spec.release.clone()));
        env.push(("CUTOVER_ENV".into(), spec.env.clone()));
        env.push((INSTANCE_VAR.into(), index.to_string()));
        env.push((AGENT_MARK.into(), ctx.socket.display().to_string()));
        InstanceSpec {
            service: spec.service.clone(),
            release: spec.release.clone(),
            index,
            command: spec.run.clone(),
            dir: spec.dir.clone(),
            env,
            port,
            log: ctx
                .state_dir
                .join("logs")
                .join("services")
                .join(&spec.service)
                .join(format!("{}.log", spec.release)),
            redact: spec
                .env_vars
                .iter()
                .filter(|v| v.secret.is_some())
                .map(|v| v.value.clone())
                .collect(),
        }
    }

    /// Takes over instances of this release that an earlier agent started (`(index, port,
    /// pid)` each), restarts on; returns them.
    pub(crate) fn adopt(&self, found: &[(u32, u16, u32)], ctx: &SpawnContext) -> Vec<Arc<Member>> {
        let mut adopted = Vec::new();
        for &(index, port, pid) in found {
            self.next_index.fetch_max(index + 1, Ordering::SeqCst);
            let instance = Instance::adopt(
                self.instance_spec(index, port, ctx),
                RestartPolicy::default(),
                pid,
            );
            adopted.push(Arc::new(Member::new(
                index,
                port,
                instance,
                &self.spec.health,
            )));
        }
        self.lock().extend(adopted.iter().cloned());
        adopted
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

    /// Waits until every one of `members` is ready, or says why one never will be. Woken by
    /// the probes' and instances' watch channels, so a flip is seen at once (an exit fails at
    /// once).
    pub(crate) async fn wait_ready(&self, members: &[Arc<Member>]) -> Result<(), String> {
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
        let verdict = loop {
            match self.readiness(members) {
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
    fn readiness(&self, members: &[Arc<Member>]) -> Option<Result<(), String>> {
        let mut ready = 0;
        for m in members {
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
            if m.probe.ready() {
                ready += 1;
            } else if !m.probe.live() {
                return Some(Err(self.reason(m, "never became healthy")));
            }
        }
        (ready == members.len()).then_some(Ok(()))
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

/// Stops `members`, all at once.
pub(crate) async fn stop_members(members: &[Arc<Member>]) {
    let mut stops = tokio::task::JoinSet::new();
    for m in members {
        let m = Arc::clone(m);
        stops.spawn(async move { m.stop().await });
    }
    while stops.join_next().await.is_some() {}
}
