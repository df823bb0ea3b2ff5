//! The operations layer: what `cutover deploy`, `rollback`, `status`, `promote`/`abort`,
//! `approve`, `lock`/`unlock` and `merge` do, as library calls the CLI makes (and a
//! `cutover server` can make the same way).
//!
//! # Theory of operation
//! Each operation takes a [`Context`] (the loaded project and a way to reach its agent), the
//! resolved environment and a plain input struct, and returns a plain result value (a run
//! summary, a status model, the rows of a merge) or an [`EngineError`] whose variant carries its
//! exit code. Nothing here prints, exits or reads command-line arguments: what happens while an
//! operation runs goes to the engine's reporters (a deploy's events) or to a `notes` callback
//! (one line each: a lock being waited for, a service rolled back), which the caller shows
//! or not.
//!
//! Operations block (the release store is synchronous, and they start the async runtime they
//! need); an async caller runs them under `spawn_blocking`.
//!
//! - `runs.rs`: runs in progress: settling those whose process died, claiming a deploy run past
//!   locks and running deploys.
//! - `deploy.rs`: the pipeline (`build` and `deploy`), `--atomic` included.
//! - `rollback.rs`, `canary.rs`, `status.rs`, `approve.rs`, `lock.rs`, `merge.rs`: one each.

pub mod approve;
pub mod canary;
pub mod deploy;
pub mod lock;
pub mod merge;
pub mod pause;
pub mod rollback;
mod runs;
pub mod status;
pub mod test;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cutover_config::{EnvValue, Project, ResolvedEnvironment, ResolvedService};
use cutover_runtime::api::client::AgentClient;
use cutover_store::{ReleaseStore, SqliteStore, StateDir};

pub use runs::{
    claim_deploy_run, pid_alive, refuse_concurrent_deploy, refuse_locked, settle_interrupted_runs,
};

use crate::EngineError;
use crate::report::webhook::{Notifier, Webhook};

/// How operations reach the project's agent. The agent runs as a process of its own, started
/// by the program that embeds cutover (the CLI starts `cutover agent` in the background).
pub trait AgentLauncher: Send + Sync {
    /// A client of the running agent; with `start`, an agent that does not run is started
    /// first. None when none runs and `start` is false.
    fn agent(&self, start: bool) -> Result<Option<AgentClient>, EngineError>;
}

/// What every operation works in: the loaded project and the way to its agent.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The project, its configuration validated.
    pub project: &'a Project,
    /// Reaches (and starts) its agent.
    pub agents: &'a dyn AgentLauncher,
}

impl<'a> Context<'a> {
    /// The context of `project`, reaching its agent through `agents`.
    pub fn new(project: &'a Project, agents: &'a dyn AgentLauncher) -> Self {
        Context { project, agents }
    }

    /// The project's state directory (in the main worktree when run from a linked one).
    pub fn state_dir(&self) -> StateDir {
        crate::run::state_dir(self.project)
    }

    /// A client of the project's agent (see [`AgentLauncher::agent`]).
    pub fn agent(&self, start: bool) -> Result<Option<AgentClient>, EngineError> {
        self.agents.agent(start)
    }

    /// The agent, started when it does not run; an error when it cannot be.
    pub fn started_agent(&self) -> Result<AgentClient, EngineError> {
        self.agent(true)?
            .ok_or_else(|| EngineError::refused("the agent could not be started", None))
    }

    /// The release store (see [`open_store`]).
    pub fn store(&self, create: bool) -> Result<Option<Arc<dyn ReleaseStore>>, EngineError> {
        open_store(self.project, create)
    }

    /// The release store, created when it does not exist yet.
    pub fn created_store(&self) -> Result<Arc<dyn ReleaseStore>, EngineError> {
        self.store(true)?
            .ok_or_else(|| EngineError::refused("the release store could not be opened", None))
    }

    /// Values of the secrets `env`'s services and the webhooks reference (see [`secrets`]).
    pub fn secrets(
        &self,
        env: &ResolvedEnvironment,
    ) -> Result<BTreeMap<String, String>, EngineError> {
        secrets(self.project, env)
    }

    /// The project's `[[notify]]` webhooks with their delivery threads (None when it has
    /// none); `secrets` are the values [`Context::secrets`] resolved, masked in every body.
    pub fn notifier(&self, secrets: &BTreeMap<String, String>) -> Option<Notifier> {
        if self.project.notify.is_empty() {
            return None;
        }
        let hooks = self
            .project
            .notify
            .iter()
            .map(|n| Webhook::from_config(n, secrets))
            .collect();
        Some(Notifier::new(hooks, secrets.values().cloned()))
    }

