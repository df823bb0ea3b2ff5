//! Stage helpers that are not command runs.

pub mod snapshot;
