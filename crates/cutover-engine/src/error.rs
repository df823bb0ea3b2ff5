//! Errors of the engine: what failed, with what.

use std::path::PathBuf;

use cutover_store::StoreError;

/// Everything that stops the engine before or outside a service's own failure (a failing
/// check is an outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Change detection needs git.
    #[error("{} is not inside a git repository, so cutover cannot tell what changed", dir.display())]
    NotGit {
        /// The project dir.
        dir: PathBuf,
    },
    /// A git operation failed.
    #[error("git failed while {doing}: {why}")]
    Git {
        /// What cutover was doing.
        doing: &'static str,
        /// git's message.
        why: String,
    },
    /// `--since REV` or a stored sha does not resolve.
    #[error("cannot resolve revision `{rev}`: {why}")]
    Revision {
        /// The revision as given.
        rev: String,
        /// Why.
        why: String,
    },
    /// A service named on the command line is not in the configuration.
    #[error("unknown service `{name}`")]
    UnknownService {
        /// The name as given.
        name: String,
        /// Declared services.
        known: Vec<String>,
    },
    /// A `watch` glob failed to compile.
    #[error("service `{service}`: invalid watch glob `{glob}`: {why}")]
    Glob {
        /// Service.
        service: String,
        /// Glob.
        glob: String,
        /// Why.
        why: String,
    },
    /// A secret the configuration references has no value.
    #[error("secret `{name}` is not set (referenced by {used_by})")]
    MissingSecret {
        /// Secret name.
        name: String,
        /// Where it is used.
        used_by: String,
    },
    /// An environment's services run on a target this build of cutover cannot drive.
    #[error(
        "environment `{env}` deploys to target `{target}` ({}), which this build of cutover \
         cannot drive",
        services.join(", ")
    )]
    UndrivenTarget {
        /// The target.
        target: String,
        /// The environment.
        env: String,
        /// Its services on that target.
        services: Vec<String>,
        /// The targets this build drives.
        driven: Vec<String>,
    },
    /// A target's engine does not answer (Docker unreachable): nothing was changed.
    #[error("environment `{env}`: {why}")]
    TargetUnavailable {
        /// The environment.
        env: String,
        /// What failed, naming the engine's address.
        why: String,
    },
    /// An operation was refused as it stands (a dirty work tree, a branch in the way...).
    #[error("{message}")]
    Refused {
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: Option<String>,
    },
    /// A request that is wrong as given (a release that does not exist, `--to` with several
    /// services): nothing was done.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: Option<String>,
    },
    /// Blocked by a lock, another run or a gate: nothing was done.
    #[error("{message}")]
    Blocked {
        /// What blocks.
        message: String,
        /// What to do.
        help: Option<String>,
    },
    /// The release store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<cutover_store::secrets::SecretError> for EngineError {
    fn from(e: cutover_store::secrets::SecretError) -> Self {
        match e.usage {
            true => EngineError::Invalid {
                message: e.message,
                help: e.help,
            },
            false => EngineError::Refused {
                message: e.message,
                help: e.help,
            },
        }
    }
}

impl EngineError {
    /// A refusal or failure (exit 1) with what to do.
    pub fn refused(message: impl Into<String>, help: Option<String>) -> Self {
        EngineError::Refused {
            message: message.into(),
            help,
        }
    }

    /// A request wrong as given (exit 2).
    pub fn invalid(message: impl Into<String>, help: Option<String>) -> Self {
        EngineError::Invalid {
            message: message.into(),
            help,
        }
    }

    /// Wraps a git error.
    pub fn git(doing: &'static str, e: git2::Error) -> Self {
        EngineError::Git {
            doing,
            why: e.message().to_string(),
        }
    }

    /// A "help:" line for the user, when there is a clear fix.
    pub fn help(&self) -> Option<String> {
        match self {
            EngineError::NotGit { .. } => Some(
                "pass --all to take every service, name the services to build, or run `git init` and commit".to_string(),
            ),
            EngineError::Revision { .. } => {
                Some("use a branch, tag or commit that exists: `git log --oneline` lists them".to_string())
            }
            EngineError::UnknownService { name, known } => {
                Some(match cutover_config::suggest(name, known.iter().map(String::as_str)) {
                    Some(close) => format!("did you mean `{close}`? known services: {}", known.join(", ")),
                    None => format!("known services: {}", known.join(", ")),
                })
            }
            EngineError::Refused { help, .. }
            | EngineError::Invalid { help, .. }
            | EngineError::Blocked { help, .. } => help.clone(),
            EngineError::UndrivenTarget { env, driven, .. } => Some(format!(
                "this build drives the target(s): {}; set `target = \"local\"` in \
                 [environments.{env}] to run it on this host",
                driven.join(", ")
            )),
            EngineError::MissingSecret { name, .. } => Some(format!(
                "store it with `printf %s VALUE | cutover secrets set {name}`, or export {name} \
                 in the environment that runs cutover"
            )),
            _ => None,
        }
    }

    /// The exit code this error maps to: 2 for usage and configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::NotGit { .. }
            | EngineError::Revision { .. }
            | EngineError::UnknownService { .. }
            | EngineError::Glob { .. }
            | EngineError::UndrivenTarget { .. }
            | EngineError::MissingSecret { .. }
            | EngineError::Invalid { .. } => 2,
            EngineError::Blocked { .. } => 3,
            _ => 1,
        }
    }
}
