//! What the store records: runs, releases and events, as plain values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The phase of one release. Strings only at the edges (`as_str`, `FromStr`, serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleasePhase {
    /// Recorded, nothing started yet.
    Pending,
    /// Checks running.
    Validating,
    /// Build running.
    Building,
    /// Build finished in a build-only run (`cutover build`): a release that was never deployed.
    Built,
    /// Handed to the target.
    Deploying,
    /// Probes (and analysis) deciding.
    Verifying,
    /// Serving.
    Active,
    /// Replaced by a newer ACTIVE release.
    Superseded,
    /// Failed; the reason says why.
    Failed,
    /// Reverted by a canary judgement, `--atomic` or `rollback`.
    RolledBack,
    /// Interrupted (Ctrl-C, or the run's process died).
    Canceled,
}

impl ReleasePhase {
    /// Every phase, in pipeline order.
    pub const ALL: [ReleasePhase; 11] = [
        ReleasePhase::Pending,
        ReleasePhase::Validating,
        ReleasePhase::Building,
        ReleasePhase::Built,
        ReleasePhase::Deploying,
        ReleasePhase::Verifying,
        ReleasePhase::Active,
        ReleasePhase::Superseded,
        ReleasePhase::Failed,
        ReleasePhase::RolledBack,
        ReleasePhase::Canceled,
    ];

    /// The UPPERCASE name used in JSON, the database and the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleasePhase::Pending => "PENDING",
            ReleasePhase::Validating => "VALIDATING",
            ReleasePhase::Building => "BUILDING",
            ReleasePhase::Built => "BUILT",
            ReleasePhase::Deploying => "DEPLOYING",
            ReleasePhase::Verifying => "VERIFYING",
            ReleasePhase::Active => "ACTIVE",
            ReleasePhase::Superseded => "SUPERSEDED",
            ReleasePhase::Failed => "FAILED",
            ReleasePhase::RolledBack => "ROLLED_BACK",
            ReleasePhase::Canceled => "CANCELED",
        }
    }

    /// True for phases a release never leaves on its own (an ACTIVE release is not terminal:
    /// it can become SUPERSEDED or ROLLED_BACK).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ReleasePhase::Built
                | ReleasePhase::Superseded
                | ReleasePhase::Failed
                | ReleasePhase::RolledBack
                | ReleasePhase::Canceled
        )
    }

    /// Whether a release in `self` may move to `next`.
    ///
    /// Forward along `PENDING → VALIDATING → BUILDING → (BUILT | DEPLOYING) → VERIFYING → ACTIVE`
    /// (stages may be skipped forward: a service without checks goes PENDING → BUILDING);
    /// any non-terminal phase may end FAILED or CANCELED; DEPLOYING, VERIFYING and ACTIVE may
    /// end ROLLED_BACK; ACTIVE may become SUPERSEDED; a SUPERSEDED or ROLLED_BACK release may
    /// become DEPLOYING again (rollback to it reuses its snapshot); BUILT may be deployed later.
    ///
    /// BUILT and DEPLOYING are two branches after BUILDING: BUILT is reached from PENDING,
    /// VALIDATING or BUILDING and leads only to DEPLOYING (it is terminal, so it never ends
    /// FAILED or CANCELED). A phase never "moves" to itself.
    pub fn can_transition_to(self, next: ReleasePhase) -> bool {
        use ReleasePhase::*;
        match self {
            // Forward (skipping allowed), or an early end.
            Pending => matches!(
                next,
                Validating | Building | Built | Deploying | Verifying | Active | Failed | Canceled
            ),
            Validating => matches!(
                next,
                Building | Built | Deploying | Verifying | Active | Failed | Canceled
            ),
            Building => matches!(
                next,
                Built | Deploying | Verifying | Active | Failed | Canceled
            ),
            // A build-only release is terminal until a later deploy picks it up.
            Built => matches!(next, Deploying),
            // Handed to the target: forward, an end, or reverted.
            Deploying => matches!(next, Verifying | Active | Failed | Canceled | RolledBack),
            Verifying => matches!(next, Active | Failed | Canceled | RolledBack),
            // Serving: replaced, reverted, or an end.
            Active => matches!(next, Superseded | RolledBack | Failed | Canceled),
            // A rollback to an older release deploys its snapshot again.
            Superseded | RolledBack => matches!(next, Deploying),
            Failed | Canceled => false,
        }
    }
}

