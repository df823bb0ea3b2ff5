//! The local target: a unit is a process group the supervisor owns.

use std::sync::Arc;

use super::{Backend, Found, Supervised, Unit};
use crate::probe::OwnerCheck;
use crate::supervisor::lifecycle::Handle;
use crate::supervisor::{Instance, InstanceSpec, InstanceState, RestartPolicy};

/// Local processes, supervised by the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&self, spec: InstanceSpec, policy: RestartPolicy) -> Arc<dyn Unit> {
        Arc::new(Instance::spawn(spec, policy))
    }

    fn adopt(&self, spec: InstanceSpec, policy: RestartPolicy, found: &Found) -> Arc<dyn Unit> {
        match found {
            Found::Process(pid) => Arc::new(Instance::adopt(spec, policy, *pid)),
            // Not a process: start one instead (the caller only hands its own kind).
            Found::Container { .. } | Found::SwarmService { .. } => {
                Arc::new(Instance::spawn(spec, policy))
            }
        }
    }
}

impl Supervised for Instance {
    fn handle(&self) -> &Handle {
        Instance::handle(self)
    }

    /// The socket answering on `port` must belong to the instance's process group.
    fn owner_check(&self, port: u16, index: u32) -> Option<OwnerCheck> {
        let state = Instance::watch(self);
        Some(Arc::new(move || {
            let pid = match *state.borrow() {
                InstanceState::Running { pid, .. } => pid,
                _ => return Err(format!("instance {index} is not running")),
            };
            crate::owner::check(port, pid, &format!("instance {index}"))
        }))
    }

    fn describe(&self) -> String {
        Instance::pid(self).map_or_else(|| "no process".to_string(), |p| format!("pid {p}"))
    }
}
