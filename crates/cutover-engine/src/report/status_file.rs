//! `.cutover/status.json`: the last run, in the shape DESIGN.md gives, rewritten whole
//! (temp file + rename) when it changed and the event queue ran dry, at most every
//! [`MIN_INTERVAL`], and always at the end of the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use cutover_store::atomic::{Durability, write_atomic};
use serde::Serialize;

use super::Reporter;
use crate::event::{Event, EventKind};

/// The least time between two rewrites during a run.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The document.
#[derive(Debug, Clone, Serialize, Default)]
struct StatusDoc {
    deployment_id: String,
    started_at: String,
    status: String,
    env: String,
    services: BTreeMap<String, ServiceStatus>,
}

#[derive(Debug, Clone, Serialize, Default)]
struct ServiceStatus {
    status: String,
    deployment_status: Option<String>,
    release: Option<String>,
    branch: Option<String>,
    worktree: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
}

/// Keeps `.cutover/status.json` current.
pub struct StatusFile {
    path: PathBuf,
    branch: Option<String>,
    worktree: Option<String>,
    doc: StatusDoc,
    changed: bool,
    finished: bool,
    written_at: Option<Instant>,
}

impl StatusFile {
    /// Writes to `path`; every service is recorded with this branch and worktree.
    pub fn new(path: PathBuf, branch: Option<String>, worktree: Option<String>) -> Self {
        StatusFile {
            path,
            branch,
            worktree,
            doc: StatusDoc::default(),
            changed: false,
            finished: false,
            written_at: None,
        }
    }

    fn svc(&mut self, name: &str) -> &mut ServiceStatus {
        let (branch, worktree) = (self.branch.clone(), self.worktree.clone());
        self.doc
            .services
            .entry(name.to_string())
            .or_insert_with(|| ServiceStatus {
                status: "pending".into(),
                branch,
                worktree,
                ..ServiceStatus::default()
            })
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Reporter for StatusFile {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        let at = ts(event.at);
        match &event.kind {
            EventKind::RunStarted { env, services, .. } => {
                self.doc = StatusDoc {
                    deployment_id: event.run.clone(),
                    started_at: at,
                    status: "in_progress".into(),
                    env: env.clone(),
                    services: BTreeMap::new(),
                };
                for s in services {
                    self.svc(&s.name);
                }
            }
            EventKind::ReleaseCreated {
                service, release, ..
            } => {
                let s = self.svc(service);
                s.release = Some(release.clone());
                s.status = "in_progress".into();
                s.started_at = Some(at);
            }
            EventKind::PhaseChanged {
                service,
                release,
                phase,
                ..
            } => {
                // Only the run's own release: a rollback also moves the release it goes back to.
                let s = self.svc(service);
                if s.release.as_ref().is_none_or(|r| r == release) {
                    s.deployment_status = Some(phase.as_str().to_string());
                }
            }
            EventKind::ServiceFinished {
                service, result, ..
            } => {
                let s = self.svc(service);
                s.status = result.as_str().to_string();
                s.completed_at = Some(at);
            }
            EventKind::RunFinished { status, .. } => {
                self.doc.status = status.as_str().to_string();
                self.finished = true;
            }
            _ => return Ok(()),
        }
        self.changed = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let recent = self
            .written_at
            .is_some_and(|at| at.elapsed() < MIN_INTERVAL);
        if !self.changed || (recent && !self.finished) {
            return Ok(());
        }
        self.changed = false;
        self.written_at = Some(Instant::now());
        let body = serde_json::to_vec_pretty(&self.doc)
            .map_err(|e| format!("encoding status.json: {e}"))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        }
        // Rewritten on every event: atomic for readers, never fsynced (see `Durability`).
        write_atomic(&self.path, &body, Durability::NoSync)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}
