//! TOML text → [`RawFile`], collecting every syntax and shape error.
//!
//! serde stops at the first error, so the decoder deserializes the spanned TOML tree, turns the
//! error into a [`Diag`] worded for users, removes the offending key from the tree and tries again,
//! until the rest decodes. The key lists in "unknown key" help come from serde's own "expected one
//! of" text, so `raw.rs` stays the single source of truth.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::duration::DURATION_HELP;
use crate::error::Diag;
use crate::raw::RawFile;
use crate::validate::suggest;

/// Upper bound on decode attempts (each removes one key).
const MAX_ATTEMPTS: usize = 64;

/// Decodes `text`; returns the raw file (with offending keys removed) when the text is valid
/// TOML, and every problem found.
pub(crate) fn decode(text: &str) -> (Option<RawFile>, Vec<Diag>) {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let diags = errors.iter().map(syntax_diag).collect();
        return (None, diags);
    }
    let span = root.span();
    let mut table = root.into_inner();
    let mut diags = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let value = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        match RawFile::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(raw) => return (Some(raw), diags),
            Err(e) => {
                let at = e.span().unwrap_or(0..0);
                let path = locate(&table, &at);
                diags.push(describe(e.message(), at.clone(), &path));
                if !remove(&mut table, &path) {
                    return (None, diags);
                }
            }
        }
    }
    (None, diags)
}

fn syntax_diag(e: &toml::de::Error) -> Diag {
    let message = e.message().trim().to_string();
    let message = message.lines().next().unwrap_or("invalid TOML").to_string();
    Diag::new(e.span(), format!("invalid TOML: {message}"))
        .help("see https://toml.io for the syntax; strings need quotes, tables are [name]")
        .label("TOML syntax error")
}

/// One step of a path through the TOML tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    /// A table key with the span of the key.
    Key(String, Range<usize>),
    /// An array index.
    Index(usize),
}

fn contains(span: &Range<usize>, at: &Range<usize>) -> bool {
    span.start <= at.start && at.start < span.end.max(span.start + 1)
}

/// The deepest path whose key contains the start of `at`, else the deepest whose value does.
fn locate(table: &DeTable<'_>, at: &Range<usize>) -> Vec<Seg> {
    let mut best = Best::default();
    let mut path = Vec::new();
    walk_table(table, at, &mut path, &mut best);
    if best.key.is_empty() {
        best.value
    } else {
        best.key
    }
}

#[derive(Default)]
struct Best {
    key: Vec<Seg>,
    value: Vec<Seg>,
}

fn walk_table(table: &DeTable<'_>, at: &Range<usize>, path: &mut Vec<Seg>, best: &mut Best) {
    for (k, v) in table.iter() {
        path.push(Seg::Key(k.get_ref().to_string(), k.span()));
        if contains(&k.span(), at) && path.len() >= best.key.len() {
            best.key = path.clone();
        }
        if contains(&v.span(), at) && path.len() >= best.value.len() {
            best.value = path.clone();
        }
        walk_value(v.get_ref(), at, path, best);
        path.pop();
    }
}

fn walk_value(value: &DeValue<'_>, at: &Range<usize>, path: &mut Vec<Seg>, best: &mut Best) {
    match value {
        DeValue::Table(t) => walk_table(t, at, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if contains(&item.span(), at) && path.len() >= best.value.len() {
                    best.value = path.clone();
                }
                walk_value(item.get_ref(), at, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Removes the last key of `path` from the tree; false when there is nothing to remove.
fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Seg::Key(..))) else {
        return false;
    };
    remove_in_table(table, &path[..=last_key])
}

fn remove_in_table(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((Seg::Key(_, span), rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        let key = table.keys().find(|k| k.span() == *span).cloned();
        return key.is_some_and(|k| table.remove(&k).is_some());
    }
    for (k, v) in table.iter_mut() {
        if k.span() == *span {
            return remove_in_value(v.get_mut(), rest);
        }
    }
    false
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path.first()) {
        (DeValue::Table(t), Some(Seg::Key(..))) => remove_in_table(t, path),
        (DeValue::Array(items), Some(Seg::Index(i))) => match items.get_mut(*i) {
            Some(item) => remove_in_value(item.get_mut(), &path[1..]),
            None => false,
        },
        _ => false,
    }
}

/// `[services.api.health]`-style name of the table holding the last key of `path`.
fn section(path: &[Seg]) -> String {
    let end = path
        .iter()
        .rposition(|s| matches!(s, Seg::Key(..)))
        .unwrap_or(0);
    if end == 0 {
        return "at the top level".to_string();
    }
    format!("in [{}]", dotted(&path[..end]))
}

fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k, _) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The name a message uses for the value at `path`: `port`, `env.LOG_LEVEL`, `checks[1]`.
fn key_name(path: &[Seg]) -> String {
    let last_key = path
        .iter()
        .rposition(|s| matches!(s, Seg::Key(..)))
        .unwrap_or(0);
    let start = match path.get(last_key.wrapping_sub(1)) {
        Some(Seg::Key(parent, _))
            if (parent == "env" || parent == "build_args") && last_key > 0 =>
        {
            last_key - 1
        }
        _ => last_key,
    };
    let name = dotted(path.get(start..).unwrap_or_default());
    if name.is_empty() {
        "the file".to_string()
    } else {
        name
    }
}

