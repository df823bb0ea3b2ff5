//! How errors reach the user: a miette report for configuration errors (with the source
//! snippet), an `error:` line plus `help:` for the rest.

use std::io::{IsTerminal, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::exit::CliError;

/// Prints `err` to stderr.
pub fn report(err: &CliError) {
    let mut stderr = std::io::stderr().lock();
    match err {
        CliError::Config(e) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let theme = if color {
                GraphicalTheme::unicode()
            } else {
                GraphicalTheme::unicode_nocolor()
            };
            let mut out = String::new();
            let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(2);
            let _ = writeln!(stderr, "error: {e}");
            if handler.render_report(&mut out, e.as_ref()).is_ok() {
                let _ = write!(stderr, "{out}");
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
