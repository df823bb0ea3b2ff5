//! Configuration errors: one [`ConfigError`] per problem, with file, line, column, the source
//! span for a label, a "help:" line, and the further problems found in the same pass.

use std::ops::Range;
use std::path::{Path, PathBuf};

use miette::{NamedSource, SourceSpan};

/// A problem in `cutover.toml`, pointing at the offending key or value.
///
/// `Display` is `"{file}:{line}:{column}: {message}"` (just `"{file}: {message}"` when no position
/// is known, e.g. a missing file). The `miette::Diagnostic` impl adds the labelled source, the help
/// line and every further error found ([`ConfigError::others`]), ordered by position.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
#[error("{}", self.headline())]
pub struct ConfigError {
    /// The file as it is shown (absolute unless changed with [`ConfigError::with_display_path`]).
    pub file: PathBuf,
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column (in characters); 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the key or value.
    pub message: String,
    /// What would be valid.
    #[help]
    pub help: Option<String>,
    /// The file's text, for the labelled snippet.
    #[source_code]
    pub source_code: Option<NamedSource<String>>,
    /// The offending key or value.
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    /// Short text under the span.
    pub label: String,
    /// Further errors found in the same pass, in file order.
    #[related]
    pub others: Vec<ConfigError>,
}

impl ConfigError {
    /// An error with no position (missing or unreadable file).
    pub fn without_span(file: &Path, message: impl Into<String>, help: Option<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            help,
            source_code: None,
            span: None,
            label: String::new(),
            others: Vec::new(),
        }
    }

    /// Shows `path` instead of the file's absolute path (e.g. relative to the current
    /// directory), here and in every related error.
    pub fn with_display_path(mut self, path: &Path) -> Self {
        self.file = path.to_path_buf();
        if let Some(src) = self.source_code.take() {
            let text = src.inner().clone();
            self.source_code = Some(NamedSource::new(path.display().to_string(), text));
        }
        self.others = self
            .others
            .into_iter()
            .map(|e| e.with_display_path(path))
            .collect();
        self
    }

    /// This error followed by every related one, in file order.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.others.iter())
    }

    /// Plain-text rendering of every error: `file:line:col: message` plus an indented
    /// `help:` line each, for logs and terminals without miette's graphics.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for e in self.all() {
            out.push_str(&e.headline());
            out.push('\n');
            if let Some(help) = &e.help {
                out.push_str("  help: ");
                out.push_str(&help.replace('\n', "\n        "));
                out.push('\n');
            }
        }
        out
    }

    fn headline(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file.display(), self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// `--env` named an environment the project does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment `{name}`; known: {}", known.join(", "))]
pub struct UnknownEnvironment {
    /// The name asked for.
    pub name: String,
    /// Every environment the project has, in declaration order.
    pub known: Vec<String>,
}

/// One problem before it is tied to a file: a byte span, a message and a help line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diag {
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
    pub label: String,
}

impl Diag {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Diag {
            span,
            message: message.into(),
            help: None,
            label: "here".to_string(),
        }
    }

    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diag::new(Some(span), message)
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// Turns diagnostics into one [`ConfigError`] (the first by position) with the rest related.
/// Returns `None` when `diags` is empty.
pub(crate) fn into_error(file: &Path, text: &str, mut diags: Vec<Diag>) -> Option<ConfigError> {
    diags.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    diags.dedup();
    let mut errors = diags.into_iter().map(|d| to_error(file, text, d));
    let mut first = errors.next()?;
    first.others = errors.collect();
    Some(first)
}

fn to_error(file: &Path, text: &str, d: Diag) -> ConfigError {
    let (line, column, span) = match d.span {
        Some(span) => {
            let start = floor_char_boundary(text, span.start.min(text.len()));
            let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
            let (line, column) = line_column(text, start);
            (line, column, Some(SourceSpan::from(start..end)))
        }
        None => (0, 0, None),
    };
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        message: d.message,
        help: d.help,
        source_code: Some(NamedSource::new(
            file.display().to_string(),
            text.to_string(),
        )),
        span,
        label: d.label,
        others: Vec::new(),
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, at.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
    }

    #[test]
    fn display_format() {
        let e = into_error(
            Path::new("cutover.toml"),
            "x = 1\n",
            vec![Diag::at(0..1, "unknown key `x`")],
        );
        let e = e.map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("cutover.toml:1:1: unknown key `x`"));
    }
}
