//! One plain line per event on stderr (CI logs, pipes).

use std::io::Write;

use chrono::{Local, SecondsFormat};
use cutover_engine::event::{Event, EventKind};
use cutover_engine::report::{Reporter, text};

/// Writes `HH:MM:SS line` to stderr for each event a reader needs.
pub struct Plain;

impl Reporter for Plain {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        // The summary follows on stdout, and phase lines repeat the stage lines: the log
        // files keep both.
        if matches!(
            event.kind,
            EventKind::RunFinished { .. } | EventKind::PhaseChanged { .. }
        ) {
            return Ok(());
        }
        if let Some(line) = text::line(&event.kind) {
            let at = event
                .at
                .with_timezone(&Local)
                .to_rfc3339_opts(SecondsFormat::Secs, false);
            let time = at.get(11..19).unwrap_or(&at);
            let _ = writeln!(std::io::stderr().lock(), "{time} {line}");
        }
        Ok(())
    }
}
