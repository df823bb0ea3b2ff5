//! A seat in a swarm service as a [`Unit`]: one instance of a release, bound by the service's
//! reconciler to one of its tasks (and to another when swarm replaces or moves that one).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::models::TaskState;
use bollard::query_parameters::LogsOptionsBuilder;
use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::service::{SwarmService, TaskView};
use crate::probe::OwnerCheck;
use crate::supervisor::logs::LogSink;
use crate::supervisor::{InstanceSpec, InstanceState};
use crate::target::docker::Engine;
use crate::target::{BoxFuture, Unit};

/// What a seat knows of its task.
#[derive(Default)]
struct Info {
    task: Option<String>,
    node: Option<String>,
    last_exit: Option<String>,
    restarts: u32,
    /// The failed task last reported (each is logged once).
    reported: Option<String>,
}

/// The seat's state, shared by the reconciler (which writes it) and the unit (which reads it).
pub(crate) struct SeatLink {
    state: watch::Sender<InstanceState>,
    addr: watch::Sender<Option<SocketAddr>>,
    info: Mutex<Info>,
    logs: Arc<LogSink>,
    follower: Mutex<Option<JoinHandle<()>>>,
    engine: Option<Arc<Engine>>,
    stopped: AtomicBool,
}

impl SeatLink {
    fn new(spec: &InstanceSpec, engine: Option<Arc<Engine>>) -> SeatLink {
        SeatLink {
            state: watch::channel(InstanceState::Starting).0,
            addr: watch::channel(None).0,
            info: Mutex::new(Info::default()),
            logs: Arc::new(LogSink::open(
                spec.log.clone(),
                spec.index,
                spec.redact.clone(),
            )),
            follower: Mutex::new(None),
            engine,
            stopped: AtomicBool::new(false),
        }
    }

    fn info(&self) -> MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Bound to task `t` (as it is now).
    pub(crate) fn bound(&self, t: &TaskView) {
        if self.stopped() {
            return;
        }
        {
            let mut info = self.info();
            if info.task.as_deref() != Some(t.id.as_str()) {
                if info.task.is_some() || info.reported.is_some() {
                    info.restarts += 1;
                }
                info.task = Some(t.id.clone());
                info.node = Some(t.node.clone());
                drop(info);
                self.logs.note(&format!(
                    "task {} (slot {}) on {}",
                    short(&t.id),
                    t.slot,
                    if t.node.is_empty() { "a node" } else { &t.node }
                ));
                self.follow(&t.id);
            } else if !t.node.is_empty() && info.node.as_deref() != Some(t.node.as_str()) {
                info.node = Some(t.node.clone());
            }
        }
        let running = t.state == TaskState::RUNNING && t.addr.is_some();
        self.addr
            .send_if_modified(|a| replace(a, if running { t.addr } else { None }));
        let next = if running {
            InstanceState::Running {
                pid: 0,
                since: t.at,
            }
        } else {
            InstanceState::Starting
        };
        self.set(next);
    }

    /// No task of its release is wanted for it now.
    pub(crate) fn unbind(&self) {
        if self.stopped() {
            return;
        }
        self.info().task = None;
        self.addr.send_if_modified(|a| replace(a, None));
        self.set(InstanceState::Starting);
    }

    /// The latest task of its release failed and none replaces it yet.
    pub(crate) fn task_failed(&self, t: &TaskView) {
        if self.stopped() {
            return;
        }
        let why = match (&t.err, t.exit_code) {
            (Some(err), _) => format!("its task {} failed: {err}", short(&t.id)),
            (None, Some(code)) => format!("its task {} exited with code {code}", short(&t.id)),
            (None, None) => format!("its task {} failed", short(&t.id)),
        };
        {
            let mut info = self.info();
            info.task = None;
            info.last_exit = Some(why.clone());
            if info.reported.as_deref() == Some(t.id.as_str()) {
                drop(info);
            } else {
                info.reported = Some(t.id.clone());
                drop(info);
                self.logs.failure(&why);
            }
        }
        self.addr.send_if_modified(|a| replace(a, None));
        self.set(InstanceState::Exited {
            code: t.exit_code.and_then(|c| i32::try_from(c).ok()),
            signal: None,
            at: t.at,
        });
    }

    /// It cannot run at all (the service could not be made).
    pub(crate) fn failed(&self, why: &str) {
        if self.stopped() {
            return;
        }
        let first = {
            let mut info = self.info();
            let first = info.last_exit.as_deref() != Some(why);
            info.last_exit = Some(why.to_string());
            first
        };
        if first {
            self.logs.failure(why);
        }
        self.set(InstanceState::Exited {
            code: None,
            signal: None,
            at: Utc::now(),
        });
    }

