//! `cutover monitor`: a live dashboard of the environment's services.
//!
//! # Theory of operation
//! Every `interval` the loop asks the agent's `/v1/status` (never starting an agent: without
//! one, services show as stopped) and the release store, and keeps the result as a
//! [`model::Snapshot`]. Between those, it redraws on a short tick (ages move, keys answer at
//! once); ratatui diffs each frame against the last, so only changed cells are written and the
//! screen does not flicker. A [`TerminalGuard`] owns raw mode and the alternate screen, and
//! restores the terminal on every way out: `q`, Ctrl-C, an error or a panic.

pub mod model;
pub mod view;

use std::io::Write;
use std::time::{Duration, Instant};

use cutover_config::{Project, ResolvedEnvironment};
use cutover_runtime::api::client::AgentClient;
use cutover_runtime::api::types::AgentStatus;
use cutover_store::ReleaseStore;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};

use crate::exit::CliError;

/// How often the screen is redrawn between refreshes (ages, keys).
const TICK: Duration = Duration::from_millis(200);
/// How long one question to the agent may take.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// The sources a snapshot is gathered from.
pub struct Sources {
    /// The project.
    pub project: Project,
    /// The environment shown.
    pub env: ResolvedEnvironment,
    /// The agent's client, whether or not one runs.
    pub agent: AgentClient,
    /// The runtime the client runs on.
    pub runtime: tokio::runtime::Runtime,
}

impl Sources {
    /// The store, opened anew each time (it may appear after the first deploy).
    fn store(&self) -> Option<std::sync::Arc<dyn ReleaseStore>> {
        crate::context::store(&self.project, false).ok().flatten()
    }

    fn agent_status(&self) -> Option<AgentStatus> {
        // Connecting fails at once when no agent listens; nothing is started.
        self.runtime
            .block_on(async { tokio::time::timeout(AGENT_TIMEOUT, self.agent.status()).await })
            .ok()
            .and_then(Result::ok)
    }

    /// A fresh snapshot.
    pub fn snapshot(&self) -> model::Snapshot {
        let store = self.store();
        let agent = self.agent_status();
        model::gather(&self.project, &self.env, store.as_deref(), agent.as_ref())
    }

    fn detail(&self, row: &model::ServiceRow) -> view::Detail {
        let store = self.store();
        view::Detail {
            service: row.name.clone(),
            events: model::recent_events(store.as_deref(), &row.name, &self.env.name, 200),
            release: row.release.clone(),
            log: match &row.release {
                Some(r) => {
                    model::log_tail(&crate::context::state_dir(&self.project), &row.name, r, 200)
                }
                None => vec!["no release yet".into()],
            },
        }
    }
}

/// Raw mode and the alternate screen, undone on drop (and by the panic hook).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, CliError> {
        terminal::enable_raw_mode()
            .map_err(|e| CliError::failed(format!("cannot set up the terminal: {e}"), None))?;
        let guard = TerminalGuard;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(|e| CliError::failed(format!("cannot set up the terminal: {e}"), None))?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(guard)
    }
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = execute!(out, cursor::Show, terminal::LeaveAlternateScreen);
    let _ = out.flush();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the dashboard until `q` or Ctrl-C.
pub fn run(sources: &Sources, interval: Duration) -> Result<(), CliError> {
    let _guard = TerminalGuard::enter()?;
    let backend = CrosstermBackend::new(std::io::stdout());
    let mut term = Terminal::new(backend)
        .map_err(|e| CliError::failed(format!("cannot set up the terminal: {e}"), None))?;
    let interval_text = cutover_config::format_duration(interval);
    let mut snapshot = sources.snapshot();
    let mut fetched = Instant::now();
    let mut selected = 0usize;
    let mut detail: Option<view::Detail> = None;
    let mut refresh = false;
    loop {
        if refresh || fetched.elapsed() >= interval {
            refresh = false;
            snapshot = sources.snapshot();
            fetched = Instant::now();
            if let Some(d) = &detail
                && let Some(row) = snapshot.rows.iter().find(|r| r.name == d.service)
            {
                detail = Some(sources.detail(row));
            }
        }
        selected = selected.min(snapshot.rows.len().saturating_sub(1));
        let v = view::View {
            snapshot: &snapshot,
            selected,
            detail: detail.as_ref(),
            now: chrono::Utc::now(),
            interval: interval_text.clone(),
        };
        term.draw(|f| view::draw(f, &v))
            .map_err(|e| CliError::failed(format!("cannot draw: {e}"), None))?;
        let wait = TICK.min(interval.saturating_sub(fetched.elapsed()));
        let ready = event::poll(wait)
            .map_err(|e| CliError::failed(format!("cannot read the terminal: {e}"), None))?;
        if !ready {
            continue;
        }
        let ev = event::read()
            .map_err(|e| CliError::failed(format!("cannot read the terminal: {e}"), None))?;
        let Event::Key(key) = ev else {
            // A resize (or anything else) just redraws.
            continue;
        };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        match key.code {
            _ if ctrl_c => break,
            KeyCode::Char('q') => break,
            KeyCode::Esc => detail = None,
            KeyCode::Up | KeyCode::Char('k') if detail.is_none() => {
                selected = selected.saturating_sub(1);
            }
            KeyCode::Down | KeyCode::Char('j')
                if detail.is_none() && selected + 1 < snapshot.rows.len() =>
            {
                selected += 1;
            }
            KeyCode::Enter => {
                if let Some(row) = snapshot.rows.get(selected) {
                    detail = Some(sources.detail(row));
                }
            }
            KeyCode::Char('r') => refresh = true,
            _ => {}
        }
    }
    Ok(())
}
