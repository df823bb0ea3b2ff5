//! `cutover promote SERVICE [--full]` and `cutover abort SERVICE`: control a canary in progress
//! from any shell. The deploy that runs the canary reports what follows.

use crate::cli::{AbortArgs, Cli, PromoteArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Ends the current and every later pause of the service's canary (`--full`: 100% now).
pub fn promote(cli: &Cli, args: &PromoteArgs) -> Result<i32, CliError> {
    let action = if args.full {
        Action::PromoteFull
    } else {
        Action::Promote
    };
    control(cli, &args.service, action)
}

/// Rolls the service's canary back now.
pub fn abort(cli: &Cli, args: &AbortArgs) -> Result<i32, CliError> {
    control(cli, &args.service, Action::Abort)
}

#[derive(Clone, Copy)]
enum Action {
    Promote,
    PromoteFull,
    Abort,
}

fn control(cli: &Cli, service: &str, action: Action) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    context::known_service(&env, service)?;
    let none = || {
        CliError::failed(
            format!("no canary of {service} is in progress in {}", env.name),
            Some("`cutover status` shows what runs".into()),
        )
    };
    let Some(client) = context::agent(&project, false)? else {
        return Err(none());
    };
    let runtime = context::runtime()?;
    // A deploy that died while its canary goes on is handed to the agent first, so what
    // follows is recorded; a canary whose release the store no longer holds as in progress
    // (CANCELED, FAILED, ROLLED_BACK) can only be aborted, never become stable.
    if let Some(store) = context::store(&project, false)? {
        context::settle_interrupted_runs(store.as_ref(), &project)?;
        if !matches!(action, Action::Abort) {
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
                return Err(CliError::failed(
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
            Action::Promote => client.promote(&env.name, service, false).await,
            Action::PromoteFull => client.promote(&env.name, service, true).await,
            Action::Abort => client.abort(&env.name, service).await,
        }
    });
    if let Err(e) = sent {
        return Err(match e {
            cutover_runtime::api::client::ClientError::Api { status: 409, .. } => none(),
            other => CliError::failed(other.to_string(), None),
        });
    }
    let what = match action {
        Action::Promote => "promoted: its pauses end; each step still needs a passing judgement",
        Action::PromoteFull => "promoted to 100% now, without further judgement",
        Action::Abort => "aborted: all traffic goes back to the stable release",
    };
    if cli.json {
        let action = match action {
            Action::Promote => "promote",
            Action::PromoteFull => "promote_full",
            Action::Abort => "abort",
        };
        println!(
            "{}",
            serde_json::json!({ "env": env.name, "service": service, "action": action })
        );
    } else {
        println!("{service} in {}: canary {what}", env.name);
    }
    Ok(OK)
}
