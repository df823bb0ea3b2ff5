//! The cutover engine: from a validated configuration to a finished run.
//!
//! # Layout
//! - `plan/`: change detection with git (`changes.rs`) and dependency layers (`dag.rs`).
//! - `run/`: the dispatcher (sole owner of run state, sole emitter of events) and one executor
//!   per service.
//! - `command.rs`: every command runs through `sh -c` in its own process group, with a timeout.
//! - `stage/`: stage helpers (release snapshots).
//! - `event.rs`, `summary.rs`: the data reporters consume and `--json` prints.
//! - `report/`: the reporter thread and the engine-side sinks (log files, status file, store).
//! - `redact.rs`: the one place secret values are masked.
//! - `rollback.rs`: going back to an earlier release (`cutover rollback`, failed hooks).
//! - `smoke.rs`: smoke tests against a service's public URL (`cutover test`, `deploy --smoke`);
//!   `smoke_serving.rs`: `cutover test` runs them only on the ACTIVE release the agent serves.
//! - `team/`: a branch and worktree per service, and health-gated merges.
//! - `ops/`: the operations the CLI (and later the server) calls: deploy, rollback, status,
//!   promote/abort, approve, lock/unlock, merge; plain inputs in, plain results out.
//!
//! # Theory of operation
//! The CLI loads the configuration, resolves one environment, asks [`plan::plan`] which
//! services are affected, and hands the plan to [`run::execute`]. Executors run each service's
//! stages in parallel (bounded by `max_parallel` per stage, ordered by `depends_on`) and send
//! what happens to the dispatcher, which turns it into [`event::Event`]s. Every event passes the
//! [`redact::Redactor`] once, then goes to every reporter on a thread of their own.

pub mod command;
pub mod error;
pub mod event;
pub mod ops;
pub mod plan;
pub mod redact;
pub mod report;
pub mod rollback;
pub mod run;
pub mod smoke;
pub mod smoke_serving;
pub mod stage;
pub mod summary;
pub mod target;
pub mod team;

pub use error::EngineError;
