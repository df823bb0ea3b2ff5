//! Drawing the dashboard (ratatui) and its plain-text frame (`--once`).

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};

use super::model::{ServiceRow, Snapshot, age};

/// The smallest terminal the dashboard draws in.
pub const MIN_WIDTH: u16 = 60;
/// The smallest terminal height the dashboard draws in.
pub const MIN_HEIGHT: u16 = 10;

/// What the screen shows.
pub struct View<'a> {
    /// The data.
    pub snapshot: &'a Snapshot,
    /// The selected service's index.
    pub selected: usize,
    /// The detail of the selected service (events, log tail), when open.
    pub detail: Option<&'a Detail>,
    /// Now (for ages).
    pub now: DateTime<Utc>,
    /// The refresh interval, shown in the footer.
    pub interval: String,
}

/// The detail pane's content.
pub struct Detail {
    /// The service.
    pub service: String,
    /// Recent events, oldest first.
    pub events: Vec<String>,
    /// The release whose log is shown.
    pub release: Option<String>,
    /// The log's last lines.
    pub log: Vec<String>,
}

/// Which optional parts of the table fit.
#[derive(Debug, Clone, Copy)]
struct Fit {
    full_release: bool,
    health_words: bool,
    url: bool,
}

impl Fit {
    /// The richest set of columns that fits `width`.
    fn for_width(width: u16) -> Fit {
        let mut fit = Fit {
            full_release: false,
            health_words: false,
            url: false,
        };
        let mut used = NARROW_WIDTH;
        for (extra, upgrade) in [
            (9u16, 0usize), // full release id
            (10, 1),        // health words
            (23, 2),        // URL
        ] {
            if used + extra <= width {
                used += extra;
                match upgrade {
                    0 => fit.full_release = true,
                    1 => fit.health_words = true,
                    _ => fit.url = true,
                }
            }
        }
        fit
    }
}

/// Columns and spaces of the narrowest table (fits 80 columns).
const NARROW_WIDTH: u16 = 11 + 14 + 11 + 1 + 5 + 8 + 6 + 5 + 6 + 4 + 9;

fn headers(fit: Fit) -> Vec<&'static str> {
    let mut h = vec!["SERVICE", "RELEASE", "PHASE", "HEALTH", "INST", "TRAFFIC"];
    if fit.url {
        h.push("URL");
    }
    h.extend(["REQ/S", "ERR%", "P99", "AGE"]);
    if !fit.health_words {
        h[3] = "H";
    }
    h
}

/// A release id without its date when it has to be short: `101500-abc1234`.
fn release_text(r: &ServiceRow, full: bool) -> String {
    let id = r.release.clone().unwrap_or_else(|| "-".into());
    if full {
        return id;
    }
    match id.split_once('-') {
        Some((date, rest)) if date.len() == 8 => rest.to_string(),
        _ => id,
    }
}

fn health_text(h: &str, words: bool) -> String {
    let sym = match h {
        "healthy" => "✓",
        "unhealthy" => "✗",
        "stopped" => "-",
        _ => "?",
    };
    if words {
        format!("{sym} {h}")
    } else {
        sym.to_string()
    }
}

fn cells(r: &ServiceRow, fit: Fit, now: DateTime<Utc>) -> Vec<String> {
    let mut c = vec![
        r.name.clone(),
        release_text(r, fit.full_release),
        r.phase.clone().unwrap_or_else(|| "-".into()),
        health_text(&r.health, fit.health_words),
        format!("{}/{}", r.ready, r.desired),
        r.traffic.clone(),
    ];
    if fit.url {
        c.push(r.url.clone());
    }
    let dash = || "–".to_string();
    c.push(r.rps.map_or_else(dash, |v| format!("{v:.1}")));
    c.push(
        r.error_rate
            .map_or_else(dash, |v| format!("{:.1}", v * 100.0)),
    );
    c.push(r.p99_ms.map_or_else(dash, |v| format!("{v:.0}ms")));
    c.push(age(r.deployed_at, now));
    c
}

