//! `cutover agent`, `agent stop`, `agent status`.

use crate::cli::{AgentAction, AgentArgs, Cli};
use crate::context;
use crate::exit::{CliError, OK};

/// Runs, stops or describes the project's agent.
pub fn run(cli: &Cli, args: &AgentArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let runtime = context::runtime()?;
    match args.action {
        None => {
            let state = project.state_dir();
            runtime
                .block_on(cutover_runtime::daemon::run(
                    state,
                    project.settings.metrics_listen,
                ))
                .map_err(|e| match e {
                    cutover_runtime::daemon::AgentError::AlreadyRunning { .. } => CliError::failed(
                        e.to_string(),
                        Some(
                            "`cutover agent status` describes it; `cutover agent stop` stops it"
                                .into(),
                        ),
                    ),
                    other => CliError::failed(other.to_string(), None),
                })?;
            Ok(OK)
        }
        Some(AgentAction::Stop) => {
            let Some(client) = context::agent(&project, false)? else {
                if !cli.json {
                    println!("no agent runs for {}", project.dir.display());
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
            let Some(client) = context::agent(&project, false)? else {
                if cli.json {
                    println!("{}", serde_json::json!({ "running": false }));
                } else {
                    println!("no agent runs for {}", project.dir.display());
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
            }
            Ok(OK)
        }
    }
}
