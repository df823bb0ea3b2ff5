//! The live terminal view: one line per affected service with a spinner, its stage and the
//! time it has taken; each line settles to ✓ / ✗ / – when the service ends.

use std::collections::HashMap;
use std::time::Duration;

use cutover_engine::event::{Event, EventKind, Outcome};
use cutover_engine::report::Reporter;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The live view (stderr must be a terminal).
pub struct Live {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    width: usize,
}

impl Live {
    /// A live view drawing on stderr.
    pub fn new() -> Self {
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            bars: HashMap::new(),
            width: 8,
        }
    }

    fn running_style(&self) -> ProgressStyle {
        ProgressStyle::with_template(&format!(
            "{{spinner:.cyan}} {{prefix:<{}.bold}}  {{elapsed:>4}}  {{wide_msg}}",
            self.width
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    fn done_style(&self, icon: &str) -> ProgressStyle {
        ProgressStyle::with_template(&format!(
            "{icon} {{prefix:<{}.bold}}  {{elapsed:>4}}  {{wide_msg}}",
            self.width
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Live {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        match &event.kind {
            EventKind::RunStarted { services, .. } => {
                self.width = services
                    .iter()
                    .filter(|s| s.affected)
                    .map(|s| s.name.len())
                    .max()
                    .unwrap_or(8);
                let style = self.running_style();
                for s in services.iter().filter(|s| s.affected) {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(s.name.clone());
                    bar.set_message("waiting");
                    bar.enable_steady_tick(Duration::from_millis(100));
                    self.bars.insert(s.name.clone(), bar);
                }
            }
            EventKind::StageStarted { service, stage } => {
                if let Some(b) = self.bars.get(service) {
                    b.set_message(stage.as_str().to_string());
                }
            }
            EventKind::CommandStarted {
                service,
                stage,
                command,
            } => {
                if let Some(b) = self.bars.get(service) {
                    b.set_message(format!("{}: {command}", stage.as_str()));
                }
            }
            EventKind::ServiceFinished {
                service,
                result,
                release,
                reason,
                ..
            } => {
                if let Some(b) = self.bars.get(service) {
                    let icon = match result {
                        Outcome::Succeeded => "\u{1b}[32m✓\u{1b}[0m",
                        Outcome::Failed => "\u{1b}[31m✗\u{1b}[0m",
                        Outcome::RolledBack => "\u{1b}[33m↺\u{1b}[0m",
                        Outcome::Canceled | Outcome::Skipped => "\u{1b}[2m–\u{1b}[0m",
                    };
                    b.set_style(self.done_style(icon));
                    let what = match (result, release, reason) {
                        (Outcome::Succeeded, Some(r), _) => format!("{} {r}", result.as_str()),
                        (_, _, Some(why)) => format!("{}: {why}", result.as_str()),
                        _ => result.as_str().to_string(),
                    };
                    b.finish_with_message(what);
                }
            }
            EventKind::ApprovalRequested { waiting, .. } => {
                for w in waiting {
                    if let Some(b) = self.bars.get(&w.service) {
                        b.set_message("awaiting approval");
                    }
                }
                if let Some(line) = cutover_engine::report::text::line(&event.kind) {
                    let _ = self.multi.println(line);
                }
            }
            EventKind::ApprovalDecided { .. } => {
                if let Some(line) = cutover_engine::report::text::line(&event.kind) {
                    let _ = self.multi.println(line);
                }
            }
            EventKind::RunCanceling { reason } => {
                let _ = self.multi.println(format!("canceling: {reason}"));
            }
            EventKind::RunFinished { .. } => {
                for b in self.bars.values() {
                    if !b.is_finished() {
                        b.abandon();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
