//! Targets: what an instance is, behind one seam.
//!
//! The agent's strategies (blue-green, rolling, canary with analysis, immediate), drains,
//! warm rollback and recovery see instances only through [`Unit`]: a handle whose state they
//! watch, that they stop, restart and read the last log lines of. A target is a [`Backend`]
//! that starts units of a release and finds the ones an earlier agent left running; each
//! target is one folder here, registered in [`Backends::for_spec`].
//!
//! # Layout
//! - `process.rs`: the local target: a unit is a supervised process group
//!   ([`crate::supervisor::Instance`]).
//! - `docker/`: the Docker target: a unit is a container on a Docker Engine (bollard), its port
//!   published on 127.0.0.1; images are built from the service's Dockerfile.
//! - `swarm/`: the swarm target: a unit is a seat in a swarm service, bound to one of its
//!   tasks, reached at the task's node address and host-mode published port.
//! - `fake.rs` (tests only): a unit is an HTTP server inside the test process, scripted per
//!   release, so the strategies get fast unit tests (`Backends::only`).

pub mod docker;
#[cfg(test)]
pub(crate) mod fake;
mod process;
pub mod swarm;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::types::ReleaseSpec;
use crate::probe::OwnerCheck;
use crate::supervisor::{InstanceSpec, InstanceState, RestartPolicy};

pub use process::ProcessBackend;

/// A boxed future, for the trait methods that wait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One instance of a release on some target, as the strategies see it.
///
/// Starting never fails synchronously: a unit that cannot start reports it as an exit
/// (state `Exited`, [`Unit::last_exit`], a `cutover:` line in its log).
pub trait Unit: Send + Sync {
    /// The current state.
    fn state(&self) -> InstanceState;
    /// A receiver of the state; `changed()` wakes on each transition.
    fn watch(&self) -> watch::Receiver<InstanceState>;
    /// The process id while running (for a container: its main process on the host).
    fn pid(&self) -> Option<u32> {
        match self.state() {
            InstanceState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }
    /// Restarts so far.
    fn restarts(&self) -> u32;
    /// Whether it restarts in a loop.
    fn crash_looping(&self) -> bool;
    /// How the last run ended, in words.
    fn last_exit(&self) -> Option<String>;
    /// Turns restarting after a crash on or off.
    fn set_restart(&self, on: bool);
    /// Whether crash restarts are on.
    fn restart_enabled(&self) -> bool;
    /// Restarts now (liveness failed).
    fn restart(&self);
    /// Stops for good, `grace` between the polite and the hard end; idempotent.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()>;
    /// The last `n` output lines, oldest first.
    fn last_lines(&self, n: usize) -> Vec<String>;
    /// What the unit's probe checks before it believes an answer on `port` is the unit's own
    /// (`None`: nothing to check, e.g. a published container port only the engine serves).
    fn owner_check(&self, port: u16, index: u32) -> Option<OwnerCheck>;
    /// Where it runs, for `status` and logs ("pid 123", "container 3f2a…").
    fn describe(&self) -> String;
    /// For a unit that is not on `127.0.0.1:<its port>` (a swarm task at its node's address,
    /// which moves when swarm reschedules it): where it is now, `None` while no task runs.
    fn address(&self) -> Option<watch::Receiver<Option<std::net::SocketAddr>>> {
        None
    }
    /// The machine it runs on, when that is not this one (a swarm node's host name).
    fn node(&self) -> Option<String> {
        None
    }
}

/// A unit whose runs the supervisor's lifecycle owns (`supervisor/lifecycle.rs`): it gives its
/// handle, and [`Unit`] follows from it.
pub(crate) trait Supervised: Send + Sync {
    /// The lifecycle's handle.
    fn handle(&self) -> &crate::supervisor::lifecycle::Handle;
    /// See [`Unit::owner_check`].
    fn owner_check(&self, port: u16, index: u32) -> Option<OwnerCheck>;
    /// See [`Unit::describe`].
    fn describe(&self) -> String;
    /// Called once a stop asked through [`Unit::stop`] has been carried out.
    fn stopped(&self) {}
}

impl<T: Supervised> Unit for T {
    fn state(&self) -> InstanceState {
        self.handle().state()
    }

