//! `pause` and `resume`: hold a service's new requests in its proxy (for a migration) and let
//! them through again.

use std::time::Duration;

use cutover_config::ResolvedEnvironment;
use cutover_runtime::api::client::ClientError;

use super::Context;
use crate::EngineError;

/// Pauses `service` in `env` (`timeout`: how long a held request waits before a 503), or
/// resumes it (`None`). Refused (exit 1) when the agent does not run it.
pub fn pause(
    cx: &Context,
    env: &ResolvedEnvironment,
    service: &str,
    timeout: Option<Duration>,
) -> Result<(), EngineError> {
    super::known_service(env, service)?;
    let not_running = || {
        EngineError::refused(
            format!("{service} does not run in {}", env.name),
            Some(format!(
                "`cutover deploy {service}` starts it; `cutover status` shows what runs"
            )),
        )
    };
    let Some(client) = cx.agent(false)? else {
        return Err(not_running());
    };
    let runtime = super::runtime()?;
    runtime
        .block_on(client.pause(&env.name, service, timeout))
        .map_err(|e| match e {
            ClientError::Api { status: 409, .. } => not_running(),
            other => EngineError::refused(other.to_string(), None),
        })
}