impl std::fmt::Display for ReleasePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReleasePhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReleasePhase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown release phase {s:?}"))
    }
}

/// The outcome of a run, or of one service within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going.
    InProgress,
    /// Every service succeeded or was skipped.
    Succeeded,
    /// At least one service failed.
    Failed,
    /// Interrupted.
    Canceled,
    /// Reverted (canary judgement, `--atomic`).
    RolledBack,
}

impl RunStatus {
    /// The lowercase name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::InProgress => "in_progress",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            RunStatus::RolledBack => "rolled_back",
        }
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunStatus::InProgress,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Canceled,
            RunStatus::RolledBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `cutover build`: detect, checks, build.
    Build,
    /// `cutover deploy`: the whole pipeline.
    Deploy,
    /// `cutover rollback`.
    Rollback,
    /// `cutover merge`.
    Merge,
    /// `cutover test`.
    Test,
}

impl RunKind {
    /// The lowercase name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Build => "build",
            RunKind::Deploy => "deploy",
            RunKind::Rollback => "rollback",
            RunKind::Merge => "merge",
            RunKind::Test => "test",
        }
    }
}

impl std::str::FromStr for RunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunKind::Build,
            RunKind::Deploy,
            RunKind::Rollback,
            RunKind::Merge,
            RunKind::Test,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown run kind {s:?}"))
    }
}

/// One pipeline execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `deploy-YYYYMMDD-HHMMSS`, with `-2`, `-3`... if taken.
    pub id: String,
    /// Build, deploy or rollback.
    pub kind: RunKind,
    /// The environment.
    pub env: String,
    /// Current status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The pid of the process running it (to detect runs whose process died).
    pub pid: Option<u32>,
    /// Why it ended the way it did, when not succeeded.
    pub reason: Option<String>,
}

/// One immutable version of one service in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// `YYYYMMDD-HHMMSS-<sha7>` (`-2`... if taken; unique per service across environments).
    /// `<sha7>` is `0000000` in a directory that is not a git repo.
    pub id: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub env: String,
    /// The run that created it.
    pub run_id: String,
    /// Full git sha of HEAD when built (None outside git or with no commits).
    pub sha: Option<String>,
    /// True when the working tree had changes under the service's scope.
    pub dirty: bool,
    /// Branch the release was built from, when known.
    pub branch: Option<String>,
    /// Hash of the service's resolved configuration.
    pub config_hash: String,
    /// Where the artifact is (snapshot directory, image tag...).
    pub artifact: Option<String>,
    /// Current phase.
    pub phase: ReleasePhase,
    /// Plain-words reason for any non-ACTIVE end.
    pub reason: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When its phase last changed.
    pub updated_at: DateTime<Utc>,
    /// When it last became ACTIVE.
    pub activated_at: Option<DateTime<Utc>>,
    /// Commit time of `sha`, for lead-time metrics.
    pub commit_at: Option<DateTime<Utc>>,
}

/// What the engine supplies to record a new release; the store allocates the id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelease {
    /// The service.
    pub service: String,
    /// The environment.
    pub env: String,
    /// The run creating it.
    pub run_id: String,
    /// Full git sha.
    pub sha: Option<String>,
    /// Dirty flag.
    pub dirty: bool,
    /// Branch.
    pub branch: Option<String>,
    /// Config hash.
    pub config_hash: String,
    /// Commit time of `sha`.
    pub commit_at: Option<DateTime<Utc>>,
    /// Creation time (the id's timestamp comes from it, in UTC).
    pub created_at: DateTime<Utc>,
}

/// One stored engine event (the engine's `Event`, serialised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Sequence number within the store.
    pub seq: i64,
    /// The run it belongs to.
    pub run_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The service, when it concerns one.
    pub service: Option<String>,
    /// The event kind (`stage.started`...).
    pub kind: String,
    /// The whole event as JSON (already redacted).
    pub data: serde_json::Value,
}

/// An explicit deploy lock of one environment (`cutover lock`): deploys and rollbacks of it
/// are refused (or wait) while it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The environment locked.
    pub env: String,
    /// Who holds it (`user@host`).
    pub holder: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When it was taken.
    pub since: DateTime<Utc>,
}

