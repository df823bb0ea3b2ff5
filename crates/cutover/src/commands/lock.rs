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
    let holder = holder();
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

/// Who takes a lock: `$USER@hostname`, the account name of the process's uid when `$USER`
/// and `$LOGNAME` are unset (`unknown` for either part that cannot be found).
fn holder() -> String {
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
