//! The release store: runs, releases and events of one project.
//!
//! # Layout
//! - `model.rs`: the plain values stored ([`Run`], [`Release`], [`ReleasePhase`]...).
//! - `sqlite.rs`: [`SqliteStore`], the default implementation (`.cutover/state.db`, WAL);
//!   `sqlite/rows.rs` decodes its rows (bad data is [`StoreError::Corrupt`], never a panic).
//! - `migrations/`: the schema, embedded and applied in order on open (`0002_secrets.sql`: the
//!   encrypted secrets; the store never sees a secret's plain value; `0003_locks.sql`: deploy
//!   locks, one per environment; `0004_approvals.sql`: approval gates, one per run).
//! - `state_dir.rs`: [`StateDir`], the project's `.cutover/` and every path in it (DESIGN.md
//!   "Files"), spelled in one place for every crate.
//! - `atomic.rs`: [`atomic::write_atomic`], the one temp-file-and-rename writer, with its
//!   durability policy (what is fsynced and what is not).
//! - `dora.rs`: DORA metrics computed from the release history (a pure function of it).
//! - `error.rs`: [`StoreError`].
//!
//! # Theory of operation
//! The engine (one `cutover` process per run) and, later, the agent share one store. Every write
//! is one transaction, so two processes working on the same project never leave it torn: ids are
//! allocated inside the transaction that inserts them, and a phase change is checked against
//! [`ReleasePhase::can_transition_to`] inside the transaction that writes it. The trait is
//! synchronous; async callers run it under `spawn_blocking`. A PostgreSQL implementation joins
//! later behind the same trait.

pub mod atomic;
pub mod dora;
mod error;
mod model;
pub mod secrets;
mod sqlite;
mod state_dir;

pub use error::StoreError;
pub use model::{
    Approval, ApprovalState, Lock, NewRelease, Release, ReleasePhase, Run, RunKind, RunStatus,
    StoredEvent,
};
pub use sqlite::SqliteStore;
pub use state_dir::StateDir;

use chrono::{DateTime, Utc};

/// Results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What keeps [`ReleaseStore::claim_run`] from starting a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocker {
    /// The environment is locked.
    Locked(Lock),
    /// Another run of the kind is in progress there, with a live process.
    Running(Run),
}

/// Everything the engine and the agent need from a release store.
pub trait ReleaseStore: Send + Sync {
    /// Records a new run in `InProgress`, allocating `deploy-YYYYMMDD-HHMMSS` from `started_at`
    /// (UTC), with `-2`, `-3`... when taken.
    fn create_run(
        &self,
        kind: RunKind,
        env: &str,
        started_at: DateTime<Utc>,
        pid: Option<u32>,
    ) -> Result<Run>;

