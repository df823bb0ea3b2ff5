//! The local target: a unit is a process group the supervisor owns.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Backend, BoxFuture, Found, Unit};
use crate::probe::OwnerCheck;
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
            Found::Container { .. } => Arc::new(Instance::spawn(spec, policy)),
        }
    }
}

impl Unit for Instance {
    fn state(&self) -> InstanceState {
        Instance::state(self)
    }

    fn watch(&self) -> watch::Receiver<InstanceState> {
        Instance::watch(self)
    }

    fn pid(&self) -> Option<u32> {
        Instance::pid(self)
    }

    fn restarts(&self) -> u32 {
        Instance::restarts(self)
    }

    fn crash_looping(&self) -> bool {
        Instance::crash_looping(self)
    }

    fn last_exit(&self) -> Option<String> {
        Instance::last_exit(self)
    }

    fn set_restart(&self, on: bool) {
        Instance::set_restart(self, on);
    }

    fn restart_enabled(&self) -> bool {
        Instance::restart_enabled(self)
    }

    fn restart(&self) {
        Instance::restart(self);
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(Instance::stop(self, grace))
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        Instance::last_lines(self, n)
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
