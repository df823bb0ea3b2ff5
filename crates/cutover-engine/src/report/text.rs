//! One line of plain text per event: shared by the log files and the plain terminal reporter.

use crate::command::Stream;
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
        EventKind::Progress {
            service, message, ..
        } => format!("{service}: {message}"),
        EventKind::RunCanceling { reason } => format!("canceling: {reason}"),
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
