//! `promote` and `abort`: control a canary in progress from anywhere. The deploy (or the agent,
//! when the deploy's command died) reports what follows.

use cutover_config::ResolvedEnvironment;
use cutover_runtime::api::client::ClientError;

use super::Context;
use crate::EngineError;

/// What to do with a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAction {
    /// End the current and every later pause; each step still needs a passing judgement.
    Promote,
    /// 100% now, without further judgement.
    PromoteFull,
    /// All traffic back to the stable release now.
    Abort,
}

impl CanaryAction {
    /// The action's name in JSON output: `promote`, `promote_full`, `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryAction::Promote => "promote",
            CanaryAction::PromoteFull => "promote_full",
            CanaryAction::Abort => "abort",
        }
    }
}

/// Sends `action` to the canary of `service` in `env`; refused (exit 1) when no canary of it
/// is in progress, or when promoting one whose release the store no longer holds as in
/// progress (it can only be aborted).
pub fn control(
    cx: &Context,
    env: &ResolvedEnvironment,
    service: &str,
    action: CanaryAction,
) -> Result<(), EngineError> {
    super::known_service(env, service)?;
    let none = || {
        EngineError::refused(
            format!("no canary of {service} is in progress in {}", env.name),
            Some("`cutover status` shows what runs".into()),
        )
    };
    let Some(client) = cx.agent(false)? else {
        return Err(none());
    };
    let runtime = super::runtime()?;
    // A deploy that died while its canary goes on is handed to the agent first, so what
    // follows is recorded; a canary whose release the store no longer holds as in progress
    // (CANCELED, FAILED, ROLLED_BACK) can only be aborted, never become stable.
    if let Some(store) = cx.store(false)? {
        super::settle_interrupted_runs(cx, store.as_ref())?;
        if action != CanaryAction::Abort {
            let canary = runtime.block_on(client.status()).ok().and_then(|s| {
                s.services
                    .into_iter()
                    .find(|x| x.env == env.name && x.service == service)
                    .and_then(|x| x.canary)
            });
            if let Some(c) = canary
                && let Some(rel) = store.release(service, &c.release)?
                && rel.phase.is_terminal()
            {
                return Err(EngineError::refused(
                    format!(
                        "the canary release {} of {service} is {} in the release store: it \
                         cannot become stable",
                        c.release,
                        rel.phase.as_str()
                    ),
                    Some(format!(
                        "`cutover abort {service}` returns to the stable release"
                    )),
                ));
            }
        }
    }
    let sent = runtime.block_on(async {
        match action {
            CanaryAction::Promote => client.promote(&env.name, service, false).await,
            CanaryAction::PromoteFull => client.promote(&env.name, service, true).await,
            CanaryAction::Abort => client.abort(&env.name, service).await,
        }
    });
    sent.map_err(|e| match e {
        ClientError::Api { status: 409, .. } => none(),
        other => EngineError::refused(other.to_string(), None),
    })
}
