//! [`StoreError`]: everything that can go wrong in the release store, with what and where.

use std::path::PathBuf;

use crate::model::ReleasePhase;

/// An error from the release store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed while doing `operation` on the database at `path`.
    #[error("release store {}: could not {operation}: {source}", path.display())]
    Sqlite {
        /// What the store was doing ("create a run", "open the database"...).
        operation: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A filesystem operation around the database failed.
    #[error("release store {}: could not {operation}: {source}", path.display())]
    Io {
        /// What the store was doing ("create the store's directory"...).
        operation: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A phase change that [`ReleasePhase::can_transition_to`] forbids.
    #[error("release {release} of service {service} cannot move from {from} to {to}")]
    InvalidTransition {
        /// The service.
        service: String,
        /// The release id.
        release: String,
        /// Its current phase.
        from: ReleasePhase,
        /// The phase asked for.
        to: ReleasePhase,
    },

    /// A run or release that does not exist.
    #[error("{what} not found in the release store")]
    NotFound {
        /// What was looked for, e.g. `run deploy-20261123-101500`.
        what: String,
    },

    /// A store kind this build cannot use yet (PostgreSQL), or a schema newer than it knows.
    #[error("{0}")]
    Unsupported(String),

    /// A `state` URL that names no store (`[project] state` in `cutover.toml`).
    #[error("invalid release store URL: {0}")]
    InvalidUrl(String),

    /// A row holding data the store cannot read back (unknown phase, bad timestamp...).
    #[error("corrupt data in the release store: {0}")]
    Corrupt(String),
}