    /// The services of `env` the running agent cannot bring back (none when no agent runs),
    /// with why: they count as changed for the next deploy.
    pub fn not_running(&self, env: &str) -> BTreeMap<String, String> {
        let Ok(Some(client)) = self.agent(false) else {
            return BTreeMap::new();
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return BTreeMap::new();
        };
        rt.block_on(client.status())
            .map(|s| {
                s.services
                    .into_iter()
                    .filter(|x| x.env == env)
                    .filter_map(|x| x.problem.map(|why| (x.service, why)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Opens the project's release store; with `create = false`, a store that does not exist yet
/// is None (read-only operations leave no state behind).
pub fn open_store(
    project: &Project,
    create: bool,
) -> Result<Option<Arc<dyn ReleaseStore>>, EngineError> {
    if !create
        && let Some(rel) = project.settings.state.strip_prefix("sqlite://")
        && !project.state_root.join(rel).exists()
    {
        return Ok(None);
    }
    let store = SqliteStore::open_url(&project.settings.state, &project.state_root)?;
    Ok(Some(Arc::new(store)))
}

/// Values of the secrets the environment's services and the webhooks reference. Each comes from
/// the secret store's value for this environment, else its value for every environment, else
/// the environment variable of the same name in the process running cutover (the way CI exports
/// secrets). A missing one is an error naming it and who uses it.
pub fn secrets(
    project: &Project,
    env: &ResolvedEnvironment,
) -> Result<BTreeMap<String, String>, EngineError> {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for svc in &env.services {
        for (key, value) in &svc.env {
            if let EnvValue::Secret(name) = value {
                wanted
                    .entry(name.clone())
                    .or_insert_with(|| format!("env {key} of service {}", svc.name));
            }
        }
    }
    for n in &project.notify {
        if let Some(EnvValue::Secret(name)) = &n.secret {
            wanted
                .entry(name.clone())
                .or_insert_with(|| format!("the webhook {}", n.url));
        }
    }
    let store = match wanted.is_empty() {
        true => None,
        false => open_store(project, false)?,
    };
    let mut key = None;
    let mut values = BTreeMap::new();
    for (name, used_by) in wanted {
        if let Some(store) = &store
            && let Some(value) = cutover_store::secrets::lookup(
                store.as_ref(),
                &project.dir,
                &name,
                &env.name,
                &mut key,
            )?
        {
            values.insert(name, value);
            continue;
        }
        match std::env::var(&name) {
            Ok(v) if !v.is_empty() => {
                values.insert(name, v);
            }
            _ => return Err(EngineError::MissingSecret { name, used_by }),
        }
    }
    Ok(values)
}

/// The service named `name` in `env`, or an error suggesting the closest name (exit 2).
pub fn known_service<'e>(
    env: &'e ResolvedEnvironment,
    name: &str,
) -> Result<&'e ResolvedService, EngineError> {
    env.service(name)
        .ok_or_else(|| EngineError::UnknownService {
            name: name.to_string(),
            known: env.services.iter().map(|s| s.name.clone()).collect(),
        })
}

/// Opens (appending) `.cutover/logs/<kind>s/<name>.log` for an operation that keeps a log of
/// its own (`rollback`: its run id `rollback-YYYYMMDD-HHMMSS`; `merge`), creating the
/// directory.
pub fn open_command_log(
    state: &StateDir,
    kind: &str,
    name: &str,
) -> Result<(PathBuf, std::fs::File), EngineError> {
    let dir = state.command_logs(kind);
    let path = state.command_log(kind, name);
    let file = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
        })
        .map_err(|e| EngineError::refused(format!("cannot write {}: {e}", path.display()), None))?;
    Ok((path, file))
}

/// A runtime for operations that talk to the agent.
pub fn runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::refused(format!("cannot start the async runtime: {e}"), None))
}

/// Where the typed events of a run outside the pipeline (rollback, merge, test) go: the run's
/// event log in the store (as a deploy's events do) and, in words, the notes and log file.
pub(crate) struct RunEvents<'a> {
    pub(crate) store: &'a dyn ReleaseStore,
    pub(crate) run: &'a str,
    pub(crate) redactor: &'a crate::redact::Redactor,
}

impl RunEvents<'_> {
    /// Records `kind` (redacted) and says it through `note`.
    pub(crate) fn emit(&self, mut kind: crate::event::EventKind, note: &mut dyn FnMut(&str)) {
        kind.map_text(&mut |t| *t = self.redactor.redact(t).into_owned());
        if let Some(line) = crate::report::text::line(&kind) {
            note(&line);
        }
        let event = crate::event::Event {
            at: chrono::Utc::now(),
            run: self.run.to_string(),
            kind,
        };
        if let Ok(data) = serde_json::to_value(&event) {
            // The event log is a record for readers; a failed write does not stop a rollback.
            let _ = self.store.append_event(
                self.run,
                event.at,
                event.kind.service(),
                event.kind.name(),
                &data,
            );
        }
    }
}
