//! What most commands start from: the project, its environment, its store, its secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover_config::{EnvValue, Project, ResolvedEnvironment};
use cutover_engine::EngineError;
pub use cutover_engine::run::state_dir;
use cutover_store::{ReleaseStore, SqliteStore, StateDir};

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
    let store = match wanted.is_empty() {
        true => None,
        false => store(project, false)?,
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

/// Whether a process with this pid is alive (a zombie is not).
pub fn pid_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Runs still marked in progress whose process died (kill -9, power loss) are settled so the
/// store agrees with what the agent serves: a release the agent serves is recorded ACTIVE; a
/// release the agent is still deploying (a canary's pauses, a rolling update, a verification)
/// is handed to the agent, which records how it ends (the run stays in progress, now under the
/// agent's pid); the rest, which never went live, are CANCELED, and the run with them.
pub fn settle_interrupted_runs(
    store: &dyn ReleaseStore,
    project: &Project,
) -> Result<(), CliError> {
    let dead: Vec<cutover_store::Run> = store
        .runs_in_progress()?
        .into_iter()
        .filter(|run| !run.pid.is_some_and(pid_alive))
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let client = agent(project, false).ok().flatten();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
    let serving = match (&client, &rt) {
        (Some(c), Some(rt)) => rt.block_on(c.status()).ok(),
        _ => None,
    };
    let now = chrono::Utc::now();
    for run in dead {
        let mut handed_over = false;
        for svc in &project.services {
            for rel in store.releases(&svc.name, &run.env, 20)? {
                if rel.run_id != run.id
                    || rel.phase.is_terminal()
                    || rel.phase == cutover_store::ReleasePhase::Active
                {
                    continue;
                }
                let row = serving.as_ref().and_then(|s| {
                    s.services
                        .iter()
                        .find(|x| x.env == run.env && x.service == svc.name)
                });
                let live = row.is_some_and(|x| x.release.as_deref() == Some(rel.id.as_str()));
                let deploying =
                    row.is_some_and(|x| x.deploying.as_deref() == Some(rel.id.as_str()));
                if deploying && let (Some(c), Some(rt)) = (&client, &rt) {
                    let request = cutover_runtime::api::types::HandOverRequest {
                        run: run.id.clone(),
                        env: run.env.clone(),
                        service: svc.name.clone(),
                        release: rel.id.clone(),
                    };
                    if rt.block_on(c.hand_over(&request)).is_ok() {
                        handed_over = true;
                        continue;
                    }
                }
                // The agent may have finished it meanwhile: look again before canceling.
                let live = live
                    || match (&client, &rt) {
                        (Some(c), Some(rt)) => rt.block_on(c.status()).is_ok_and(|s| {
                            s.services.iter().any(|x| {
                                x.env == run.env
                                    && x.service == svc.name
                                    && x.release.as_deref() == Some(rel.id.as_str())
                            })
                        }),
                        _ => false,
                    };
                let (phase, reason) = if live {
                    (cutover_store::ReleasePhase::Active, None)
                } else {
                    (
                        cutover_store::ReleasePhase::Canceled,
                        Some("interrupted: the run's process died before it went live"),
                    )
                };
                let _ = store.set_phase(&svc.name, &rel.id, phase, reason, now);
            }
        }
        // Its checks, builds and hooks outlived it (reparented to PID 1): end them.
        cutover_engine::command::end_leftovers(&run.id, state_dir(project).path());
        if handed_over {
            continue;
        }
        store.finish_run(
            &run.id,
            cutover_store::RunStatus::Canceled,
            now,
            Some("interrupted: the process running it died"),
        )?;
        // A run that died waiting for approval can no longer be approved.
        let _ = store.decide_approval(
            &run.id,
            cutover_store::ApprovalState::Canceled,
            None,
            Some("the deploy waiting for it died"),
            now,
        )?;
    }
    Ok(())
}

/// A deploy of the same environment already running blocks this one (exit 3).
pub fn refuse_concurrent_deploy(store: &dyn ReleaseStore, env: &str) -> Result<(), CliError> {
    let running = store.runs_in_progress()?.into_iter().find(|r| {
        r.env == env && r.kind == cutover_store::RunKind::Deploy && r.pid.is_some_and(pid_alive)
    });
    match running {
        Some(r) => Err(deploy_running(&r, env)),
        None => Ok(()),
    }
}

/// "deploy X of ENV is running", exit 3; when the agent goes on with it after its command
/// died, what it is doing (a canary waiting for `promote`) and how to end it.
fn deploy_running(r: &cutover_store::Run, env: &str) -> CliError {
    if let Some(agent_run) = agent_run_description(r, env) {
        return agent_run;
    }
    CliError::Blocked {
        message: format!(
            "deploy {} of {env} is running (pid {}, started {})",
            r.id,
            r.pid.unwrap_or_default(),
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        help: Some("wait for it to finish, or stop it with Ctrl-C in its terminal".into()),
    }
}

/// The refusal when `r` is a run the agent took over (its pid is the agent's).
fn agent_run_description(r: &cutover_store::Run, env: &str) -> Option<CliError> {
    let pid = r.pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    if !stat.contains("--worker") {
        return None;
    }
    // The agent runs in the state directory it serves.
    let info = StateDir::new(format!("/proc/{pid}/cwd")).agent_info();
    let socket = std::fs::read_to_string(info)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["socket"].as_str().map(PathBuf::from))?;
    let client = cutover_runtime::api::client::AgentClient::new(&socket);
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?
        .block_on(client.status())
        .ok()?;
    let mut what = Vec::new();
    let mut services = Vec::new();
    for s in status.services.iter().filter(|s| s.env == env) {
        let Some(release) = &s.deploying else {
            continue;
        };
        services.push(s.service.clone());
        what.push(match &s.canary {
            Some(c) => format!(
                "the canary of {} (release {release}) is at {}% (step {}/{}{})",
                s.service,
                c.weight,
                c.step,
                c.steps,
                match c.state.as_str() {
                    "waiting_for_promote" =>
                        format!(", waiting for `cutover promote {}`", s.service),
                    _ => String::new(),
                }
            ),
            None => format!("{} is deploying release {release}", s.service),
        });
    }
    if what.is_empty() {
        return None;
    }
    let first = services.first().cloned().unwrap_or_default();
    Some(CliError::Blocked {
        message: format!(
            "deploy {} of {env} goes on in the agent after its command died: {}",
            r.id,
            what.join("; ")
        ),
        help: Some(format!(
            "`cutover promote {first}` or `cutover abort {first}` ends it; `cutover status` shows it"
        )),
    })
}

/// A client of the project's agent. With `start`, an agent that does not run is started in the
/// background (its output goes to `.cutover/logs/agent.log`); without, None when none runs.
pub fn agent(
    project: &Project,
    start: bool,
) -> Result<Option<cutover_runtime::api::client::AgentClient>, CliError> {
    agent_in(&state_dir(project), &project.dir, start)
}

/// [`agent`] for the project in `project_dir` whose state is in `state` (the configuration
/// need not load). Starting it removes the marker `cutover agent stop` leaves.
pub fn agent_in(
    state: &StateDir,
    project_dir: &Path,
    start: bool,
) -> Result<Option<cutover_runtime::api::client::AgentClient>, CliError> {
    use std::os::unix::process::CommandExt;
    let socket = cutover_runtime::daemon::socket_path(state)
        .map_err(|e| CliError::failed(e.to_string(), None))?;
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
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", logs.display()), None))?;
    let log_path = state.agent_log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", log_path.display()), None))?;
    let err = log
        .try_clone()
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", log_path.display()), None))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the cutover binary: {e}"), None))?;
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
        .map_err(|e| CliError::failed(format!("cannot start the agent: {e}"), None))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(Some(client));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let last: Vec<&str> = tail.lines().rev().take(5).collect();
    Err(CliError::failed(
        format!(
            "the agent did not start within 10s; last lines of {}:\n{}",
            log_path.display(),
            last.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
        None,
    ))
}

