//! `cutover.toml` → a validated [`Project`], resolved per environment.
//!
//! This is the first step of every cutover command: the engine, the agent and the CLI never read
//! TOML themselves. They call [`load`] (or [`parse`]), get a [`Project`] whose every value has been
//! checked once, and ask it for a [`ResolvedEnvironment`] with [`Project::resolve`].
//!
//! # Layout
//! - `raw.rs`: the serde mirror of the file; unknown keys are errors; values keep their spans.
//!   It is the one list of keys, used by the decoder's messages and by [`json_schema`].
//! - `decode.rs`: TOML text → raw tree, collecting every syntax and shape error.
//! - `validate.rs` (+ `validate/`): raw → [`model`], checking names, ranges, durations, paths,
//!   globs, the dependency graph and per-environment rules.
//! - `resolve.rs`: layering of defaults, service, environment and environment.service keys.
//! - `model.rs`: the validated types everything downstream uses.
//! - `duration.rs`, `error.rs`, `schema.rs`, `init.rs` (the `cutover init` template).
//!
//! # Theory of operation
//! Parsing happens in three passes. The TOML parser builds a tree with a byte span on every key
//! and value. The decoder deserializes that tree into the raw mirror; when serde reports an error
//! (an unknown key, a wrong type) the decoder rewords it, removes the offending key from the tree
//! and tries again, so one run reports every such error rather than the first. Validation then
//! turns the raw values into the model, recording each problem with the span of the key or value
//! at fault and a help line saying what would be valid. Only when all of that is clean does it
//! resolve each environment and check what needs the whole picture (targets missing `run` or
//! `port`, two services on one port). All problems, sorted by position, become one
//! [`ConfigError`] whose `others` hold the rest.

mod decode;
mod duration;
mod error;
mod init;
pub mod model;
mod raw;
mod resolve;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, UnknownEnvironment};
pub use init::{InitTemplate, init_template};
pub use model::*;
pub use schema::json_schema;
pub use validate::suggest;

pub(crate) use error::Diag;

/// The configuration file's name.
pub const FILE_NAME: &str = "cutover.toml";

/// Reads `<project_dir>/cutover.toml`, parses and validates it.
// The error is large (it carries the source for its snippet) but only travels once, to the CLI.
#[allow(clippy::result_large_err)]
pub fn load(project_dir: &Path) -> Result<Project, ConfigError> {
    let dir = std::path::absolute(project_dir).unwrap_or_else(|_| project_dir.to_path_buf());
    let file = dir.join(FILE_NAME);
    match std::fs::read_to_string(&file) {
        Ok(text) => parse(&text, &file, &dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::without_span(
            &file,
            format!("no {FILE_NAME} in {}", dir.display()),
            Some("run `cutover init` to write one, or pass -C DIR".to_string()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(ConfigError::without_span(
            &file,
            "the file is not valid UTF-8",
            Some("save it as UTF-8 text".to_string()),
        )),
        Err(e) => Err(ConfigError::without_span(
            &file,
            format!("cannot read the file: {e}"),
            None,
        )),
    }
}

/// Parses and validates `src` as the file `file` of the project in `project_dir` (both absolute).
///
/// Service paths are checked to exist as directories under `project_dir`.
#[allow(clippy::result_large_err)]
pub fn parse(src: &str, file: &Path, project_dir: &Path) -> Result<Project, ConfigError> {
    let (raw, mut diags) = decode::decode(src);
    let pruned = !diags.is_empty();
    let project =
        raw.and_then(|raw| validate::validate(raw, file, project_dir, pruned, &mut diags));
    if let Some(err) = error::into_error(file, src, diags) {
        return Err(err);
    }
    project
        .ok_or_else(|| ConfigError::without_span(file, "the configuration could not be read", None))
}

/// Searches `start` and its ancestors for `cutover.toml`; returns the directory holding it.
pub fn find_project_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(FILE_NAME).is_file())
        .map(Path::to_path_buf)
}
