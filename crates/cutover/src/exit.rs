//! Every way a command can fail, and the one place a failure becomes an exit code.

use cutover_config::{ConfigError, UnknownEnvironment};
use cutover_engine::EngineError;
use cutover_store::StoreError;

/// Exit code: done.
pub const OK: i32 = 0;
/// Exit code: the operation failed, or was refused as pointless.
pub const FAILED: i32 = 1;
/// Exit code: usage or configuration error.
pub const USAGE: i32 = 2;
/// Exit code: blocked (another deploy runs, lock held, approval refused).
pub const BLOCKED: i32 = 3;

/// A failure of a command, with what to tell the user.
#[derive(Debug)]
pub enum CliError {
    /// cutover.toml is wrong (rendered with its source span).
    Config(Box<ConfigError>),
    /// Bad usage or configuration outside the file (unknown environment...).
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: Option<String>,
    },
    /// The operation failed or was refused.
    Failed {
        /// What happened.
        message: String,
        /// What to do.
        help: Option<String>,
    },
    /// An engine error (its own exit code).
    Engine(EngineError),
    /// Blocked by another run, a lock or a gate.
    Blocked {
        /// What blocks.
        message: String,
        /// What to do.
        help: Option<String>,
    },
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage { .. } => USAGE,
            CliError::Failed { .. } => FAILED,
            CliError::Blocked { .. } => BLOCKED,
            CliError::Engine(e) => e.exit_code(),
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>, help: Option<String>) -> Self {
        CliError::Usage {
            message: message.into(),
            help,
        }
    }

    /// A failure.
    pub fn failed(message: impl Into<String>, help: Option<String>) -> Self {
        CliError::Failed {
            message: message.into(),
            help,
        }
    }

    /// The error in one line, for a warning ("cutover.toml:3:1: unknown key `nme`").
    pub fn headline(&self) -> String {
        match self {
            CliError::Config(e) => e.to_string(),
            CliError::Usage { message, .. }
            | CliError::Failed { message, .. }
            | CliError::Blocked { message, .. } => message.clone(),
            CliError::Engine(e) => e.to_string(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Config(Box::new(e))
    }
}

impl From<EngineError> for CliError {
    /// The engine's refusals become the CLI's own kinds (same text, same exit code); a store
    /// failure reads "release store: ..." wherever it happened.
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused { message, help } => CliError::Failed { message, help },
            EngineError::Invalid { message, help } => CliError::Usage { message, help },
            EngineError::Blocked { message, help } => CliError::Blocked { message, help },
            EngineError::Store(e) => CliError::from(e),
            other => CliError::Engine(other),
        }
    }
}

impl From<UnknownEnvironment> for CliError {
    fn from(e: UnknownEnvironment) -> Self {
        CliError::usage(
            e.to_string(),
            Some(
                "pass one of the known environments with --env, or declare it under [environments]"
                    .into(),
            ),
        )
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::failed(format!("release store: {e}"), None)
    }
}
