//! The swarm target: a release set is a swarm service, its instances are the service's tasks,
//! on any node of the swarm, driven through a manager's Docker API (bollard).
//!
//! # Layout
//! - `mod.rs`: [`SwarmBackend`] (one per manager) and the registry of the services it drives.
//! - `service.rs`: one swarm service ([`service::SwarmService`]): its spec, its replicas, its
//!   rolling updates, and the reconciler that binds its tasks to seats.
//! - `seat.rs`: a seat as a [`super::Unit`]: what the strategies see of one task.
//!
//! # Theory of operation
//! The agent asks for instances one at a time ([`super::Backend::start`]); on swarm each one is
//! a *seat* in the swarm service of its release, and the service's replicas are its seats. A
//! reconciler per service polls the manager's task list and binds each seat to a running task
//! of its release (the release is the task's `cutover.release` label); the seat's address is
//! the task's node address (`node inspect` `.Status.Addr`) and host-mode published port, and
//! follows the task when swarm reschedules it. The agent's probe and proxy go to that address,
//! so the strategies run unchanged: blue-green and canary run two services side by side (the
//! second named with a release suffix); a rolling deploy updates the one service in place with
//! swarm's own update (start-first, rollback on failure) and follows its `UpdateStatus`.

mod seat;
pub(crate) mod service;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::docker::Engine;
use super::{Backend, Found, Unit};
use crate::supervisor::{InstanceSpec, RestartPolicy};

pub use service::{RollOutcome, SwarmRun, SwarmService, TaskView};

/// The swarm target on one manager.
#[derive(Debug)]
pub struct SwarmBackend {
    engine: Arc<Engine>,
    /// The services this agent drives, by (environment, service, release): a rolling deploy's
    /// new release shares the entry of the service it updates.
    services: Mutex<BTreeMap<(String, String, String), Arc<service::SwarmService>>>,
}

impl SwarmBackend {
    /// The backend for the manager at `host` (connects lazily).
    pub fn connect(host: &str) -> Result<SwarmBackend, String> {
        Ok(SwarmBackend {
            engine: Arc::new(Engine::connect(host)?),
            services: Mutex::new(BTreeMap::new()),
        })
    }

    /// The manager's engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The service that runs `run`'s release: the one already known, the live one a rolling
    /// deploy updates in place, else a new one (the running one named `adopt`, when given).
    fn service_for(&self, run: &SwarmRun, adopt: Option<&str>) -> Arc<service::SwarmService> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.retain(|_, s| !s.is_gone());
        let key = (run.env.clone(), run.service.clone(), run.release.clone());
        if let Some(s) = services.get(&key) {
            return Arc::clone(s);
        }
        // A rolling deploy updates the service of the release it replaces in place.
        if run.rolling
            && adopt.is_none()
            && let Some(live) = services
                .iter()
                .filter(|((e, s, _), svc)| {
                    *e == run.env && *s == run.service && svc.has_current_seats()
                })
                .map(|(_, svc)| Arc::clone(svc))
                .next()
        {
            live.roll_to(run.clone());
            services.insert(key, Arc::clone(&live));
            return live;
        }
        let taken: Vec<String> = services.values().filter_map(|s| s.name()).collect();
        let svc =
            service::SwarmService::spawn(Arc::clone(&self.engine), run.clone(), adopt, &taken);
        services.insert(key, Arc::clone(&svc));
        svc
    }

    /// The service running `release` of (`env`, `service`), if this agent drives one.
    pub fn service(
        &self,
        env: &str,
        service: &str,
        release: &str,
    ) -> Option<Arc<service::SwarmService>> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(env.to_string(), service.to_string(), release.to_string()))
            .cloned()
    }

    /// Removes the swarm service `name` (an earlier agent's, not to be adopted).
    pub async fn remove(&self, name: &str) {
        if let Ok(client) = self.engine.client().await {
            match client.delete_service(name).await {
                Ok(()) => crate::agent::log(&format!("swarm service {name}: removed")),
                Err(e) => crate::agent::log(&format!("swarm service {name}: not removed: {e}")),
            }
        }
    }

    /// The swarm services an agent on `socket` created on this swarm: `(env, service,
    /// release, name, replicas)` each, from their labels.
    pub async fn leftovers(
        &self,
        socket: &std::path::Path,
    ) -> Result<Vec<(String, String, String, String, u32)>, String> {
        service::leftovers(&self.engine, socket).await
    }
}

impl SwarmBackend {
    /// A seat for `spec` in its release's service (the running one named `adopt`, if given).
    fn seat(&self, spec: &InstanceSpec, adopt: Option<&str>) -> Arc<dyn Unit> {
        match spec.container.as_ref().and_then(|c| c.swarm.clone()) {
            Some(run) => Arc::new(seat::Seat::join(self.service_for(&run, adopt), spec)),
            None => Arc::new(seat::Seat::failed(
                spec,
                "no swarm service described for this instance",
            )),
        }
    }
}

impl Backend for SwarmBackend {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn start(&self, spec: InstanceSpec, _policy: RestartPolicy) -> Arc<dyn Unit> {
        self.seat(&spec, None)
    }

    fn adopt(&self, spec: InstanceSpec, _policy: RestartPolicy, found: &Found) -> Arc<dyn Unit> {
        let name = match found {
            Found::SwarmService { name, .. } => Some(name.as_str()),
            _ => None,
        };
        self.seat(&spec, name)
    }
}
