//! What most commands start from: the project (`-C`), its environment (`--env`), the agent
//! process the CLI starts for it, who the user is. The domain helpers (the store, secrets,
//! runs in progress, locks) are `cutover_engine::ops`'s; the wrappers here turn their errors
//! into the CLI's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover_config::{Project, ResolvedEnvironment};
use cutover_engine::EngineError;
use cutover_engine::ops;
pub use cutover_engine::run::state_dir;
use cutover_store::{ReleaseStore, StateDir};

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
/// In a linked git worktree the state (`.cutover/`: store, agent, logs) is the main
/// worktree's, found through git's common directory.
pub fn load(cli: &Cli) -> Result<Project, CliError> {
    let dir = project_dir(cli)?;
    let mut project = load_config(&dir)?;
    if let Some(root) = cutover_engine::team::state_root(&project.dir) {
        project.state_root = root;
    }
    Ok(project)
}

/// The project, or, when its cutover.toml does not load, the error and where the project's
/// state is: commands about what already runs (`agent stop`, `agent status`, `down`,
/// `status`) work from the agent's own record then.
pub enum Loaded {
    /// The configuration loaded.
    Project(Box<Project>),
    /// It did not.
    Broken {
        /// Why.
        error: CliError,
        /// The project directory.
        dir: PathBuf,
        /// Its state directory (`.cutover/`).
        state_dir: StateDir,
    },
}

impl Loaded {
    /// The project's state directory.
    pub fn state_dir(&self) -> StateDir {
        match self {
            Loaded::Project(p) => state_dir(p),
            Loaded::Broken { state_dir, .. } => state_dir.clone(),
        }
    }

    /// The project directory.
    pub fn dir(&self) -> PathBuf {
        match self {
            Loaded::Project(p) => p.dir.clone(),
            Loaded::Broken { dir, .. } => dir.clone(),
        }
    }
}

/// Like [`load`], but a configuration that does not load is returned as [`Loaded::Broken`]
/// (with its error, to be shown as a warning) when the project has state to work from.
pub fn load_lenient(cli: &Cli) -> Result<Loaded, CliError> {
    let dir = project_dir(cli)?;
    match load(cli) {
        Ok(p) => Ok(Loaded::Project(Box::new(p))),
        Err(error) => {
            let root = cutover_engine::team::state_root(&dir).unwrap_or_else(|| dir.clone());
            let state_dir = StateDir::of_root(&root);
            if !state_dir.path().is_dir() {
                return Err(error);
            }
            Ok(Loaded::Broken {
                error,
                dir,
                state_dir,
            })
        }
    }
}

fn load_config(dir: &Path) -> Result<Project, CliError> {
    cutover_config::load(dir).map_err(|e| {
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
/// An environment whose services run on a target this build cannot drive is refused (exit 2).
pub fn environment(cli: &Cli, project: &Project) -> Result<ResolvedEnvironment, CliError> {
    let name = cli.env.as_deref().unwrap_or_else(|| project.default_env());
    let env = project.resolve(name)?;
    cutover_engine::target::check_driven(&env)?;
    Ok(env)
}

/// Opens the release store; with `create = false`, a store that does not exist yet is None
/// (read-only commands leave no state behind).
pub fn store(project: &Project, create: bool) -> Result<Option<Arc<dyn ReleaseStore>>, CliError> {
    Ok(ops::open_store(project, create)?)
}

/// Values of the secrets the environment's services and the webhooks reference (see
/// [`ops::secrets`]).
pub fn secrets(
    project: &Project,
    env: &ResolvedEnvironment,
) -> Result<BTreeMap<String, String>, CliError> {
    Ok(ops::secrets(project, env)?)
}

/// How the CLI reaches a project's agent: connecting to its socket, or starting `cutover
/// agent` in the background (see [`agent_in`]).
pub struct Launcher {
    state: StateDir,
    project_dir: PathBuf,
}

impl ops::AgentLauncher for Launcher {
    fn agent(
        &self,
        start: bool,
    ) -> Result<Option<cutover_runtime::api::client::AgentClient>, EngineError> {
        agent_in(&self.state, &self.project_dir, start)
    }
}

impl Launcher {
    /// The launcher of the agent of the project in `project_dir` whose state is in `state`
    /// (the configuration need not load).
    pub fn new(state: StateDir, project_dir: PathBuf) -> Self {
        Launcher { state, project_dir }
    }
}

/// The launcher of `project`'s agent, for [`ops::Context::new`].
pub fn launcher(project: &Project) -> Launcher {
    Launcher::new(state_dir(project), project.dir.clone())
}

/// A client of the project's agent. With `start`, an agent that does not run is started in the
/// background (its output goes to `.cutover/logs/agent.log`); without, None when none runs.
pub fn agent(
    project: &Project,
    start: bool,
) -> Result<Option<cutover_runtime::api::client::AgentClient>, EngineError> {
    agent_in(&state_dir(project), &project.dir, start)
}

/// [`agent`] for the project in `project_dir` whose state is in `state` (the configuration
/// need not load). Starting it removes the marker `cutover agent stop` leaves.
pub fn agent_in(
    state: &StateDir,
    project_dir: &Path,
    start: bool,
) -> Result<Option<cutover_runtime::api::client::AgentClient>, EngineError> {
    use std::os::unix::process::CommandExt;
    let failed = |message: String| EngineError::refused(message, None);
    let socket = cutover_runtime::daemon::socket_path(state).map_err(|e| failed(e.to_string()))?;
    let client = cutover_runtime::api::client::AgentClient::new(&socket);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Ok(Some(client));
    }
    if !start {
        return Ok(None);
    }
    let _ = std::fs::remove_file(state.agent_stopped());
    let logs = state.logs();
    std::fs::create_dir_all(&logs)
        .map_err(|e| failed(format!("cannot create {}: {e}", logs.display())))?;
    let log_path = state.agent_log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| failed(format!("cannot write {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| failed(format!("cannot write {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| failed(format!("cannot find the cutover binary: {e}")))?;
    std::process::Command::new(exe)
        .arg("-C")
        .arg(project_dir)
        .arg("agent")
        // Not the caller's directory: a linked worktree may be removed while the agent runs.
        .current_dir(state.path())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("cannot start the agent: {e}")))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(Some(client));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let last: Vec<&str> = tail.lines().rev().take(5).collect();
    Err(failed(format!(
        "the agent did not start within 10s; last lines of {}:\n{}",
        log_path.display(),
        last.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// Where an operation's progress lines go: stderr, unless the output is `--json`.
pub fn progress(cli: &Cli) -> impl FnMut(&str) + '_ {
    move |line| {
        if !cli.json {
            eprintln!("{line}");
        }
    }
}

/// A runtime for commands that talk to the agent.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(ops::runtime()?)
}

/// The service named `name` in `env`, or a usage error suggesting the closest name.
pub fn known_service<'a>(
    env: &'a ResolvedEnvironment,
    name: &str,
) -> Result<&'a cutover_config::ResolvedService, CliError> {
    Ok(ops::known_service(env, name)?)
}

/// Who acts (takes a lock, approves a run): `$USER@hostname`, the account name of the
/// process's uid when `$USER` and `$LOGNAME` are unset (`unknown` for either part that cannot
/// be found).
pub fn user_at_host() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.trim().is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into());
    let host = ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{}@{host}", user.trim())
}

/// The services of `env` the running agent cannot bring back (none when no agent runs), with
/// why: they count as changed for the next deploy.
pub fn not_running(project: &Project, env: &str) -> BTreeMap<String, String> {
    let agents = launcher(project);
    ops::Context::new(project, &agents).not_running(env)
}