    fn set(&self, next: InstanceState) {
        self.state.send_if_modified(|s| {
            let same = match (&*s, &next) {
                (
                    InstanceState::Running { since: a, .. },
                    InstanceState::Running { since: b, .. },
                ) => a == b,
                (InstanceState::Exited { at: a, .. }, InstanceState::Exited { at: b, .. }) => {
                    a == b
                }
                (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
            };
            if same {
                return false;
            }
            *s = next;
            true
        });
    }

    /// Follows task `id`'s output into the release's log (the previous task's follower ends
    /// after a moment, so its last lines are kept).
    fn follow(&self, id: &str) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        let logs = Arc::clone(&self.logs);
        let id = id.to_string();
        let handle = tokio::spawn(async move {
            let Ok(client) = engine.client().await else {
                return;
            };
            let options = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            crate::target::docker::pipe_lines(client.task_logs(&id, Some(options)), &logs).await;
        });
        let previous = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(handle);
        if let Some(previous) = previous {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                previous.abort();
            });
        }
    }

    fn stop_following(&self) {
        if let Some(f) = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                f.abort();
            });
        }
    }
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        return false;
    }
    *slot = value;
    true
}

/// A task id as `docker service ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One instance on swarm.
pub(crate) struct Seat {
    svc: Option<Arc<SwarmService>>,
    id: u64,
    link: Arc<SeatLink>,
}

impl Seat {
    /// A seat for `spec` in `svc`.
    pub(crate) fn join(svc: Arc<SwarmService>, spec: &InstanceSpec) -> Seat {
        let link = Arc::new(SeatLink::new(spec, Some(Arc::clone(svc.engine()))));
        let id = svc.join(&spec.release, Arc::clone(&link));
        Seat {
            svc: Some(svc),
            id,
            link,
        }
    }

    /// A seat that cannot run, saying why.
    pub(crate) fn failed(spec: &InstanceSpec, why: &str) -> Seat {
        let link = Arc::new(SeatLink::new(spec, None));
        link.failed(why);
        Seat {
            svc: None,
            id: 0,
            link,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.link.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let (Some(svc), Ok(rt)) = (self.svc.clone(), tokio::runtime::Handle::try_current()) {
            let id = self.id;
            rt.spawn(async move { svc.leave(id).await });
        }
    }
}

impl Unit for Seat {
    fn state(&self) -> InstanceState {
        self.link.state.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<InstanceState> {
        self.link.state.subscribe()
    }

    fn restarts(&self) -> u32 {
        self.link.info().restarts
    }

    fn crash_looping(&self) -> bool {
        false
    }

    fn last_exit(&self) -> Option<String> {
        self.link.info().last_exit.clone()
    }

    fn set_restart(&self, _on: bool) {
        // Swarm restarts tasks itself (restart policy `any`).
    }

    fn restart_enabled(&self) -> bool {
        // The agent never restarts a task for a failed liveness probe: swarm owns the tasks.
        false
    }

    fn restart(&self) {
        self.link
            .logs
            .note("a restart was asked: swarm restarts its tasks itself");
    }

    fn stop(&self, _grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.link.stopped.swap(true, Ordering::SeqCst) {
                return;
            }
            self.link.addr.send_replace(None);
            self.link.state.send_replace(InstanceState::Stopped);
            if let Some(svc) = &self.svc {
                svc.leave(self.id).await;
            }
            self.link.stop_following();
        })
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        self.link.logs.last_lines(n)
    }

    fn owner_check(&self, _port: u16, _index: u32) -> Option<OwnerCheck> {
        None
    }

    fn describe(&self) -> String {
        let info = self.link.info();
        let addr = *self.link.addr.borrow();
        match (&info.task, &info.node, addr) {
            (Some(task), Some(node), Some(addr)) => {
                format!("task {} on {node} ({addr})", short(task))
            }
            (Some(task), Some(node), None) => format!("task {} on {node} (starting)", short(task)),
            _ => match self.svc.as_ref().and_then(|s| s.name()) {
                Some(name) => format!("swarm service {name}: no task yet"),
                None => "swarm: no service yet".to_string(),
            },
        }
    }

    fn address(&self) -> Option<watch::Receiver<Option<SocketAddr>>> {
        Some(self.link.addr.subscribe())
    }

    fn node(&self) -> Option<String> {
        self.link.info().node.clone().filter(|n| !n.is_empty())
    }
}
