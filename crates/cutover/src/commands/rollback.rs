//! `cutover rollback [SERVICES] [--to RELEASE]`: back to the previous ACTIVE release, reusing its
//! snapshot (no checks, no build); a route flip when its instances are still warm.

use cutover_engine::ops;
use cutover_engine::ops::rollback::RollbackRequest;

use crate::cli::{Cli, RollbackArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Rolls back the named services (default: every one with a previous ACTIVE release).
pub fn run(cli: &Cli, args: &RollbackArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let request = RollbackRequest {
        services: args.services.clone(),
        to: args.to.clone(),
    };
    let outcome = ops::rollback::rollback(
        &ops::Context::new(&project, &agents),
        &env,
        &request,
        &mut context::progress(cli),
    )?;
    let summary = &outcome.summary;
    if cli.json {
        let text = serde_json::to_string(summary)
            .map_err(|e| CliError::failed(format!("encoding the summary: {e}"), None))?;
        println!("{text}");
    } else {
        for s in &summary.services {
            match &s.reason {
                None => println!(
                    "{}: rolled back to {}",
                    s.name,
                    s.release.as_deref().unwrap_or("?")
                ),
                Some(r) => println!("{}: rollback failed: {r}", s.name),
            }
        }
        println!("log: {}", outcome.log.display());
    }
    if let Some(n) = outcome.webhooks {
        for e in n.finish(cutover_engine::report::webhook::FINISH_GRACE) {
            crate::diagnostics::warn(&e);
        }
    }
    Ok(if summary.exit_code() == 0 {
        OK
    } else {
        summary.exit_code()
    })
}