/// Where a run's approval gate stands (`require_approval = true` environments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// The run waits for `cutover approve`.
    Waiting,
    /// `cutover approve RUN`: the run goes on.
    Approved,
    /// `cutover approve RUN --reject`: the run ended (exit 3).
    Rejected,
    /// `--approval-timeout` passed without a decision (exit 3).
    TimedOut,
    /// The run ended while waiting (Ctrl-C, or its process died).
    Canceled,
}

impl ApprovalState {
    /// The snake_case name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Waiting => "waiting",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::TimedOut => "timed_out",
            ApprovalState::Canceled => "canceled",
        }
    }
}

impl std::str::FromStr for ApprovalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ApprovalState::Waiting,
            ApprovalState::Approved,
            ApprovalState::Rejected,
            ApprovalState::TimedOut,
            ApprovalState::Canceled,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("unknown approval state {s:?}"))
    }
}

/// A run's approval gate: what waits, and who decided what when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The run that waits (or waited).
    pub run_id: String,
    /// Its environment.
    pub env: String,
    /// Where the gate stands.
    pub state: ApprovalState,
    /// When the run began to wait.
    pub requested_at: DateTime<Utc>,
    /// What waits, in words (services and their releases).
    pub waiting: String,
    /// Who approved or rejected (`user@host`); None for a timeout or cancel.
    pub decided_by: Option<String>,
    /// When the gate was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why (`--reason`, or what ended it).
    pub reason: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The expected answer of `can_transition_to` for every pair: row = from, column = to,
    /// both in [`ReleasePhase::ALL`] order.
    #[rustfmt::skip]
    const EXPECTED: [[u8; 11]; 11] = [
        //                PEN VAL BLD BLT DEP VER ACT SUP FAI RBK CAN
        /* PENDING     */ [0,  1,  1,  1,  1,  1,  1,  0,  1,  0,  1],
        /* VALIDATING  */ [0,  0,  1,  1,  1,  1,  1,  0,  1,  0,  1],
        /* BUILDING    */ [0,  0,  0,  1,  1,  1,  1,  0,  1,  0,  1],
        /* BUILT       */ [0,  0,  0,  0,  1,  0,  0,  0,  0,  0,  0],
        /* DEPLOYING   */ [0,  0,  0,  0,  0,  1,  1,  0,  1,  1,  1],
        /* VERIFYING   */ [0,  0,  0,  0,  0,  0,  1,  0,  1,  1,  1],
        /* ACTIVE      */ [0,  0,  0,  0,  0,  0,  0,  1,  1,  1,  1],
        /* SUPERSEDED  */ [0,  0,  0,  0,  1,  0,  0,  0,  0,  0,  0],
        /* FAILED      */ [0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0],
        /* ROLLED_BACK */ [0,  0,  0,  0,  1,  0,  0,  0,  0,  0,  0],
        /* CANCELED    */ [0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0],
    ];

    #[test]
    fn every_transition_matches_the_table() {
        let mut mismatches = Vec::new();
        for (i, from) in ReleasePhase::ALL.into_iter().enumerate() {
            for (j, to) in ReleasePhase::ALL.into_iter().enumerate() {
                let expected = EXPECTED[i][j] == 1;
                if from.can_transition_to(to) != expected {
                    mismatches.push(format!("{from} -> {to}: expected {expected}"));
                }
            }
        }
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn no_phase_transitions_to_itself() {
        for p in ReleasePhase::ALL {
            assert!(!p.can_transition_to(p), "{p}");
        }
    }

    #[test]
    fn terminal_phases_leave_only_to_deploy_again() {
        for from in ReleasePhase::ALL.into_iter().filter(|p| p.is_terminal()) {
            for to in ReleasePhase::ALL {
                if from.can_transition_to(to) {
                    assert_eq!(to, ReleasePhase::Deploying, "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for p in ReleasePhase::ALL {
            assert_eq!(p.as_str().parse::<ReleasePhase>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        for s in [
            RunStatus::InProgress,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Canceled,
            RunStatus::RolledBack,
        ] {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for k in [
            RunKind::Build,
            RunKind::Deploy,
            RunKind::Rollback,
            RunKind::Merge,
            RunKind::Test,
        ] {
            assert_eq!(k.as_str().parse::<RunKind>(), Ok(k));
        }
        assert!("pending".parse::<ReleasePhase>().is_err());
    }
}
