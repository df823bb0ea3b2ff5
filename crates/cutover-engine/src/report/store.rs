//! Records phases and lifecycle events in the release store (command output is left to the
//! log files), one transaction per batch of events.

use std::sync::Arc;

use cutover_store::{ReleaseStore, StoreWrite};

use super::Reporter;
use crate::event::{Event, EventKind};

/// Writes events and release phases to the store.
pub struct StoreReporter {
    store: Arc<dyn ReleaseStore>,
    pending: Vec<StoreWrite>,
}

impl StoreReporter {
    /// A reporter writing to `store`.
    pub fn new(store: Arc<dyn ReleaseStore>) -> Self {
        StoreReporter {
            store,
            pending: Vec::new(),
        }
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
            self.pending.push(StoreWrite::Phase {
                service: service.clone(),
                release: release.clone(),
                phase: *phase,
                reason: reason.clone(),
                at: event.at,
            });
        }
        if matches!(event.kind, EventKind::Output { .. }) {
            return Ok(());
        }
        let data = serde_json::to_value(event).map_err(|e| format!("encoding an event: {e}"))?;
        self.pending.push(StoreWrite::Event {
            run_id: event.run.clone(),
            at: event.at,
            service: event.kind.service().map(str::to_string),
            kind: event.kind.name().to_string(),
            data,
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let errors = self
            .store
            .record(&batch)
            .map_err(|e| format!("recording events in the store: {e}"))?;
        match errors.first() {
            Some(e) => Err(format!("recording in the store: {e}")),
            None => Ok(()),
        }
    }
}
