//! How errors reach the user: a miette report for configuration errors (each error once, with
//! its source snippet), an `error:` line plus `help:` for the rest.

use std::io::{IsTerminal, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::exit::CliError;

/// Prints `err` to stderr.
pub fn report(err: &CliError) {
    let mut stderr = std::io::stderr().lock();
    match err {
        CliError::Config(e) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let mut theme = if color {
                GraphicalTheme::unicode()
            } else {
                GraphicalTheme::unicode_nocolor()
            };
            // Each error once, introduced by `error:` like every other failure (not `×`).
            theme.characters.error = "error:".into();
            let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(2);
            // One report per error, in file order (miette's own rendering of related errors
            // adds a bare `Error:` line before each).
            for (i, one) in e.all().enumerate() {
                let one = cutover_config::ConfigError {
                    others: Vec::new(),
                    ..one.clone()
                };
                let mut out = String::new();
                if i > 0 {
                    let _ = writeln!(stderr);
                }
                if handler.render_report(&mut out, &one).is_ok() {
                    let _ = write!(stderr, "{out}");
                } else {
                    let _ = write!(stderr, "{}", one.report());
                }
            }
        }
        CliError::Usage { message, help }
        | CliError::Failed { message, help }
        | CliError::Blocked { message, help } => {
            let _ = writeln!(stderr, "error: {message}");
            if let Some(h) = help {
                let _ = writeln!(stderr, "help: {h}");
            }
        }
        CliError::Engine(e) => {
            let _ = writeln!(stderr, "error: {e}");
            if let Some(h) = e.help() {
                let _ = writeln!(stderr, "help: {h}");
            }
        }
    }
}

/// Prints a warning line to stderr.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
}
