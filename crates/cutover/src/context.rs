//! What most commands start from: the project, its environment, its store, its secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover_config::{EnvValue, Project, ResolvedEnvironment};
use cutover_engine::EngineError;
use cutover_store::{ReleaseStore, SqliteStore};

use crate::cli::Cli;
use crate::exit::CliError;

/// The project directory: `-C DIR`, else the nearest directory upward holding cutover.toml,
/// else the current directory.
pub fn project_dir(cli: &Cli) -> Result<PathBuf, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failed(format!("cannot read the current directory: {e}"), None))?;
    Ok(match cli.dir.is_empty() {
        false => {
            let d = cli.dir.iter().fold(cwd.clone(), |at, d| at.join(d));
            if !d.is_dir() {
                return Err(CliError::usage(
                    format!("-C {}: no such directory", d.display()),
                    None,
                ));
            }
            std::fs::canonicalize(&d).unwrap_or(d)
        }
        true => cutover_config::find_project_dir(&cwd).unwrap_or(cwd),
    })
}

/// Loads and validates the project's cutover.toml (errors show paths relative to the cwd).
pub fn load(cli: &Cli) -> Result<Project, CliError> {
    let dir = project_dir(cli)?;
    cutover_config::load(&dir).map_err(|e| {
        let shown = std::env::current_dir()
            .ok()
            .and_then(|cwd| e.file.strip_prefix(&cwd).ok().map(Path::to_path_buf));
        match shown {
            Some(p) => CliError::from(e.with_display_path(&p)),
            None => CliError::from(e),
        }
    })
}

/// The environment named by `--env`, else the project's default.
pub fn environment(cli: &Cli, project: &Project) -> Result<ResolvedEnvironment, CliError> {
    let name = cli.env.as_deref().unwrap_or_else(|| project.default_env());
    Ok(project.resolve(name)?)
}

/// Opens the release store; with `create = false`, a store that does not exist yet is None
/// (read-only commands leave no state behind).
pub fn store(project: &Project, create: bool) -> Result<Option<Arc<dyn ReleaseStore>>, CliError> {
    if !create
        && let Some(rel) = project.settings.state.strip_prefix("sqlite://")
        && !project.dir.join(rel).exists()
    {
        return Ok(None);
    }
    let store = SqliteStore::open_url(&project.settings.state, &project.dir)?;
    Ok(Some(Arc::new(store)))
}

/// Values of the secrets the environment's services and the webhooks reference, from the
/// environment cutover runs in. A missing one is an error naming it and who uses it.
pub fn secrets(
    project: &Project,
    env: &ResolvedEnvironment,
) -> Result<BTreeMap<String, String>, CliError> {
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
    let mut values = BTreeMap::new();
    for (name, used_by) in wanted {
        match std::env::var(&name) {
            Ok(v) if !v.is_empty() => {
                values.insert(name, v);
            }
            _ => {
                return Err(CliError::Engine(EngineError::MissingSecret {
                    name,
                    used_by,
                }));
            }
        }
    }
    Ok(values)
}
