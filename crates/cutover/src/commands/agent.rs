//! `cutover agent`, `agent start`, `agent stop`, `agent status`.
//!
//! `cutover agent` is a small supervisor: it runs the agent itself (`agent --worker`) and
//! starts it again at once when it dies by a signal or a panic, so services are adopted and
//! served again without anyone running a command. `stop`, `status` work from the agent's own
//! record even when cutover.toml does not load.

use std::path::Path;

use cutover_runtime::agent::StoreLocation;
use cutover_store::StateDir;

use crate::cli::{AgentAction, AgentArgs, Cli};
use crate::context::{self, Loaded};
use crate::diagnostics;
use crate::exit::{CliError, OK};

/// Runs, starts, stops or describes the project's agent.
pub fn run(cli: &Cli, args: &AgentArgs) -> Result<i32, CliError> {
    let loaded = context::load_lenient(cli)?;
    let runtime = context::runtime()?;
    let state = loaded.state_dir();
    if args.worker {
        return worker(&loaded, &runtime);
    }
    if let Loaded::Broken { error, .. } = &loaded
        && args.action.is_none()
    {
        diagnostics::warn(&format!(
            "cutover.toml does not load; the agent runs with the default settings: {}",
            error.headline()
        ));
    }
    match args.action {
        None => {
            let _ = std::fs::remove_file(state.agent_stopped());
            let exe = std::env::current_exe().map_err(|e| {
                CliError::failed(format!("cannot find the cutover binary: {e}"), None)
            })?;
            let dir = loaded.dir();
            let code = runtime
                .block_on(cutover_runtime::daemon::supervise(|| {
                    let mut cmd = tokio::process::Command::new(&exe);
                    cmd.arg("-C")
                        .arg(&dir)
                        .arg("agent")
                        .arg("--worker")
                        .stdin(std::process::Stdio::null());
                    cmd
                }))
                .map_err(|e| CliError::failed(e.to_string(), None))?;
            Ok(code)
        }
        Some(AgentAction::Start) => {
            let was_running = context::agent_in(&state, &loaded.dir(), false)?.is_some();
            let client = context::agent_in(&state, &loaded.dir(), true)?
                .ok_or_else(|| CliError::failed("the agent could not be started", None))?;
            if !cli.json {
                match was_running {
                    true => println!("the agent already runs ({})", client.socket().display()),
                    false => println!("agent started ({})", client.socket().display()),
                }
            }
            Ok(OK)
        }
        Some(AgentAction::Stop) => {
            // Recorded first: from now on no command but `deploy` and `agent start` starts it.
            let marker = state.agent_stopped();
            if let Some(dir) = marker.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(&marker, b"stopped by `cutover agent stop`\n");
            let Some(client) = context::agent_in(&state, &loaded.dir(), false)? else {
                if !cli.json {
                    println!("no agent runs for {}", loaded.dir().display());
                }
                return Ok(OK);
            };
            runtime
                .block_on(client.stop())
                .map_err(|e| CliError::failed(e.to_string(), None))?;
            // Wait until it is gone, so "stop" means stopped.
            let socket = client.socket().to_path_buf();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while socket.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if !cli.json {
                println!("agent stopped");
            }
            Ok(OK)
        }
        Some(AgentAction::Status) => {
            let Some(client) = context::agent_in(&state, &loaded.dir(), false)? else {
                let stopped = state.agent_stopped().exists();
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({ "running": false, "stopped_by_user": stopped })
                    );
                } else if stopped {
                    println!(
                        "no agent runs for {}: stopped by `cutover agent stop`; `cutover agent \
                         start` or the next deploy starts it",
                        loaded.dir().display()
                    );
                } else {
                    println!("no agent runs for {}", loaded.dir().display());
                }
                return Ok(OK);
            };
            let status = runtime
                .block_on(client.status())
                .map_err(|e| CliError::failed(e.to_string(), None))?;
            if cli.json {
                let doc = serde_json::json!({
                    "pid": status.pid,
                    "socket": status.socket,
                    "uptime_seconds": status.uptime_seconds,
                    "services": status.services,
                });
                println!("{doc}");
            } else {
                println!(
                    "agent {} on {}, up {}s, {} services",
                    status.pid,
                    status.socket.display(),
                    status.uptime_seconds,
                    status.services.len()
                );
                for s in status.services.iter().filter(|s| s.problem.is_some()) {
                    println!(
                        "  {}/{}: {}",
                        s.env,
                        s.service,
                        s.problem.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(OK)
        }
    }
}

/// The agent itself, in the foreground until it is stopped. With a configuration that does
/// not load, it runs with the defaults (the store at `.cutover/state.db`, no metrics
/// listener): what runs must stay reachable.
fn worker(loaded: &Loaded, runtime: &tokio::runtime::Runtime) -> Result<i32, CliError> {
    let (state, metrics, store) = match loaded {
        Loaded::Project(p) => (
            context::state_dir(p),
            p.settings.metrics_listen,
            StoreLocation {
                project_dir: p.dir.clone(),
                url: p.settings.state.clone(),
                root: p.state_root.clone(),
            },
        ),
        Loaded::Broken {
            error,
            dir,
            state_dir,
        } => {
            cutover_runtime::agent::log(&format!(
                "warning: cutover.toml does not load ({}); running with the default settings",
                error.headline()
            ));
            (
                state_dir.clone(),
                None,
                StoreLocation {
                    project_dir: dir.clone(),
                    url: StateDir::DEFAULT_STORE_URL.into(),
                    root: state_dir.root().map(Path::to_path_buf).unwrap_or_default(),
                },
            )
        }
    };
    runtime
        .block_on(cutover_runtime::daemon::run(state, metrics, Some(store)))
        .map_err(|e| match e {
            cutover_runtime::daemon::AgentError::AlreadyRunning { .. } => CliError::failed(
                e.to_string(),
                Some("`cutover agent status` describes it; `cutover agent stop` stops it".into()),
            ),
            other => CliError::failed(other.to_string(), None),
        })?;
    Ok(OK)
}
