//! `cutover down`: stop the environment's instances.

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK};

/// Stops every instance and listener of the environment.
/// When cutover.toml does not load, the environment is `--env`, else the one environment the
/// agent runs (the agent's own record).
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let loaded = context::load_lenient(cli)?;
    let client = context::agent_in(&loaded.state_dir(), &loaded.dir(), false)?;
    let runtime = context::runtime()?;
    let env_name = match &loaded {
        context::Loaded::Project(project) => context::environment(cli, project)?.name,
        context::Loaded::Broken { error, .. } => {
            crate::diagnostics::warn(&format!(
                "cutover.toml does not load; stopping from the agent's own record: {}",
                error.headline()
            ));
            match (&cli.env, &client) {
                (Some(e), _) => e.clone(),
                (None, None) => "development".to_string(),
                (None, Some(c)) => {
                    let status = runtime
                        .block_on(c.status())
                        .map_err(|e| CliError::failed(e.to_string(), None))?;
                    let mut envs: Vec<String> =
                        status.services.iter().map(|s| s.env.clone()).collect();
                    envs.sort();
                    envs.dedup();
                    match envs.len() {
                        0 => "development".to_string(),
                        1 => envs.remove(0),
                        _ => {
                            return Err(CliError::usage(
                                format!("the agent runs several environments: {}", envs.join(", ")),
                                Some("name one with --env".into()),
                            ));
                        }
                    }
                }
            }
        }
    };
    let Some(client) = client else {
        if !cli.json {
            println!("nothing runs in {}: no agent", env_name);
        } else {
            println!("{}", serde_json::json!({ "env": env_name, "stopped": [] }));
        }
        return Ok(OK);
    };
    runtime
        .block_on(client.down(&env_name))
        .map_err(|e| CliError::failed(e.to_string(), None))?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "env": env_name, "stopped": true })
        );
    } else {
        println!("stopped every instance of {}", env_name);
    }
    Ok(OK)
}
