//! Files cutover writes for continuous-integration services (`cutover ci`): generated from the
//! validated project, so they follow its environments and branches.

pub mod github;
mod workflow;
