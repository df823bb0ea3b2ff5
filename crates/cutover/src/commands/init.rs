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
    let ignored = ignore_state_dir(&dir);
    if cli.json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "services": template.services,
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
        if ignored {
            println!("added .cutover/ to .gitignore");
        }
        println!("next: review it, then `cutover validate` and `cutover plan`");
    }
    Ok(OK)
}

/// Adds `.cutover/` to the .gitignore next to cutover.toml when the project is in git and it
/// is not ignored yet. Returns whether it did.
fn ignore_state_dir(dir: &std::path::Path) -> bool {
    if cutover_engine::plan::GitRepo::discover(dir)
        .ok()
        .flatten()
        .is_none()
    {
        return false;
    }
    let path = dir.join(".gitignore");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.lines().any(|l| {
        matches!(
            l.trim(),
            ".cutover" | ".cutover/" | "/.cutover" | "/.cutover/"
        )
    }) {
        return false;
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(".cutover/\n");
    std::fs::write(&path, text).is_ok()
}
