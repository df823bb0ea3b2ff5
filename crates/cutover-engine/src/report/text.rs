//! One line of plain text per event: shared by the log files and the plain terminal reporter.

use crate::command::Stream;
use cutover_store::ApprovalState;

use crate::event::{EventKind, Outcome};

/// The line for an event, without timestamp, or None for events a reader does not need
/// (command output is written by the caller where it belongs).
pub fn line(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::RunStarted {
            kind,
            env,
            services,
        } => {
            let affected = services.iter().filter(|s| s.affected).count();
            format!(
                "{} started in {env}: {affected} of {} services affected",
                kind.as_str(),
                services.len()
            )
        }
        EventKind::ReleaseCreated {
            service,
            release,
            dirty,
            ..
        } => format!(
            "{service}: release {release}{}",
            if *dirty { " (dirty tree)" } else { "" }
        ),
        EventKind::StageStarted { service, stage } => {
            format!("{service}: {} started", stage.as_str())
        }
        EventKind::CommandStarted {
            service, command, ..
        } => format!("{service}: $ {command}"),
        EventKind::Output { .. } => return None,
        EventKind::CommandFinished {
            service,
            success,
            description,
            duration_ms,
            ..
        } => {
            if *success {
                format!("{service}: {description} in {}", ms(*duration_ms))
            } else {
                format!("{service}: {description} after {}", ms(*duration_ms))
            }
        }
        EventKind::StageFinished {
            service,
            stage,
            result,
            reason,
        } => match reason {
            Some(r) if *result != Outcome::Succeeded => {
                format!("{service}: {} {}: {r}", stage.as_str(), result.as_str())
            }
            _ => format!("{service}: {} {}", stage.as_str(), result.as_str()),
        },
        EventKind::PhaseChanged {
            service,
            release,
            phase,
            ..
        } => format!("{service}: release {release} is {phase}"),
        EventKind::ServiceFinished {
            service,
            result,
            reason,
            ..
        } => match reason {
            Some(r) => format!("{service}: {} ({r})", result.as_str()),
            None => format!("{service}: {}", result.as_str()),
        },
        EventKind::ApprovalRequested {
            run,
            env,
            waiting,
            timeout_ms,
        } => {
            let what = waiting
                .iter()
                .map(|w| format!("{} {}", w.service, w.release))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "awaiting approval to deploy to {env}: {what}; approve with `cutover approve {run}` \
                 or stop it with `cutover approve {run} --reject --reason R` (gives up in {})",
                cutover_config::format_duration(std::time::Duration::from_millis(*timeout_ms)),
            )
        }
        EventKind::ApprovalDecided { state, by, reason } => {
            let mut s = match (state, by) {
                (ApprovalState::Approved, Some(by)) => format!("approved by {by}"),
                (ApprovalState::Rejected, Some(by)) => format!("rejected by {by}"),
                (ApprovalState::TimedOut, _) => "approval timed out".to_string(),
                (ApprovalState::Canceled, _) => "approval wait canceled".to_string(),
                (other, _) => format!("approval {}", other.as_str()),
            };
            if let Some(r) = reason {
                s.push_str(": ");
                s.push_str(r);
            }
            s
        }
        EventKind::Progress { service, step, .. } => format!(
            "{service}: {}",
            step.describe().unwrap_or_else(|| "progress".to_string())
        ),
        EventKind::RunCanceling { reason } => format!("canceling: {reason}"),
        EventKind::Merged {
            service,
            branch,
            base,
            result,
            commit,
            reason,
        } => {
            let mut line = format!("{service}: {branch} into {base}: {result}");
            if let Some(c) = commit {
                line.push_str(&format!(" ({c})"));
            }
            if let Some(r) = reason {
                line.push_str(&format!(": {r}"));
            }
            line
        }
        EventKind::SmokeChecked {
            service,
            check,
            passed,
            message,
            duration_ms,
        } => format!(
            "{service}: {check}: {} in {duration_ms}ms: {message}",
            if *passed { "pass" } else { "FAIL" }
        ),
        EventKind::RollbackStarted {
            service,
            from,
            to,
            reason,
        } => match from {
            Some(from) => format!("{service}: rolling back from {from} to {to}: {reason}"),
            None => format!("{service}: rolling back to {to}: {reason}"),
        },
        EventKind::RollbackFinished {
            service,
            to,
            result,
            reason,
        } => match reason {
            Some(r) => format!("{service}: rollback to {to} {}: {r}", result.as_str()),
            None => format!("{service}: rollback to {to} {}", result.as_str()),
        },
        EventKind::RunFinished { status, summary } => format!(
            "run {} {}: {}",
            summary.run,
            status.as_str(),
            summary.counts()
        ),
    })
}

/// An output line as written to a log: `[checks stderr] text`.
pub fn output_line(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::Output {
            stage,
            stream,
            line,
            ..
        } => Some(format!(
            "[{} {}] {line}",
            stage.as_str(),
            match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
        )),
        _ => None,
    }
}

/// Milliseconds as "850ms" or "12.3s".
pub fn ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use cutover_store::ApprovalState;

    use super::line;
    use crate::event::{EventKind, ReleaseRef};

    #[test]
    fn approval_lines() {
        let requested = EventKind::ApprovalRequested {
            run: "deploy-20261123-101500".into(),
            env: "production".into(),
            waiting: vec![
                ReleaseRef {
                    service: "api".into(),
                    release: "20261123-101502-3f9a2c1".into(),
                },
                ReleaseRef {
                    service: "web".into(),
                    release: "20261123-101502-3f9a2c1".into(),
                },
            ],
            timeout_ms: 3_600_000,
        };
        let decided = |state, by: Option<&str>, reason: Option<&str>| EventKind::ApprovalDecided {
            state,
            by: by.map(str::to_string),
            reason: reason.map(str::to_string),
        };
        let lines: Vec<String> = [
            requested,
            decided(ApprovalState::Approved, Some("ana@build1"), None),
            decided(
                ApprovalState::Rejected,
                Some("ana@build1"),
                Some("not on a friday"),
            ),
            decided(ApprovalState::TimedOut, None, None),
            decided(
                ApprovalState::Canceled,
                None,
                Some("the run was interrupted while waiting"),
            ),
        ]
        .iter()
        .filter_map(line)
        .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }
}
