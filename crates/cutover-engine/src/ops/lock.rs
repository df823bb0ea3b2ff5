//! `lock` and `unlock`: an environment's explicit deploy lock.

use cutover_config::ResolvedEnvironment;
use cutover_store::Lock;

use super::Context;
use crate::EngineError;

/// Locks `env` for `holder` (e.g. `ana@build1`) with an optional reason; blocked (exit 3) when
/// someone already holds it.
pub fn lock(
    cx: &Context,
    env: &ResolvedEnvironment,
    holder: &str,
    reason: Option<&str>,
) -> Result<Lock, EngineError> {
    let store = cx.created_store()?;
    let now = chrono::Utc::now();
    if let Err(existing) = store.lock(&env.name, holder, reason, now)? {
        return Err(EngineError::Blocked {
            message: describe(&existing),
            help: Some("`cutover unlock` releases it".into()),
        });
    }
    Ok(Lock {
        env: env.name.clone(),
        holder: holder.to_string(),
        reason: reason.map(str::to_string),
        since: now,
    })
}

/// Removes `env`'s lock and returns it; refused (exit 1) when it is not locked.
pub fn unlock(cx: &Context, env: &ResolvedEnvironment) -> Result<Lock, EngineError> {
    let not_locked = || EngineError::refused(format!("{} is not locked", env.name), None);
    let Some(store) = cx.store(false)? else {
        return Err(not_locked());
    };
    store.unlock(&env.name)?.ok_or_else(not_locked)
}

/// How a lock is shown: "production is locked by ana@build1 since 2026-11-23 10:15 UTC: why".
pub fn describe(lock: &Lock) -> String {
    let mut text = format!(
        "{} is locked by {} since {}",
        lock.env,
        lock.holder,
        lock.since.format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(reason) = &lock.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}