    /// Records a new run like [`ReleaseStore::create_run`], in the same transaction as checking
    /// that `env` is not locked and that no other run of `kind` in `env` is in progress with a
    /// process `alive` says still runs: of two deploys waiting for one lock, exactly one gets
    /// the run. `Ok(Err(blocker))` says what is in the way; nothing is recorded then.
    fn claim_run(
        &self,
        kind: RunKind,
        env: &str,
        started_at: DateTime<Utc>,
        pid: u32,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<std::result::Result<Run, Blocker>>;

    /// Ends a run.
    fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        finished_at: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<()>;

    /// Hands a run still in progress to the process `pid` (the agent, when the command that
    /// ran it died while the agent goes on with it); false when the run is not in progress.
    fn hand_over_run(&self, run_id: &str, pid: u32) -> Result<bool>;

    /// One run by id.
    fn run(&self, run_id: &str) -> Result<Option<Run>>;

    /// Runs of an environment, newest first (`env = None`: all environments), at most `limit`.
    fn runs(&self, env: Option<&str>, limit: usize) -> Result<Vec<Run>>;

    /// Runs still `InProgress` (of every environment).
    fn runs_in_progress(&self) -> Result<Vec<Run>>;

    /// Records a new release in `Pending`, allocating `YYYYMMDD-HHMMSS-<sha7>` from
    /// `created_at` (UTC) and `sha` (`0000000` when None), with `-2`... when the id is taken
    /// by any release of the same service.
    fn create_release(&self, new: &NewRelease) -> Result<Release>;

    /// Records several releases at once (one transaction where the implementation can), in
    /// order; ids are allocated as [`ReleaseStore::create_release`] does.
    fn create_releases(&self, new: &[NewRelease]) -> Result<Vec<Release>> {
        new.iter().map(|n| self.create_release(n)).collect()
    }

    /// Moves a release to `phase`, recording `reason` (kept when None, except that a release
    /// becoming ACTIVE drops an old reason), `updated_at`, and
    /// `activated_at` when the phase is ACTIVE. Fails with [`StoreError::InvalidTransition`]
    /// when `can_transition_to` forbids it. When a release becomes ACTIVE, the release of the
    /// same service and environment that was ACTIVE before becomes SUPERSEDED in the same
    /// transaction.
    fn set_phase(
        &self,
        service: &str,
        release_id: &str,
        phase: ReleasePhase,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Release>;

    /// Records where a release's artifact is.
    fn set_artifact(&self, service: &str, release_id: &str, artifact: &str) -> Result<()>;

    /// One release.
    fn release(&self, service: &str, release_id: &str) -> Result<Option<Release>>;

    /// A service's releases in an environment, newest first, at most `limit`.
    fn releases(&self, service: &str, env: &str, limit: usize) -> Result<Vec<Release>>;

    /// The service's ACTIVE release in an environment, if any.
    fn active_release(&self, service: &str, env: &str) -> Result<Option<Release>>;

    /// Appends an event (already redacted) to the run's event log.
    fn append_event(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        service: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<()>;

    /// A run's events in order.
    fn events(&self, run_id: &str) -> Result<Vec<StoredEvent>>;

    /// Stores (or replaces) a secret's encrypted value for one environment (`env = None`: every
    /// environment). The store only ever sees the nonce and ciphertext.
    fn put_secret(
        &self,
        name: &str,
        env: Option<&str>,
        nonce: &[u8],
        ciphertext: &[u8],
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// A secret's `(nonce, ciphertext)` for exactly this environment (`None`: the value for
    /// every environment); no fallback from one to the other.
    fn secret(&self, name: &str, env: Option<&str>) -> Result<Option<(Vec<u8>, Vec<u8>)>>;

    /// Every stored secret's name, environment and update time (never its value), by name.
    fn secrets_list(&self) -> Result<Vec<SecretEntry>>;

    /// Removes a secret of one environment (`None`: the every-environment one); false when
    /// there was none.
    fn remove_secret(&self, name: &str, env: Option<&str>) -> Result<bool>;

    /// Locks an environment for `holder`, atomically: `Ok(Err(existing))` when it is already
    /// locked (the existing lock is kept).
    fn lock(
        &self,
        env: &str,
        holder: &str,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<std::result::Result<(), Lock>>;

    /// Removes an environment's lock, returning it (None when there was none).
    fn unlock(&self, env: &str) -> Result<Option<Lock>>;

    /// The environment's lock, if any.
    fn current_lock(&self, env: &str) -> Result<Option<Lock>>;

    /// Records that `run_id` waits for approval (state `waiting`), `waiting` saying what
    /// waits. Requesting again for the same run starts a new wait.
    fn request_approval(
        &self,
        run_id: &str,
        env: &str,
        waiting: &str,
        at: DateTime<Utc>,
    ) -> Result<Approval>;

    /// Decides a waiting approval, atomically: `Ok(Ok(decided))` when it was waiting,
    /// `Ok(Err(current))` when it was not (already decided, or never requested: None). The
    /// first decision wins, so an approval racing a timeout is never both.
    fn decide_approval(
        &self,
        run_id: &str,
        state: ApprovalState,
        by: Option<&str>,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<std::result::Result<Approval, Option<Approval>>>;

    /// The approval of a run, if it ever waited for one.
    fn approval(&self, run_id: &str) -> Result<Option<Approval>>;

    /// Applies a batch of phase changes and events in order, in one transaction where the
    /// implementation can. A write that fails (an invalid transition, say) does not stop the
    /// others: its error is returned in the list. Reporters use this to write once per batch
    /// of events instead of once per event.
    fn record(&self, batch: &[StoreWrite]) -> Result<Vec<StoreError>>;
}

/// A stored secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEntry {
    /// The secret's name.
    pub name: String,
    /// The environment it overrides in; None: every environment.
    pub env: Option<String>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// One write of a [`ReleaseStore::record`] batch.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// A release changes phase (see [`ReleaseStore::set_phase`]).
    Phase {
        /// Service.
        service: String,
        /// Release id.
        release: String,
        /// The new phase.
        phase: ReleasePhase,
        /// Why, when given.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// An event is appended (see [`ReleaseStore::append_event`]).
    Event {
        /// The run.
        run_id: String,
        /// When.
        at: DateTime<Utc>,
        /// The service, if any.
        service: Option<String>,
        /// The kind.
        kind: String,
        /// The event as JSON.
        data: serde_json::Value,
    },
}
