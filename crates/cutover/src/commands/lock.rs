//! `cutover lock` and `cutover unlock`: the environment's explicit deploy lock.

use cutover_store::Lock;

use crate::cli::{Cli, LockArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Locks the environment for `$USER@host`; exit 3 when someone already holds it.
pub fn run(cli: &Cli, args: &LockArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let store = context::store(&project, true)?
        .ok_or_else(|| CliError::failed("the release store could not be opened", None))?;
    let holder = context::user_at_host();
    let now = chrono::Utc::now();
    if let Err(existing) = store.lock(&env.name, &holder, args.reason.as_deref(), now)? {
        return Err(CliError::Blocked {
            message: context::describe_lock(&existing),
            help: Some("`cutover unlock` releases it".into()),
        });
    }
    let lock = Lock {
        env: env.name.clone(),
        holder,
        reason: args.reason.clone(),
        since: now,
    };
    if cli.json {
        print_json(&lock)?;
    } else {
        println!("{}", context::describe_lock(&lock));
    }
    Ok(OK)
}

/// Removes the environment's lock; exit 1 when it is not locked.
pub fn unlock(cli: &Cli) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let not_locked = || CliError::failed(format!("{} is not locked", env.name), None);
    let Some(store) = context::store(&project, false)? else {
        return Err(not_locked());
    };
    let Some(lock) = store.unlock(&env.name)? else {
        return Err(not_locked());
    };
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
