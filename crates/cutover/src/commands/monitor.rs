//! `cutover monitor`: the live terminal dashboard, or one plain frame with `--once`.

use std::io::IsTerminal;

use crate::cli::{Cli, MonitorArgs};
use crate::context;
use crate::exit::{CliError, OK};
use crate::monitor::{self, Sources};

/// Shows the dashboard until `q`; `--once` prints one plain frame and exits.
pub fn run(cli: &Cli, args: &MonitorArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    if args.interval.is_zero() {
        return Err(CliError::usage(
            "--interval must be more than 0s",
            Some("e.g. --interval 2s".into()),
        ));
    }
    let socket = cutover_runtime::daemon::socket_path(&context::state_dir(&project))
        .map_err(|e| CliError::failed(e.to_string(), None))?;
    let sources = Sources {
        agent: cutover_runtime::api::client::AgentClient::new(socket),
        runtime: context::runtime()?,
        project,
        env,
    };
    if args.once {
        let snapshot = sources.snapshot();
        if cli.json {
            return Err(CliError::usage(
                "monitor has no JSON form",
                Some("`cutover status --json` gives the same data as one JSON document".into()),
            ));
        }
        print!("{}", monitor::view::plain(&snapshot, chrono::Utc::now()));
        return Ok(OK);
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "monitor needs a terminal",
            Some("use `cutover monitor --once` for one plain frame in scripts".into()),
        ));
    }
    monitor::run(&sources, args.interval)?;
    Ok(OK)
}
