//! A small YAML writer for the fixed shape of the files `cutover ci` generates.
//!
//! The generated files are block mappings and sequences of known keys; only the values come
//! from the user (branch, environment and path names), so all the writer has to get right is
//! how a value is quoted. [`scalar`] writes a value plain when YAML reads it back as the same
//! string, single-quoted when not, and as a JSON string (valid YAML) when it holds control
//! characters. Output never contains tabs.

use std::fmt::Write as _;

/// A YAML document built line by line, two spaces per indentation level.
#[derive(Debug, Default)]
pub struct Doc {
    out: String,
}

impl Doc {
    /// An empty document.
    pub fn new() -> Self {
        Doc::default()
    }

    /// `# text` at `level` (control characters in `text` become spaces).
    pub fn comment(&mut self, level: usize, text: &str) {
        self.indent(level);
        if text.is_empty() {
            self.out.push('#');
        } else {
            self.out.push_str("# ");
            self.out.push_str(&comment_text(text));
        }
        self.out.push('\n');
    }

    /// An empty line.
    pub fn blank(&mut self) {
        self.out.push('\n');
    }

    /// `key:` with the key written as given, for fixed keys that tools expect plain even
    /// though YAML 1.1 reads them as booleans (a workflow's `on`).
    pub fn open_plain(&mut self, level: usize, key: &str) {
        self.indent(level);
        self.out.push_str(key);
        self.out.push_str(":\n");
    }

    /// `key:` opening a nested block.
    pub fn open(&mut self, level: usize, key: &str) {
        self.indent(level);
        self.out.push_str(&scalar(key));
        self.out.push_str(":\n");
    }

    /// `key: value`, the value quoted as needed.
    pub fn entry(&mut self, level: usize, key: &str, value: &str) {
        self.raw_entry(level, key, &scalar(value));
    }

    /// `key: value` with the value written as given (a YAML literal such as `true`, `0` or
    /// a flow sequence the caller built from quoted scalars).
    pub fn raw_entry(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "{}: {value}", scalar(key));
    }

    /// `- value` in a block sequence, the value quoted as needed.
    pub fn item(&mut self, level: usize, value: &str) {
        self.indent(level);
        self.out.push_str("- ");
        self.out.push_str(&scalar(value));
        self.out.push('\n');
    }

    /// `- key: value`: the first entry of a mapping that is a sequence item; the mapping's
    /// other entries follow at `level + 1`.
    pub fn item_entry(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {}: {}", scalar(key), scalar(value));
    }

    /// `key: |` and `text` as a literal block at `level + 1` (a shell script). Lines keep their
    /// own leading spaces; the block keeps its final line break.
    pub fn script(&mut self, level: usize, key: &str, text: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "{}: |", scalar(key));
        for line in text.lines() {
            if line.trim().is_empty() {
                self.out.push('\n');
            } else {
                self.indent(level + 1);
                self.out.push_str(line);
                self.out.push('\n');
            }
        }
    }

    /// The document's text.
    pub fn finish(self) -> String {
        self.out
    }

    fn indent(&mut self, level: usize) {
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }
}

/// `items` as a flow sequence of scalars: `[a, 'b c']`.
pub fn flow_seq<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| flow_scalar(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// `s` as a YAML scalar that reads back as the string `s`.
pub fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Like [`scalar`], for a value inside a flow collection (where `,[]{}` need quotes, and
/// `:` and `#` do for some parsers).
fn flow_scalar(s: &str) -> String {
    if is_plain_safe(s) && !s.contains([',', '[', ']', '{', '}', ':', '#']) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Single quotes (`'` doubled), or a JSON string when `s` holds control characters.
fn quoted(s: &str) -> String {
    if s.chars().any(char::is_control) {
        // A JSON string is a valid YAML double-quoted scalar; serializing a str cannot fail.
        serde_json::to_string(s).unwrap_or_else(|_| format!("'{}'", s.replace('\'', "''")))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Whether `s` can be written plain in block context and still read back as this string
/// (not a number, boolean, null, comment, alias, tag, or a key/value pair).
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.chars().any(char::is_control)
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
        || "-?:,[]{}#&*!|>'\"%@`".contains(first)
        || first.is_ascii_digit()
        || first == '+'
        || (first == '.' && (s.len() < 2 || !s[1..].starts_with(|c: char| c.is_ascii_alphabetic())))
        || s.to_ascii_lowercase().starts_with(".inf")
        || s.to_ascii_lowercase().starts_with(".nan")
        || s == "~"
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
    {
        return false;
    }
    // YAML 1.1 booleans and nulls (GitHub's parser still reads `on`/`yes` as booleans in
    // values), in any case.
    !matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
    )
}

/// `text` with control characters (line breaks included) replaced by spaces, for a comment.
pub fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_when_yaml_reads_it_back_as_the_same_string() {
        for s in [
            "main",
            "release/v2",
            "staging",
            "cutover-prod",
            "${{ x == 'y' }}",
            "~/.cargo/bin",
            ".github/x",
        ] {
            assert_eq!(scalar(s), s);
        }
    }

    #[test]
    fn quoted_when_plain_would_change_the_meaning() {
        assert_eq!(scalar(""), "''");
        assert_eq!(scalar("on"), "'on'");
        assert_eq!(scalar("Yes"), "'Yes'");
        assert_eq!(scalar("null"), "'null'");
        assert_eq!(scalar("0.1.0"), "'0.1.0'");
        assert_eq!(scalar("1e3"), "'1e3'");
        assert_eq!(scalar("*"), "'*'");
        assert_eq!(scalar("!important"), "'!important'");
        assert_eq!(scalar("a: b"), "'a: b'");
        assert_eq!(scalar("a #b"), "'a #b'");
        assert_eq!(scalar("it's: x"), "'it''s: x'");
        assert_eq!(scalar("tab\there"), "\"tab\\there\"");
        assert_eq!(scalar("two\nlines"), "\"two\\nlines\"");
        assert_eq!(scalar(" lead"), "' lead'");
        assert_eq!(scalar("~"), "'~'");
        assert_eq!(scalar(".5"), "'.5'");
        assert_eq!(scalar(".Inf"), "'.Inf'");
    }

    #[test]
    fn flow_sequences_quote_flow_indicators() {
        assert_eq!(flow_seq(&["detect", "build"]), "[detect, build]");
        assert_eq!(
            flow_seq(&["a,b", "c]", "d:e", "f#g"]),
            "['a,b', 'c]', 'd:e', 'f#g']"
        );
    }

    #[test]
    fn comments_stay_on_one_line() {
        let mut d = Doc::new();
        d.comment(0, "a\nb");
        assert_eq!(d.finish(), "# a b\n");
    }
}
