//! `cutover lock` and `cutover unlock`: the environment's explicit deploy lock.

use cutover_engine::ops;
use cutover_store::Lock;

use crate::cli::{Cli, LockArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Locks the environment for `$USER@host`; exit 3 when someone already holds it.
pub fn run(cli: &Cli, args: &LockArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let cx = ops::Context::new(&project, &agents);
    let lock = ops::lock::lock(&cx, &env, &context::user_at_host(), args.reason.as_deref())?;
    if cli.json {
        print_json(&lock)?;
    } else {
        println!("{}", ops::lock::describe(&lock));
    }
    Ok(OK)
}

/// Removes the environment's lock; exit 1 when it is not locked.
pub fn unlock(cli: &Cli) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let lock = ops::lock::unlock(&ops::Context::new(&project, &agents), &env)?;
    if cli.json {
        print_json(&lock)?;
    } else {
        println!("unlocked {} (locked by {})", lock.env, lock.holder);
    }
    Ok(OK)
}

fn print_json(lock: &Lock) -> Result<(), CliError> {
    let text = serde_json::to_string(lock)
        .map_err(|e| CliError::failed(format!("encoding the lock: {e}"), None))?;
    println!("{text}");
    Ok(())
}