fn leaf_key(path: &[Seg]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k, _) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .unwrap_or("")
}

fn parent_key(path: &[Seg]) -> &str {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k, _) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    keys.len()
        .checked_sub(2)
        .and_then(|i| keys.get(i))
        .copied()
        .unwrap_or("")
}

/// Keys whose values are durations.
pub(crate) const DURATION_KEYS: &[&str] = &[
    "drain_timeout",
    "scale_down_delay",
    "timeout",
    "initial_delay",
    "ready_timeout",
    "period",
    "interval",
    "max_p99_latency",
    "verdict_timeout",
    "max_latency",
];

/// What a key's value must be, in user words: shared by type errors here and range errors in
/// validation so both read the same.
pub(crate) fn expectation(key: &str, parent: &str) -> Option<&'static str> {
    Some(match key {
        "port" | "container_port" => "an integer from 1 to 65535",
        "min" | "max" | "target_inflight" if parent == "autoscale" => "an integer of at least 1",
        "autoscale" => "a table: { min = 2, max = 6, target_inflight = 10 }",
        "expect_status" => "an integer from 100 to 599",
        "weight" => "an integer from 1 to 100",
        "max_parallel" | "keep_releases" | "instances" | "batch" | "success_threshold"
        | "failure_threshold" | "min_requests" => "an integer of at least 1",
        "max_error_rate" => "a number from 0 to 1",
        "cpus" => "a number of CPUs such as 0.5",
        "memory" => "a size such as \"256MB\"",
        "constraints" => "an array of strings such as [\"node.role == worker\"]",
        "strategy" => "one of blue-green, rolling, canary, immediate",
        "target" => "one of local, docker, swarm, kubernetes, exec",
        "type" if parent == "health" => "one of http, tcp",
        "format" => "one of json, slack",
        "checks" | "pre_deploy" | "post_deploy" | "watch" | "depends_on" | "on" => {
            "an array of strings"
        }
        "smoke" => "an array of tables ([[services.NAME.smoke]])",
        "steps" => "an array of tables: [{ weight = 5, pause = \"30m\" }]",
        "notify" => "an array of tables ([[notify]])",
        "health" | "canary" | "prometheus" | "env" | "project" | "defaults" | "services"
        | "environments" | "expect_json" | "build_args" | "docker" | "swarm" => "a table",
        "pause" => "a duration such as \"30m\" or \"manual\"",
        k if DURATION_KEYS.contains(&k) => "a duration string such as \"10s\"",
        _ => return None,
    })
}

fn translate_expected(serde: &str) -> String {
    let serde = serde.trim();
    match serde {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" | "i8" | "i16" | "usize" => {
            "an integer".into()
        }
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        s if s.starts_with("struct ") || s.starts_with("enum ") => "a table".into(),
        s => s.to_string(),
    }
}

fn translate_found(serde: &str) -> String {
    match serde.trim() {
        "map" => "a table".into(),
        "sequence" => "an array".into(),
        s => s.replace("floating point", "float"),
    }
}

