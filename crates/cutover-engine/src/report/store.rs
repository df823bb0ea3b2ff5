//! Records phases and lifecycle events in the release store (command output is left to the
//! log files).

use std::sync::Arc;

use cutover_store::ReleaseStore;

use super::Reporter;
use crate::event::{Event, EventKind};

/// Writes events and release phases to the store.
pub struct StoreReporter {
    store: Arc<dyn ReleaseStore>,
}

impl StoreReporter {
    /// A reporter writing to `store`.
    pub fn new(store: Arc<dyn ReleaseStore>) -> Self {
        StoreReporter { store }
    }
}

impl Reporter for StoreReporter {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        if let EventKind::PhaseChanged {
            service,
            release,
            phase,
            reason,
        } = &event.kind
        {
            self.store
                .set_phase(service, release, *phase, reason.as_deref(), event.at)
                .map_err(|e| format!("recording {service} {release} as {phase}: {e}"))?;
        }
        if matches!(event.kind, EventKind::Output { .. }) {
            return Ok(());
        }
        let data = serde_json::to_value(event).map_err(|e| format!("encoding an event: {e}"))?;
        self.store
            .append_event(
                &event.run,
                event.at,
                event.kind.service(),
                event.kind.name(),
                &data,
            )
            .map_err(|e| format!("recording an event: {e}"))
    }
}
