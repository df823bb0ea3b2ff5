//! Secrets encrypted at rest: the store crate's sealing and key handling, with its errors
//! turned into the CLI's.

pub use cutover_store::secrets::{SecretError, SecretKey, valid_name};

use crate::exit::CliError;

impl From<SecretError> for CliError {
    fn from(e: SecretError) -> CliError {
        match e.usage {
            true => CliError::usage(e.message, e.help),
            false => CliError::failed(e.message, e.help),
        }
    }
}

/// The key: `CUTOVER_SECRET_KEY`, else the key file (created with `create`).
pub fn key(project_dir: &std::path::Path, create: bool) -> Result<Option<SecretKey>, CliError> {
    Ok(cutover_store::secrets::key(project_dir, create)?)
}

/// Encrypts `value` for `name` in `env` (None: every environment): `(nonce, ciphertext)`.
pub fn seal(
    key: &SecretKey,
    name: &str,
    env: Option<&str>,
    value: &str,
) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    Ok(cutover_store::secrets::seal(key, name, env, value)?)
}
