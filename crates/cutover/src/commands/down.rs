//! `cutover down`: stop the environment's instances.

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK};

/// Stops every instance and listener of the environment.
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let Some(client) = context::agent(&project, false)? else {
        if !cli.json {
            println!("nothing runs in {}: no agent", env.name);
        } else {
            println!("{}", serde_json::json!({ "env": env.name, "stopped": [] }));
        }
        return Ok(OK);
    };
    let runtime = context::runtime()?;
    runtime
        .block_on(client.down(&env.name))
        .map_err(|e| CliError::failed(e.to_string(), None))?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "env": env.name, "stopped": true })
        );
    } else {
        println!("stopped every instance of {}", env.name);
    }
    Ok(OK)
}
