//! `cutover pause SERVICE [--timeout 30s]` and `cutover resume SERVICE`: hold a service's new
//! requests in the proxy (a migration) and let them through again.

use cutover_engine::ops;

use crate::cli::{Cli, PauseArgs, ResumeArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Holds new requests of the service, each up to `--timeout`.
pub fn pause(cli: &Cli, args: &PauseArgs) -> Result<i32, CliError> {
    let timeout = cutover_config::parse_duration(&args.timeout).map_err(|_| {
        CliError::usage(
            format!("--timeout: invalid duration {:?}", args.timeout),
            Some("a number with a unit, e.g. --timeout 30s or --timeout 2m".into()),
        )
    })?;
    control(cli, &args.service, Some(timeout))
}

/// Lets the held and new requests of the service through.
pub fn resume(cli: &Cli, args: &ResumeArgs) -> Result<i32, CliError> {
    control(cli, &args.service, None)
}

fn control(
    cli: &Cli,
    service: &str,
    timeout: Option<std::time::Duration>,
) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    ops::pause::pause(
        &ops::Context::new(&project, &agents),
        &env,
        service,
        timeout,
    )?;
    let action = if timeout.is_some() { "pause" } else { "resume" };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "env": env.name, "service": service, "action": action })
        );
    } else if let Some(t) = timeout {
        println!(
            "{service} in {}: paused; new requests wait up to {} (then 503) until `cutover resume {service}`",
            env.name,
            cutover_config::format_duration(t)
        );
    } else {
        println!(
            "{service} in {}: resumed; held requests go through",
            env.name
        );
    }
    Ok(OK)
}
