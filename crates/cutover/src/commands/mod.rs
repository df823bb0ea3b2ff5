//! One file per verb: parse arguments into a library call, render the result.

pub mod build;
pub mod init;
pub mod plan;
pub mod schema;
pub mod validate;
