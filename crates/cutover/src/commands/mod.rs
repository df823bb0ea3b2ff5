//! One file per verb: parse arguments into a library call, render the result.

pub mod agent;
pub mod approve;
pub mod build;
pub mod canary;
pub mod ci;
pub mod deploy;
pub mod down;
pub mod init;
pub mod lock;
pub mod logs;
pub mod merge;
pub mod metrics;
pub mod monitor;
pub mod pause;
pub mod plan;
pub mod releases;
pub mod rollback;
pub mod schema;
pub mod secrets;
pub mod status;
pub mod test;
pub mod validate;
pub mod worktree;