    fn watch(&self) -> watch::Receiver<InstanceState> {
        self.handle().watch()
    }

    fn restarts(&self) -> u32 {
        self.handle().restarts()
    }

    fn crash_looping(&self) -> bool {
        self.handle().crash_looping()
    }

    fn last_exit(&self) -> Option<String> {
        self.handle().last_exit()
    }

    fn set_restart(&self, on: bool) {
        self.handle().set_restart(on);
    }

    fn restart_enabled(&self) -> bool {
        self.handle().restart_enabled()
    }

    fn restart(&self) {
        self.handle().restart();
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let was_stopped = self.handle().state() == InstanceState::Stopped;
            self.handle().stop(grace).await;
            if !was_stopped {
                self.stopped();
            }
        })
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        self.handle().last_lines(n)
    }

    fn owner_check(&self, port: u16, index: u32) -> Option<OwnerCheck> {
        Supervised::owner_check(self, port, index)
    }

    fn describe(&self) -> String {
        Supervised::describe(self)
    }
}

/// What a target found running that an earlier agent started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A process group leader.
    Process(u32),
    /// A container on the engine at `host`.
    Container {
        /// The engine.
        host: String,
        /// The container id.
        id: String,
    },
    /// A seat in a swarm service an earlier agent created (its tasks run on).
    SwarmService {
        /// The manager's API.
        host: String,
        /// The swarm service's name.
        name: String,
    },
}

/// A target: starts and adopts units.
pub trait Backend: Send + Sync {
    /// The target's name as `cutover.toml` spells it.
    fn name(&self) -> &'static str;
    /// Starts one unit (restart per `policy`).
    fn start(&self, spec: InstanceSpec, policy: RestartPolicy) -> Arc<dyn Unit>;
    /// Takes over `found`, which an earlier agent started for `spec`.
    fn adopt(&self, spec: InstanceSpec, policy: RestartPolicy, found: &Found) -> Arc<dyn Unit>;
}

/// The targets the agent drives, one backend per engine.
#[derive(Clone, Default)]
pub struct Backends {
    docker: Arc<Mutex<BTreeMap<String, Arc<docker::DockerBackend>>>>,
    swarm: Arc<Mutex<BTreeMap<String, Arc<swarm::SwarmBackend>>>>,
    /// Tests only: the backend every release runs on, whatever its target.
    #[cfg(test)]
    only: Option<Arc<dyn Backend>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// The backend that runs `spec`'s instances: the Docker Engine its container spec names,
    /// else local processes.
    pub fn for_spec(&self, spec: &ReleaseSpec) -> Result<Arc<dyn Backend>, String> {
        #[cfg(test)]
        if let Some(b) = &self.only {
            return Ok(Arc::clone(b));
        }
        match &spec.container {
            None => Ok(Arc::new(ProcessBackend)),
            Some(c) if c.swarm.is_some() => Ok(self.swarm(&c.host)? as Arc<dyn Backend>),
            Some(c) => Ok(self.docker(&c.host)? as Arc<dyn Backend>),
        }
    }

    /// The swarm backend for the manager at `host` (one per manager).
    pub fn swarm(&self, host: &str) -> Result<Arc<swarm::SwarmBackend>, String> {
        let mut managers = self.swarm.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = managers.get(host) {
            return Ok(Arc::clone(b));
        }
        let backend = Arc::new(swarm::SwarmBackend::connect(host)?);
        managers.insert(host.to_string(), Arc::clone(&backend));
        Ok(backend)
    }

    /// Backends that run every release on `backend` (tests drive the strategies on a fake
    /// target this way).
    #[cfg(test)]
    pub(crate) fn only(backend: Arc<dyn Backend>) -> Backends {
        Backends {
            only: Some(backend),
            ..Backends::default()
        }
    }

    /// The Docker backend for the engine at `host` (one client per engine).
    pub fn docker(&self, host: &str) -> Result<Arc<docker::DockerBackend>, String> {
        let mut engines = self.docker.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = engines.get(host) {
            return Ok(Arc::clone(b));
        }
        let backend = Arc::new(docker::DockerBackend::connect(host)?);
        engines.insert(host.to_string(), Arc::clone(&backend));
        Ok(backend)
    }
}
