//! `cutover init`: a commented cutover.toml for the services found here.

use std::io::Write;

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK};

/// Writes cutover.toml, refusing to overwrite one.
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failed(format!("cannot read the current directory: {e}"), None))?;
    let dir = if cli.dir.is_empty() {
        cwd
    } else {
        context::project_dir(cli)?
    };
    let file = dir.join(cutover_config::FILE_NAME);
    if file.exists() {
        return Err(CliError::failed(
            format!("{} already exists; nothing written", file.display()),
            Some("edit it, or move it away and run `cutover init` again".into()),
        ));
    }
    let template = cutover_config::init_template(&dir).map_err(|e| {
        CliError::failed(
            format!("cannot look for services in {}: {e}", dir.display()),
            None,
        )
    })?;
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", file.display()), None))?;
    f.write_all(template.text.as_bytes())
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", file.display()), None))?;
    let ignored = ignore_build_outputs(&dir, &template.ignores)?;
    if cli.json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "services": template.services,
            "gitignore_added": ignored,
        });
        println!("{doc}");
    } else {
        println!("wrote {}", file.display());
        if template.services.is_empty() {
            println!("no service directories found: edit the example service in it");
        } else {
            println!(
                "{} services: {}",
                template.services.len(),
                template.services.join(", ")
            );
        }
        if !ignored.is_empty() {
            println!("added to .gitignore: {}", ignored.join(" "));
        }
        println!("next: review it, then `cutover validate` and `cutover plan`");
    }
    Ok(OK)
}

/// Adds each of `lines` (`.cutover/` and the build outputs of the languages found) to the
/// `.gitignore` next to cutover.toml, creating it, unless an equivalent line is there already
/// (`x`, `x/`, `/x`, `/x/` ignore the same directory here). Returns the lines it added.
///
/// Without these, the first run of a check or build by hand leaves files that every later
/// `plan` counts as changes.
fn ignore_build_outputs<'a>(
    dir: &std::path::Path,
    lines: &[&'a str],
) -> Result<Vec<&'a str>, CliError> {
    let path = dir.join(".gitignore");
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::failed(
                format!("cannot read {}: {e}", path.display()),
                None,
            ));
        }
    };
    let bare = |l: &str| {
        l.trim()
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    };
    let present: Vec<String> = current.lines().map(bare).collect();
    let added: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !present.contains(&bare(l)))
        .collect();
    if added.is_empty() {
        return Ok(added);
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for l in &added {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display()), None))?;
    Ok(added)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_lines_are_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        std::fs::write(&path, "/.cutover\nnode_modules").unwrap();
        let lines = [".cutover/", "node_modules/", "__pycache__/", "*.pyc"];
        let added = ignore_build_outputs(dir.path(), &lines).unwrap();
        assert_eq!(added, ["__pycache__/", "*.pyc"]);
        let again = ignore_build_outputs(dir.path(), &lines).unwrap();
        assert!(again.is_empty());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "/.cutover\nnode_modules\n__pycache__/\n*.pyc\n"
        );
    }
}
