//! `cutover test` in the store: a run of its own whose typed events are the checks, so the
//! event log (and whatever reads it, a dashboard) sees smoke tests as it sees deploys.

use chrono::{DateTime, Utc};
use cutover_store::{ReleaseStore, RunKind, RunStatus};

use super::RunEvents;
use crate::EngineError;
use crate::event::EventKind;
use crate::redact::Redactor;
use crate::smoke::ServiceReport;

/// Records the smoke tests `reports` of `env`, started at `started`, as a `test` run with a
/// `test.check` event per check; returns the run's id (`test-YYYYMMDD-HHMMSS`).
pub fn record(
    store: &dyn ReleaseStore,
    env: &str,
    started: DateTime<Utc>,
    reports: &[ServiceReport],
    redactor: &Redactor,
) -> Result<String, EngineError> {
    let run = store.create_run(RunKind::Test, env, started, Some(std::process::id()))?;
    let events = RunEvents {
        store,
        run: &run.id,
        redactor,
    };
    for r in reports {
        for c in &r.checks {
            events.emit(
                EventKind::SmokeChecked {
                    service: r.name.clone(),
                    check: c.name.clone(),
                    passed: c.passed,
                    message: c.message.clone(),
                    duration_ms: c.duration_ms,
                },
                &mut |_| {},
            );
        }
    }
    let failed = reports.iter().any(|r| r.failures().next().is_some());
    let status = if failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    store.finish_run(&run.id, status, Utc::now(), None)?;
    Ok(run.id)
}