/// Names between backticks in a serde message.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Turns a serde/toml error message into a user-facing diagnostic.
fn describe(message: &str, at: Range<usize>, path: &[Seg]) -> Diag {
    let message = message.trim();
    let key = key_name(path);
    let leaf = leaf_key(path);
    let parent = parent_key(path);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let (unknown, valid) = names
            .split_first()
            .map_or(("", &[][..]), |(u, v)| (u.as_str(), v));
        let list = valid.join(", ");
        let help = if valid.is_empty() {
            "this table takes no keys".to_string()
        } else if ["path", "watch", "depends_on"].contains(&unknown) {
            format!(
                "`{unknown}` belongs to a service: set it in [services.NAME]; valid keys here: {list}"
            )
        } else if ["registry", "docker", "swarm"].contains(&unknown) {
            format!(
                "`{unknown}` belongs to an environment: set it in [environments.NAME]; valid keys here: {list}"
            )
        } else {
            match suggest(unknown, valid.iter().map(String::as_str)) {
                Some(close) => format!("did you mean `{close}`? valid keys: {list}"),
                None => format!("valid keys: {list}"),
            }
        };
        // When the error points at the table rather than the key, name the table itself.
        let place = if leaf == unknown {
            section(path)
        } else {
            format!("in [{}]", dotted(path))
        };
        return Diag::at(at, format!("unknown key `{unknown}` {place}"))
            .help(help)
            .label("unknown key");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        let (unknown, valid) = names
            .split_first()
            .map_or(("", &[][..]), |(u, v)| (u.as_str(), v));
        let list = valid.join(", ");
        let help = match suggest(unknown, valid.iter().map(String::as_str)) {
            Some(close) => format!("did you mean \"{close}\"? valid values: {list}"),
            None => format!("valid values: {list}"),
        };
        return Diag::at(
            at,
            format!("`{key}` must be one of {list}, found \"{unknown}\""),
        )
        .help(help)
        .label("unknown value");
    }
    let typed = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some(rest) = typed {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let expected = expectation(leaf, parent)
            .filter(|_| !matches!(path.last(), Some(Seg::Index(_))))
            .map(str::to_string)
            .unwrap_or_else(|| translate_expected(expected));
        let found = translate_found(found);
        // An integer where an integer is expected failed only for its size (beyond 64 bits).
        if found.starts_with("integer") && expected.contains("integer") {
            let literal = found.split('`').nth(1).unwrap_or("it");
            let size = if literal.starts_with('-') {
                "too small"
            } else {
                "too large"
            };
            return Diag::at(at, format!("`{key}` is {size}: {literal}"))
                .help(format!("`{leaf}` must be {expected}"))
                .label(size);
        }
        let help = type_help(leaf, parent, &found, &expected);
        return Diag::at(at, format!("`{key}` must be {expected}, found {found}"))
            .help_opt(help)
            .label("wrong type");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let names = backticked(rest);
        let missing = names.first().map_or("?", String::as_str);
        return Diag::at(at, format!("`{key}` is missing `{missing}`"))
            .help(format!("add `{missing} = ...`"))
            .label("incomplete");
    }
    Diag::at(at, format!("`{key}`: {message}"))
}

fn type_help(leaf: &str, parent: &str, found: &str, expected: &str) -> Option<String> {
    if parent == "build_args" {
        let literal = found.split('`').nth(1).unwrap_or("...");
        let scalar = ["integer", "float", "boolean"]
            .iter()
            .any(|t| found.starts_with(t));
        return Some(if scalar {
            format!("build args are strings; quote it: {leaf} = \"{literal}\"")
        } else {
            format!("build args are strings: {leaf} = \"value\"")
        });
    }
    if parent == "env" || leaf == "secret" && parent != "canary" {
        if found.starts_with("integer")
            || found.starts_with("float")
            || found.starts_with("boolean")
        {
            let literal = found.split('`').nth(1).unwrap_or("...");
            return Some(format!(
                "env values are strings; quote it: {leaf} = \"{literal}\""
            ));
        }
        return Some(format!(
            "write {leaf} = \"value\" or {leaf} = {{ secret = \"NAME\" }}"
        ));
    }
    if DURATION_KEYS.contains(&leaf) || leaf == "pause" {
        return Some(DURATION_HELP.to_string());
    }
    if expected.contains("integer") && found.starts_with("string") {
        let literal = found.trim_start_matches("string ").trim_matches('"');
        if literal.parse::<i64>().is_ok() {
            return Some(format!("write it without quotes: {leaf} = {literal}"));
        }
    }
    if expected == "an array of strings" && found.starts_with("string") {
        return Some(format!(
            "wrap it in brackets: {leaf} = [{}]",
            found.trim_start_matches("string ")
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn first(text: &str) -> Diag {
        let (_, diags) = decode(text);
        diags
            .into_iter()
            .next()
            .unwrap_or_else(|| Diag::new(None, "no error"))
    }

    #[test]
    fn unknown_key_names_the_section_and_suggests() {
        let d = first("[project]\nname = \"x\"\n[services.api]\npath = \"api\"\nhelth = 1\n");
        assert_eq!(d.message, "unknown key `helth` in [services.api]");
        assert!(
            d.help
                .unwrap_or_default()
                .starts_with("did you mean `health`?")
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let d = first("[services.api]\nport = \"8080\"\n");
        assert_eq!(
            d.message,
            "`port` must be an integer from 1 to 65535, found string \"8080\""
        );
    }

    #[test]
    fn collects_several_errors() {
        let (_, diags) =
            decode("[services.api]\nport = \"x\"\nhelth = 1\n[services.web]\nrun = 5\n");
        assert_eq!(diags.len(), 3, "{diags:#?}");
    }

    #[test]
    fn env_numbers_say_quote_it() {
        let d = first("[services.api]\nenv = { WORKERS = 4 }\n");
        assert!(
            d.message.starts_with("`env.WORKERS` must be a string"),
            "{}",
            d.message
        );
        assert!(d.help.unwrap_or_default().contains("quote it"));
    }
}
