//! Log files: `.cutover/logs/deployments/<run>.log` (the run's events) and
//! `<run>-<service>.log` (one service's events and its commands' output), timestamped.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use chrono::SecondsFormat;
use cutover_store::StateDir;

use super::{Reporter, text};
use crate::event::Event;

/// Writes the run's log files.
pub struct LogFiles {
    state: StateDir,
    run: Option<BufWriter<File>>,
    services: HashMap<String, BufWriter<File>>,
}

impl LogFiles {
    /// Log files under the project's `state` directory (`logs/deployments/`).
    pub fn new(state: StateDir) -> Self {
        LogFiles {
            state,
            run: None,
            services: HashMap::new(),
        }
    }

    fn open(&self, path: PathBuf) -> Result<BufWriter<File>, String> {
        let dir = self.state.deployment_logs();
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map(|f| BufWriter::with_capacity(16 * 1024, f))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The path of the run's log.
    pub fn run_log(&self, run: &str) -> PathBuf {
        self.state.run_log(run)
    }
}

impl Reporter for LogFiles {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        let at = event.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        if let Some(line) = text::line(&event.kind) {
            if self.run.is_none() {
                self.run = Some(self.open(self.state.run_log(&event.run))?);
            }
            if let Some(w) = self.run.as_mut() {
                writeln!(w, "{at} {line}").map_err(|e| format!("writing the run log: {e}"))?;
            }
        }
        if let Some(service) = event.kind.service() {
            let line = text::output_line(&event.kind).or_else(|| text::line(&event.kind));
            if let Some(line) = line {
                if !self.services.contains_key(service) {
                    let w = self.open(self.state.service_run_log(&event.run, service))?;
                    self.services.insert(service.to_string(), w);
                }
                if let Some(w) = self.services.get_mut(service) {
                    writeln!(w, "{at} {line}")
                        .map_err(|e| format!("writing the log of {service}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        for w in self.run.iter_mut().chain(self.services.values_mut()) {
            w.flush().map_err(|e| format!("writing a log file: {e}"))?;
        }
        Ok(())
    }
}
