//! `approve`: deciding a deploy waiting at its environment's approval gate
//! (`require_approval = true`), from anywhere.

use cutover_store::{Approval, ApprovalState, ReleaseStore, RunKind};

use super::Context;
use crate::EngineError;

/// What to decide about a waiting run.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The run waiting for approval (`deploy-YYYYMMDD-HHMMSS`).
    pub run: String,
    /// Refuse it rather than approve it.
    pub reject: bool,
    /// Who decides (e.g. `ana@build1`).
    pub by: String,
    /// Why, optionally.
    pub reason: Option<String>,
}

/// Approves (or with [`Decision::reject`], refuses) the waiting run and returns the recorded
/// decision; refused (exit 1) when the run does not exist or is not waiting.
pub fn decide(cx: &Context, decision: &Decision) -> Result<Approval, EngineError> {
    let help = "`cutover status` shows the runs waiting for approval";
    let Some(store) = cx.store(false)? else {
        return Err(EngineError::refused(
            format!(
                "run {} does not exist: nothing has run here yet",
                decision.run
            ),
            Some(help.into()),
        ));
    };
    // A deploy that died while waiting is recorded canceled first: it can't be approved.
    super::settle_interrupted_runs(cx, store.as_ref())?;
    let Some(run) = store.run(&decision.run)? else {
        return Err(EngineError::refused(
            format!("run {} does not exist", decision.run),
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
                if run.kind == RunKind::Deploy {
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
        EngineError::refused(why, Some(waiting_help(store.as_ref())))
    };
    let current = store.approval(&run.id)?;
    if current
        .as_ref()
        .is_none_or(|a| a.state != ApprovalState::Waiting)
    {
        return Err(not_waiting(current));
    }
    let state = if decision.reject {
        ApprovalState::Rejected
    } else {
        ApprovalState::Approved
    };
    let decided = store.decide_approval(
        &run.id,
        state,
        Some(&decision.by),
        decision.reason.as_deref(),
        chrono::Utc::now(),
    )?;
    decided.map_err(not_waiting)
}

/// "approved by ana@build1 at 2026-11-23 10:15:02 UTC: looks good".
pub fn describe(a: &Approval) -> String {
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