/// One plain-text frame: a header, the table with every column, the summary.
pub fn plain(snapshot: &Snapshot, now: DateTime<Utc>) -> String {
    let fit = Fit {
        full_release: true,
        health_words: true,
        url: true,
    };
    let mut out = format!(
        "cutover monitor: {} · {} · {}\n",
        snapshot.project,
        snapshot.env,
        snapshot.taken_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let mut t = crate::render::table::Table::new(&headers(fit));
    for r in &snapshot.rows {
        t.row(cells(r, fit, now));
    }
    out.push_str(&t.render());
    out.push_str(&snapshot.summary());
    out.push('\n');
    out
}

fn phase_style(phase: &str) -> Style {
    match phase {
        "ACTIVE" => Style::new().fg(Color::Green),
        "FAILED" | "ROLLED_BACK" => Style::new().fg(Color::Red),
        "CANCELED" | "SUPERSEDED" | "-" => Style::new().fg(Color::DarkGray),
        _ => Style::new().fg(Color::Yellow),
    }
}

fn health_style(h: &str) -> Style {
    match h {
        "healthy" => Style::new().fg(Color::Green),
        "unhealthy" => Style::new().fg(Color::Red),
        "stopped" => Style::new().fg(Color::DarkGray),
        _ => Style::new().fg(Color::Yellow),
    }
}

/// Draws a frame.
pub fn draw(frame: &mut Frame<'_>, view: &View<'_>) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT}, have {}x{}); q quits",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let [top, body, summary, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let snap = view.snapshot;
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("cutover monitor", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                " · {} · {} · {}",
                snap.project,
                snap.env,
                view.now.format("%H:%M:%S UTC")
            )),
        ])),
        top,
    );
    match view.detail {
        None => draw_table(frame, body, view),
        Some(d) => draw_detail(frame, body, d),
    }
    frame.render_widget(Paragraph::new(snap.summary()), summary);
    let selected_url = snap
        .rows
        .get(view.selected)
        .map(|r| format!(" · {}", r.url))
        .unwrap_or_default();
    let keys = match view.detail {
        None => format!(
            "↑↓/jk select · Enter details · q quit · every {}{selected_url}",
            view.interval
        ),
        Some(_) => format!("Esc back · q quit · every {}", view.interval),
    };
    frame.render_widget(
        Paragraph::new(keys).style(Style::new().fg(Color::DarkGray)),
        footer,
    );
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, view: &View<'_>) {
    let fit = Fit::for_width(area.width);
    let header = Row::new(headers(fit)).style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row<'_>> = view
        .snapshot
        .rows
        .iter()
        .map(|r| {
            let texts = cells(r, fit, view.now);
            let mut row_cells = Vec::with_capacity(texts.len());
            for (i, t) in texts.into_iter().enumerate() {
                let style = match i {
                    2 => phase_style(&t),
                    3 => health_style(&r.health),
                    _ => Style::new(),
                };
                row_cells.push(Cell::from(t).style(style));
            }
            Row::new(row_cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(11),
        Constraint::Length(if fit.full_release { 23 } else { 14 }),
        Constraint::Length(11),
        Constraint::Length(if fit.health_words { 11 } else { 1 }),
        Constraint::Length(5),
        Constraint::Length(8),
    ];
    if fit.url {
        widths.push(Constraint::Min(22));
    }
    widths.extend([
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(4),
    ]);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::new().borders(Borders::TOP));
    let mut state = TableState::default().with_selected(Some(view.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, d: &Detail) {
    let [events, log] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let tail = |lines: &[String], room: u16| -> Vec<Line<'static>> {
        let room = usize::from(room.saturating_sub(2));
        let skip = lines.len().saturating_sub(room);
        lines[skip..]
            .iter()
            .map(|l| Line::from(l.clone()))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(tail(&d.events, events.height)).block(
            Block::new()
                .borders(Borders::ALL)
                .title(format!(" {}: recent events ", d.service)),
        ),
        events,
    );
    let title = match &d.release {
        Some(r) => format!(" log of {r} "),
        None => " log: no release yet ".to_string(),
    };
    frame.render_widget(
        Paragraph::new(tail(&d.log, log.height))
            .block(Block::new().borders(Borders::ALL).title(title)),
        log,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_narrow_table_fits_80_columns() {
        const { assert!(NARROW_WIDTH <= 80) };
        let fit = Fit::for_width(80);
        assert!(!fit.url && !fit.full_release);
        let wide = Fit::for_width(200);
        assert!(wide.url && wide.full_release && wide.health_words);
    }

    #[test]
    fn plain_frame() {
        use chrono::TimeZone;
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 10, 20, 0).unwrap();
        let snapshot = Snapshot {
            project: "odoobo".into(),
            env: "production".into(),
            agent_running: true,
            agent_uptime: Some(3700),
            rows: vec![
                ServiceRow {
                    name: "api".into(),
                    release: Some("20261123-101500-abc1234".into()),
                    phase: Some("ACTIVE".into()),
                    health: "healthy".into(),
                    ready: 2,
                    desired: 2,
                    traffic: "can 25%".into(),
                    url: "http://127.0.0.1:8080".into(),
                    rps: Some(12.34),
                    error_rate: Some(0.012),
                    p99_ms: Some(87.6),
                    deployed_at: Some(now - chrono::Duration::minutes(5)),
                },
                ServiceRow {
                    name: "pr-review".into(),
                    release: None,
                    phase: None,
                    health: "stopped".into(),
                    ready: 0,
                    desired: 1,
                    traffic: "-".into(),
                    url: "http://127.0.0.1:8081".into(),
                    ..ServiceRow::default()
                },
            ],
            taken_at: now,
            problem: None,
        };
        insta::assert_snapshot!(plain(&snapshot, now));
    }

    #[test]
    fn short_release_drops_the_date() {
        let r = ServiceRow {
            release: Some("20261123-101500-abc1234".into()),
            ..ServiceRow::default()
        };
        assert_eq!(release_text(&r, false), "101500-abc1234");
        assert_eq!(release_text(&r, true), "20261123-101500-abc1234");
    }
}
