//! The supervisor: instances of a release as process groups, restarted with backoff, their
//! output captured.
//!
//! # Layout
//! - `lifecycle.rs`: what every kind of instance shares: the handle's controls and counters,
//!   and the owning task's state machine (restart with backoff, stay exited, stop) around a
//!   `Runner` that says how one run starts and ends (a process here, a container in
//!   `target/docker/`).
//! - `instance.rs`: [`Instance`], a handle that sends controls to the task owning the child.
//! - `backoff.rs`: restart delays (`initial · 2^k`, capped) and crash-loop detection.
//! - `logs.rs`: stdout/stderr into the release's log file and an in-memory ring of lines.
//! - `ports.rs`: internal ports from a reserved range, leased per instance, locked per host.
//!
//! # Theory of operation
//! Each instance runs `sh -c <run>` in the release snapshot, in a process group of its own.
//! One task owns the child: it alone spawns, waits, signals and reaps, and it publishes every
//! transition on a watch channel, so an exit is an event the agent sees at once (a deploy
//! under verification fails then, not after a probe timeout). Stopping signals the whole
//! group, so grandchildren (`sleep 1000 &`) go too; when the leader exits on its own, what it
//! left in its group is killed before the exit is reported.
//!
//! ```text
//! Starting ──spawned──▶ Running ──exit, restart on──▶ Backoff ──delay──▶ Starting …
//!     │                    │   └──exit, restart off──▶ Exited (stays; restart() revives)
//!     └──spawn failed──────┴──────────── same as an exit
//! any ──stop()/drop──▶ Stopped (final)
//! ```

pub(crate) mod backoff;
mod instance;
pub(crate) mod lifecycle;
pub(crate) mod logs;
mod ports;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use instance::{Instance, OUTPUT_FD, RESTART_GRACE, process_alive};
pub use logs::RING_LINES;
pub use ports::{DEFAULT_RANGE, PortError, PortLease, Ports, RANGE_VAR, default_lock_dir};

/// What one instance runs, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The service this instance belongs to.
    pub service: String,
    /// The release id it runs.
    pub release: String,
    /// Its index within the release's instances (shown in log lines as `[index]`).
    pub index: u32,
    /// The command line, run through `sh -c`.
    pub command: String,
    /// Working directory: the release snapshot.
    pub dir: PathBuf,
    /// Variables added to the agent's environment; the caller includes `PORT`,
    /// `CUTOVER_SERVICE`, `CUTOVER_RELEASE` and `CUTOVER_ENV`.
    pub env: Vec<(String, String)>,
    /// The internal port the instance listens on (kept across restarts).
    pub port: u16,
    /// The release's log file (`.cutover/logs/services/<service>/<release>.log`), appended
    /// to and shared by all instances of the release; directories are created as needed.
    pub log: PathBuf,
    /// Secret values to mask (`***`) in the instance's output before it is logged or kept.
    pub redact: Vec<String>,
    /// The container to run instead of `command` in `dir` (the Docker target); `None` for a
    /// local process.
    pub container: Option<crate::target::docker::ContainerRun>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceState {
    /// About to spawn its process.
    Starting,
    /// The process runs.
    Running {
        /// Process id, also the process group id.
        pid: u32,
        /// When it was spawned.
        since: DateTime<Utc>,
    },
    /// The process ended (or could not start) and no restart is pending: restart is off.
    /// Stays so until [`Instance::restart`] or [`Instance::stop`].
    Exited {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal number, when a signal ended it.
        signal: Option<i32>,
        /// When it ended.
        at: DateTime<Utc>,
    },
    /// The process crashed and a restart is scheduled.
    Backoff {
        /// When the restart happens.
        until: DateTime<Utc>,
        /// Restarts made so far (not counting the pending one).
        restarts: u32,
        /// How the last run ended, in words ("exited with code 1").
        last_exit: String,
    },
    /// Stopped for good by [`Instance::stop`] or by dropping the handle.
    Stopped,
}

impl InstanceState {
    /// True while the process runs.
    pub const fn is_running(&self) -> bool {
        matches!(self, InstanceState::Running { .. })
    }

    /// True once the instance has ended with nothing pending: `Exited` or `Stopped`.
    pub const fn is_ended(&self) -> bool {
        matches!(self, InstanceState::Exited { .. } | InstanceState::Stopped)
    }
}

/// When and how crashed instances are restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restart after a crash at all (off during deploy verification).
    pub restart: bool,
    /// First restart delay (default 1s); each further crash doubles it.
    pub initial: Duration,
    /// Longest restart delay (default 30s).
    pub max: Duration,
    /// Restarts within `crash_loop_window` that make it a crash loop (default 5).
    pub crash_loop_restarts: u32,
    /// The crash-loop window (default 60s); a run lasting this long also resets the delay.
    pub crash_loop_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: true,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
        }
    }
}

/// How a process ended, in words: "exited with code 1", "exited with code 127 (command not
/// found)", "exited with code 137 (killed)", "killed by signal 9 (SIGKILL)"; `None` when
/// neither a code nor a signal is known (the caller says "ended" or "failed").
///
/// The one wording of an exit for instances, containers, the engine's commands and the agent.
pub fn describe_exit(code: Option<i32>, signal: Option<i32>) -> Option<String> {
    match (code, signal) {
        (Some(127), _) => Some("exited with code 127 (command not found)".to_string()),
        (Some(137), _) => Some("exited with code 137 (killed)".to_string()),
        (Some(c), _) => Some(format!("exited with code {c}")),
        (None, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or("unknown", |s| s.as_str());
            Some(format!("killed by signal {s} ({name})"))
        }
        (None, None) => None,
    }
}

/// An unused TCP port on 127.0.0.1 from the kernel's ephemeral range, for tests and tools.
///
/// Binds port 0, reads the port the kernel chose and closes the socket: another process may
/// take the port before it is used. The agent never uses this for instances: their ports come
/// from [`Ports`], which reserves them.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::describe_exit;

    #[test]
    fn exit_wording() {
        let says = |code, signal| describe_exit(code, signal).unwrap_or_default();
        assert_eq!(says(Some(1), None), "exited with code 1");
        assert_eq!(
            says(Some(127), None),
            "exited with code 127 (command not found)"
        );
        assert_eq!(says(Some(137), None), "exited with code 137 (killed)");
        assert_eq!(says(None, Some(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(None, None), None);
    }
}
