//! Secrets encrypted at rest: the key, sealing and opening values, and looking one up.
//!
//! Values are sealed with XChaCha20-Poly1305 under a random 24-byte nonce; the associated data
//! is `NAME\0ENV` (`ENV` empty for every environment), so a ciphertext cannot be moved to
//! another name or environment. The release store only ever sees the nonce and ciphertext.
//!
//! The key is `CUTOVER_SECRET_KEY` (64 hex characters) when set, else the key file
//! `$XDG_CONFIG_HOME/cutover/key` (or `~/.config/cutover/key`), created on first `secrets set`
//! with mode 0600 in a 0700 directory. It never lives inside the project.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::ReleaseStore;
use crate::atomic::{Durability, create_atomic};

/// Why a secret or the key could not be used: what went wrong, how to fix it, and whether it
/// is the user's input (a usage error) rather than a failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SecretError {
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// A usage error (exit 2) rather than a failure (exit 1).
    pub usage: bool,
}

impl SecretError {
    fn failed(message: impl Into<String>, help: Option<String>) -> SecretError {
        SecretError {
            message: message.into(),
            help,
            usage: false,
        }
    }

    fn usage(message: impl Into<String>, help: Option<String>) -> SecretError {
        SecretError {
            message: message.into(),
            help,
            usage: true,
        }
    }
}

/// The environment variable holding the key.
pub const KEY_VAR: &str = "CUTOVER_SECRET_KEY";

/// A 32-byte secret key.
pub struct SecretKey([u8; 32]);

