//! `cutover approve RUN [--reject --reason R]`: decides a deploy waiting at its environment's
//! approval gate (`require_approval = true`), from any shell.

use cutover_store::{Approval, ApprovalState, ReleaseStore};

use crate::cli::{ApproveArgs, Cli};
use crate::context;
use crate::exit::{CliError, OK};

/// Approves (or with `--reject`, refuses) the waiting run `args.run`; exit 1 when it is not
/// waiting.
pub fn run(cli: &Cli, args: &ApproveArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let help = "`cutover status` shows the runs waiting for approval";
    let Some(store) = context::store(&project, false)? else {
        return Err(CliError::failed(
            format!("run {} does not exist: nothing has run here yet", args.run),
            Some(help.into()),
        ));
    };
    // A deploy that died while waiting is recorded canceled first: it can't be approved.
    context::settle_interrupted_runs(store.as_ref(), &project)?;
    let Some(run) = store.run(&args.run)? else {
        return Err(CliError::failed(
            format!("run {} does not exist", args.run),
            Some(waiting_help(store.as_ref())),
        ));
    };
    let not_waiting = |current: Option<Approval>| {
        let why = match current {
            None => format!(
                "run {} is not waiting for approval (it is {}; its environment {} {})",
                run.id,
                run.status.as_str(),
                run.env,
                if run.kind == cutover_store::RunKind::Deploy {
                    "did not ask for one"
                } else {
                    "is not deployed by it"
                }
            ),
            Some(a) => format!(
                "run {} is not waiting for approval: {}",
                run.id,
                describe(&a)
            ),
        };
        CliError::failed(why, Some(waiting_help(store.as_ref())))
    };
    let current = store.approval(&run.id)?;
    if current
        .as_ref()
        .is_none_or(|a| a.state != ApprovalState::Waiting)
    {
        return Err(not_waiting(current));
    }
    let state = if args.reject {
        ApprovalState::Rejected
    } else {
        ApprovalState::Approved
    };
    let by = context::user_at_host();
    let decided = store.decide_approval(
        &run.id,
        state,
        Some(&by),
        args.reason.as_deref(),
        chrono::Utc::now(),
    )?;
    let approval = decided.map_err(not_waiting)?;
    if cli.json {
        let text = serde_json::to_string(&approval)
            .map_err(|e| CliError::failed(format!("encoding the approval: {e}"), None))?;
        println!("{text}");
    } else {
        println!(
            "{} ({}: {})",
            describe(&approval),
            approval.env,
            approval.waiting
        );
    }
    Ok(OK)
}

/// "approved by ana@build1 at 2026-11-23 10:15:02 UTC: looks good".
fn describe(a: &Approval) -> String {
    let at = a
        .decided_at
        .map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let mut text = match a.state {
        ApprovalState::Waiting => format!(
            "waiting since {}",
            a.requested_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        ApprovalState::Approved | ApprovalState::Rejected => format!(
            "{} {} by {}{at}",
            a.run_id,
            a.state.as_str(),
            a.decided_by.as_deref().unwrap_or("unknown")
        ),
        ApprovalState::TimedOut => format!("{} timed out{at}", a.run_id),
        ApprovalState::Canceled => format!("{} was canceled{at}", a.run_id),
    };
    if let Some(r) = &a.reason {
        text.push_str(": ");
        text.push_str(r);
    }
    text
}

/// Which runs do wait, for the help line.
fn waiting_help(store: &dyn ReleaseStore) -> String {
    let waiting: Vec<String> = store
        .runs_in_progress()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            store
                .approval(&r.id)
                .ok()
                .flatten()
                .is_some_and(|a| a.state == ApprovalState::Waiting)
        })
        .map(|r| format!("{} ({})", r.id, r.env))
        .collect();
    if waiting.is_empty() {
        "no run is waiting for approval now".to_string()
    } else {
        format!("waiting for approval: {}", waiting.join(", "))
    }
}
