//! `cutover secrets set|list|rm`: the encrypted secret store.

use std::io::{IsTerminal, Read};

use serde::Serialize;

use crate::cli::{Cli, SecretsAction, SecretsArgs};
use crate::context;
use crate::exit::{CliError, FAILED, OK};
use crate::render::table::Table;
use crate::secrets;

#[derive(Serialize)]
struct Row {
    name: String,
    env: Option<String>,
    updated_at: String,
}

/// Sets, lists or removes stored secrets.
pub fn run(cli: &Cli, args: &SecretsArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    // `--env` names an environment the project knows; without it, the secret serves them all.
    let env = match &cli.env {
        Some(name) => Some(project.resolve(name)?.name),
        None => None,
    };
    match &args.action {
        SecretsAction::Set { name } => {
            check_name(name)?;
            let value = read_value(name)?;
            let key = secrets::key(&project.dir, true)?
                .ok_or_else(|| CliError::failed("the secret key could not be created", None))?;
            let (nonce, ciphertext) = secrets::seal(&key, name, env.as_deref(), &value)?;
            let store = context::store(&project, true)?
                .ok_or_else(|| CliError::failed("the release store could not be opened", None))?;
            store.put_secret(
                name,
                env.as_deref(),
                &nonce,
                &ciphertext,
                chrono::Utc::now(),
            )?;
            if cli.json {
                println!("{}", serde_json::json!({ "name": name, "env": env }));
            } else {
                println!("stored secret {name} ({})", scope(env.as_deref()));
            }
            Ok(OK)
        }
        SecretsAction::List => {
            let entries = match context::store(&project, false)? {
                Some(s) => s.secrets_list()?,
                None => Vec::new(),
            };
            let rows: Vec<Row> = entries
                .into_iter()
                .filter(|e| env.is_none() || e.env.is_none() || e.env == env)
                .map(|e| Row {
                    name: e.name,
                    env: e.env,
                    updated_at: e
                        .updated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
                .collect();
            if cli.json {
                println!("{}", serde_json::json!({ "secrets": rows }));
                return Ok(OK);
            }
            if rows.is_empty() {
                println!("no secrets stored");
                return Ok(OK);
            }
            let mut t = Table::new(&["NAME", "ENV", "UPDATED"]);
            for r in &rows {
                t.row(vec![
                    r.name.clone(),
                    r.env.clone().unwrap_or_else(|| "*".into()),
                    r.updated_at.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(OK)
        }
        SecretsAction::Rm { name } => {
            check_name(name)?;
            let removed = match context::store(&project, false)? {
                Some(s) => s.remove_secret(name, env.as_deref())?,
                None => false,
            };
            if !removed {
                eprintln!("no secret {name} ({})", scope(env.as_deref()));
                return Ok(FAILED);
            }
            if cli.json {
                println!("{}", serde_json::json!({ "name": name, "env": env }));
            } else {
                println!("removed secret {name} ({})", scope(env.as_deref()));
            }
            Ok(OK)
        }
    }
}

fn scope(env: Option<&str>) -> String {
    match env {
        Some(e) => format!("environment {e}"),
        None => "every environment".into(),
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if secrets::valid_name(name) {
        return Ok(());
    }
    Err(CliError::usage(
        format!("`{name}` is not a valid secret name"),
        Some("use letters, digits and `_`, not starting with a digit (e.g. API_KEY)".into()),
    ))
}

/// The value on stdin, without one trailing newline; a terminal or an empty value is refused.
fn read_value(name: &str) -> Result<String, CliError> {
    let hint = Some(format!(
        "pipe the value in: `printf %s VALUE | cutover secrets set {name}`"
    ));
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::usage(
            "cutover secrets set reads the value from stdin, which is a terminal",
            hint,
        ));
    }
    let mut value = String::new();
    stdin
        .lock()
        .read_to_string(&mut value)
        .map_err(|e| CliError::usage(format!("cannot read the value from stdin: {e}"), None))?;
    if let Some(v) = value.strip_suffix('\n') {
        value.truncate(v.strip_suffix('\r').unwrap_or(v).len());
    }
    if value.is_empty() {
        return Err(CliError::usage(
            format!("the value of secret {name} on stdin is empty"),
            hint,
        ));
    }
    Ok(value)
}