/// The key: `CUTOVER_SECRET_KEY`, else the key file. With `create`, a missing key file is
/// created with a random key; without, a missing one is None.
pub fn key(project_dir: &Path, create: bool) -> Result<Option<SecretKey>, SecretError> {
    if let Some(value) = std::env::var_os(KEY_VAR) {
        let parsed = value.to_str().and_then(decode_hex);
        return match parsed {
            Some(k) => Ok(Some(SecretKey(k))),
            None => Err(SecretError::usage(
                format!("{KEY_VAR} is not a valid key"),
                Some(format!(
                    "set {KEY_VAR} to 64 hexadecimal characters (32 bytes), e.g. from \
                     `openssl rand -hex 32`, or unset it to use the key file"
                )),
            )),
        };
    }
    let path = key_path()?;
    if path.starts_with(project_dir) {
        return Err(SecretError::usage(
            format!(
                "the secret key file {} would be inside the project",
                path.display()
            ),
            Some("point XDG_CONFIG_HOME (or HOME) outside the repository".into()),
        ));
    }
    match std::fs::metadata(&path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(SecretError::failed(
                    format!(
                        "the secret key file {} can be read by other users",
                        path.display()
                    ),
                    Some(format!("run `chmod 600 {}`", path.display())),
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                SecretError::failed(format!("cannot read {}: {e}", path.display()), None)
            })?;
            decode_hex(text.trim())
                .map(SecretKey)
                .map(Some)
                .ok_or_else(|| {
                    SecretError::failed(
                        format!(
                            "the secret key file {} does not hold 64 hexadecimal characters",
                            path.display()
                        ),
                        None,
                    )
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            match create_key_file(&path) {
                // Another process made it meanwhile: use that one.
                Err(None) => key(project_dir, false),
                Err(Some(e)) => Err(e),
                Ok(k) => Ok(Some(k)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SecretError::failed(
            format!("cannot read {}: {e}", path.display()),
            None,
        )),
    }
}

/// `$XDG_CONFIG_HOME/cutover/key`, else `$HOME/.config/cutover/key`.
fn key_path() -> Result<PathBuf, SecretError> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let config = absolute("XDG_CONFIG_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".config")))
        .ok_or_else(|| {
            SecretError::usage(
                "cannot find the user's config directory for the secret key file",
                Some(format!(
                    "set HOME or XDG_CONFIG_HOME, or set {KEY_VAR} to 64 hexadecimal characters"
                )),
            )
        })?;
    Ok(config.join("cutover").join("key"))
}

/// Writes a new random key to `path` (directory 0700, file 0600, never overwriting, fsynced:
/// losing it loses every secret). `Err(None)` when the file exists already.
fn create_key_file(path: &Path) -> Result<SecretKey, Option<SecretError>> {
    let fail = |e: std::io::Error| {
        Some(SecretError::failed(
            format!("cannot create the secret key file {}: {e}", path.display()),
            None,
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let key = XChaCha20Poly1305::generate_key(&mut OsRng);
    let text = format!("{}\n", encode_hex(&key));
    match create_atomic(path, text.as_bytes(), 0o600, Durability::Fsync) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(None),
        written => written.map_err(fail)?,
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&key);
    Ok(SecretKey(bytes))
}

/// The associated data binding a ciphertext to its name and environment.
fn aad(name: &str, env: Option<&str>) -> Vec<u8> {
    format!("{name}\0{}", env.unwrap_or("")).into_bytes()
}

/// Encrypts `value` for `name` in `env` (None: every environment): `(nonce, ciphertext)`.
pub fn seal(
    key: &SecretKey,
    name: &str,
    env: Option<&str>,
    value: &str,
) -> Result<(Vec<u8>, Vec<u8>), SecretError> {
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = aad(name, env);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: value.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SecretError::failed(format!("cannot encrypt secret {name}"), None))?;
    Ok((nonce.to_vec(), ciphertext))
}

/// Decrypts what [`seal`] produced for `name` in `env`.
pub fn open(
    key: &SecretKey,
    name: &str,
    env: Option<&str>,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<String, SecretError> {
    let undecryptable = || {
        SecretError::failed(
            format!(
                "secret {name} cannot be decrypted with this key: was it set with another \
                 {KEY_VAR}?"
            ),
            Some(format!(
                "use the key it was set with, or set it again with \
                 `printf %s VALUE | cutover secrets set {name}`"
            )),
        )
    };
    if nonce.len() != 24 {
        return Err(undecryptable());
    }
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    let aad = aad(name, env);
    let plain = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| undecryptable())?;
    String::from_utf8(plain).map_err(|_| undecryptable())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The value of secret `name` for environment `env` from `store`: its value for `env`, else
/// its value for every environment; None when neither is stored. The key is read once, when a
/// value is found (`key` caches it across calls).
pub fn lookup(
    store: &dyn ReleaseStore,
    project_dir: &Path,
    name: &str,
    env: &str,
    key: &mut Option<SecretKey>,
) -> Result<Option<String>, SecretError> {
    for scope in [Some(env), None] {
        let sealed = store
            .secret(name, scope)
            .map_err(|e| SecretError::failed(format!("reading secret {name}: {e}"), None))?;
        let Some((nonce, ciphertext)) = sealed else {
            continue;
        };
        if key.is_none() {
            *key = Some(crate::secrets::key(project_dir, false)?.ok_or_else(|| {
                SecretError::failed(
                    format!(
                        "secret {name} is stored, but there is no key to decrypt it \
                         (neither {KEY_VAR} nor a key file)"
                    ),
                    Some(format!("set {KEY_VAR} to the key it was set with")),
                )
            })?);
        }
        if let Some(k) = key.as_ref() {
            return open(k, name, scope, &nonce, &ciphertext).map(Some);
        }
    }
    Ok(None)
}

/// Whether `name` is a valid secret name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_env() {
        let key = SecretKey([7; 32]);
        let (nonce, ct) = seal(&key, "A", Some("prod"), "v").unwrap();
        assert_eq!(open(&key, "A", Some("prod"), &nonce, &ct).unwrap(), "v");
        assert!(open(&key, "B", Some("prod"), &nonce, &ct).is_err());
        assert!(open(&key, "A", None, &nonce, &ct).is_err());
        assert!(open(&SecretKey([8; 32]), "A", Some("prod"), &nonce, &ct).is_err());
    }

    #[test]
    fn hex_and_names() {
        let k = [0xab; 32];
        assert_eq!(decode_hex(&encode_hex(&k)), Some(k));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
        assert!(valid_name("API_KEY") && valid_name("_x1"));
        assert!(!valid_name("1A") && !valid_name("") && !valid_name("A-B"));
    }
}