/// A runtime for commands that talk to the agent.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}"), None))
}

/// The service named `name` in `env`, or a usage error suggesting the closest name.
pub fn known_service<'a>(
    env: &'a ResolvedEnvironment,
    name: &str,
) -> Result<&'a cutover_config::ResolvedService, CliError> {
    env.service(name).ok_or_else(|| {
        CliError::Engine(EngineError::UnknownService {
            name: name.to_string(),
            known: env.services.iter().map(|s| s.name.clone()).collect(),
        })
    })
}

/// How a lock is shown: "production is locked by ana@build1 since 2026-11-23 10:15 UTC: why".
pub fn describe_lock(lock: &cutover_store::Lock) -> String {
    let mut text = format!(
        "{} is locked by {} since {}",
        lock.env,
        lock.holder,
        lock.since.format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(reason) = &lock.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

/// The refusal of a deploy or rollback of a locked environment (exit 3).
fn locked(lock: &cutover_store::Lock) -> CliError {
    CliError::Blocked {
        message: describe_lock(lock),
        help: Some("`cutover unlock` releases it".into()),
    }
}

/// Exit 3 when the environment is locked (`cutover lock`).
pub fn refuse_locked(store: &dyn ReleaseStore, env: &str) -> Result<(), CliError> {
    match store.current_lock(env)? {
        Some(lock) => Err(locked(&lock)),
        None => Ok(()),
    }
}

/// How often `--lock-wait` looks at the store again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Before a deploy: records its run, in one store transaction with checking that the
/// environment is not locked and no other deploy of it runs; refuses (exit 3) when it is. With
/// `wait`, tries again until both are gone, up to `wait`, then exits 3 saying so. Of several
/// deploys waiting for one lock, exactly one gets the run when it goes.
pub fn claim_deploy_run(
    store: &dyn ReleaseStore,
    env: &str,
    wait: Option<std::time::Duration>,
) -> Result<cutover_store::Run, CliError> {
    let check = || {
        let claimed = store.claim_run(
            cutover_store::RunKind::Deploy,
            env,
            chrono::Utc::now(),
            std::process::id(),
            &pid_alive,
        )?;
        match claimed {
            Ok(run) => Ok(run),
            Err(cutover_store::Blocker::Locked(lock)) => Err(locked(&lock)),
            Err(cutover_store::Blocker::Running(r)) => Err(deploy_running(&r, env)),
        }
    };
    let Some(wait) = wait else {
        return check();
    };
    let deadline = std::time::Instant::now() + wait;
    let mut announced = false;
    loop {
        let blocked = match check() {
            Ok(run) => return Ok(run),
            Err(CliError::Blocked { message, .. }) => message,
            Err(e) => return Err(e),
        };
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(CliError::Blocked {
                message: format!(
                    "still blocked after waiting {}: {blocked}",
                    cutover_config::format_duration(wait)
                ),
                help: Some(
                    "`cutover unlock` releases a lock; a longer --lock-wait waits longer".into(),
                ),
            });
        }
        if !announced {
            eprintln!(
                "waiting up to {}: {blocked}",
                cutover_config::format_duration(wait)
            );
            announced = true;
        }
        std::thread::sleep(LOCK_POLL.min(deadline - now));
    }
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

/// The project's `[[notify]]` webhooks with their delivery threads (None when it has none);
/// `secrets` are the values `context::secrets` resolved (webhook keys included), masked in
/// every body.
pub fn notifier(
    project: &Project,
    secrets: &BTreeMap<String, String>,
) -> Option<cutover_engine::report::webhook::Notifier> {
    use cutover_engine::report::webhook::{Notifier, Webhook};
    if project.notify.is_empty() {
        return None;
    }
    let hooks = project
        .notify
        .iter()
        .map(|n| Webhook::from_config(n, secrets))
        .collect();
    Some(Notifier::new(hooks, secrets.values().cloned()))
}

/// Opens (appending) `.cutover/logs/<kind>s/<name>.log` for a command that keeps a log of its
/// own (`rollback`: its run id `rollback-YYYYMMDD-HHMMSS`; `merge`), creating the directory.
pub fn command_log(
    project: &Project,
    kind: &str,
    name: &str,
) -> Result<(std::path::PathBuf, std::fs::File), CliError> {
    let state = state_dir(project);
    let dir = state.command_logs(kind);
    let path = state.command_log(kind, name);
    let file = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
        })
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display()), None))?;
    Ok((path, file))
}

/// The services of `env` the running agent cannot bring back (none when no agent runs), with
/// why: they count as changed for the next deploy.
pub fn not_running(project: &Project, env: &str) -> BTreeMap<String, String> {
    let Ok(Some(client)) = agent(project, false) else {
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
