//! `cutover schema`: the JSON Schema of cutover.toml.

use crate::exit::{CliError, OK};

/// Prints the schema on stdout.
pub fn run() -> Result<i32, CliError> {
    let schema = cutover_config::json_schema();
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| CliError::failed(format!("encoding the schema: {e}"), None))?;
    println!("{text}");
    Ok(OK)
}
