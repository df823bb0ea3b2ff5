//! [`StateDir`]: the project's `.cutover/` directory and every path in it, spelled once.
//!
//! DESIGN.md "Files" is the contract these paths follow: tests (ours and others') read
//! `status.json`, the log files and the snapshots where it says they are. Every crate that
//! touches the state directory asks this type for a path instead of joining names by hand.

use std::path::{Path, PathBuf};

/// The project's state directory (`.cutover/`: release store, agent, snapshots, logs).
///
/// A plain path wrapper: nothing here touches the file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory's name under the project's state root.
    pub const NAME: &'static str = ".cutover";

    /// The release store `[project] state` names by default (relative to the state root).
    pub const DEFAULT_STORE_URL: &'static str = "sqlite://.cutover/state.db";

    /// The state directory at `dir` itself (the `.cutover` directory, not its parent).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// The state directory of the project whose state root is `root`: `root/.cutover`.
    pub fn of_root(root: &Path) -> Self {
        StateDir::new(root.join(Self::NAME))
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory holding `.cutover/` (the state root), when it has one.
    pub fn root(&self) -> Option<&Path> {
        self.dir.parent()
    }

    /// `state.db`: the default SQLite release store.
    pub fn state_db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// `status.json`: the last run, rewritten on every event.
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// `agent.sock`: the agent's admin API socket (when the path is short enough for one;
    /// see `cutover_runtime::daemon::socket_path`).
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// `agent.json`: the running agent's pid and socket.
    pub fn agent_info(&self) -> PathBuf {
        self.dir.join("agent.json")
    }

    /// `agent/`: the agent's own records.
    pub fn agent_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// `agent/desired.json`: the releases the agent serves, to bring back after a restart.
    pub fn agent_desired(&self) -> PathBuf {
        self.agent_dir().join("desired.json")
    }

    /// `agent/stopped`: the marker `cutover agent stop` leaves (the agent stays stopped until
    /// a deploy or `agent start`).
    pub fn agent_stopped(&self) -> PathBuf {
        self.agent_dir().join("stopped")
    }

    /// `releases/<service>/`: the service's local-target snapshots.
    pub fn service_releases(&self, service: &str) -> PathBuf {
        self.dir.join("releases").join(service)
    }

    /// `releases/<service>/<release>/`: one release's snapshot.
    pub fn release(&self, service: &str, release: &str) -> PathBuf {
        self.service_releases(service).join(release)
    }

    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `logs/agent.log`: the output of an agent started in the background.
    pub fn agent_log(&self) -> PathBuf {
        self.logs().join("agent.log")
    }

    /// `logs/deployments/`: the runs' logs (`<run>.log`, `<run>-<service>.log`).
    pub fn deployment_logs(&self) -> PathBuf {
        self.logs().join("deployments")
    }

    /// `logs/deployments/<run>.log`: a build or deploy run's log.
    pub fn run_log(&self, run: &str) -> PathBuf {
        self.deployment_logs().join(format!("{run}.log"))
    }

    /// `logs/deployments/<run>-<service>.log`: one service's part of a run (its events and
    /// its commands' output).
    pub fn service_run_log(&self, run: &str, service: &str) -> PathBuf {
        self.deployment_logs().join(format!("{run}-{service}.log"))
    }

    /// `logs/<kind>s/`: the logs of a command that keeps its own (`rollback`, `merge`, `test`).
    pub fn command_logs(&self, kind: &str) -> PathBuf {
        self.logs().join(format!("{kind}s"))
    }

    /// `logs/<kind>s/<name>.log`: one such log (`name` is e.g. `rollback-20261123-101500`).
    pub fn command_log(&self, kind: &str, name: &str) -> PathBuf {
        self.command_logs(kind).join(format!("{name}.log"))
    }

    /// `logs/services/<service>/access.log`: the proxy's access log of a service (JSON lines).
    pub fn access_log(&self, service: &str) -> PathBuf {
        self.logs()
            .join("services")
            .join(service)
            .join("access.log")
    }

    /// `logs/services/<service>/<release>.log`: the output of a release's instances.
    pub fn instance_log(&self, service: &str, release: &str) -> PathBuf {
        self.logs()
            .join("services")
            .join(service)
            .join(format!("{release}.log"))
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_design() {
        let s = StateDir::of_root(Path::new("/p"));
        assert_eq!(s.path(), Path::new("/p/.cutover"));
        assert_eq!(s.root(), Some(Path::new("/p")));
        assert_eq!(s.state_db(), Path::new("/p/.cutover/state.db"));
        assert_eq!(s.status_file(), Path::new("/p/.cutover/status.json"));
        assert_eq!(s.agent_socket(), Path::new("/p/.cutover/agent.sock"));
        assert_eq!(s.agent_info(), Path::new("/p/.cutover/agent.json"));
        assert_eq!(
            s.agent_desired(),
            Path::new("/p/.cutover/agent/desired.json")
        );
        assert_eq!(s.agent_stopped(), Path::new("/p/.cutover/agent/stopped"));
        assert_eq!(
            s.release("api", "r1"),
            Path::new("/p/.cutover/releases/api/r1")
        );
        assert_eq!(s.agent_log(), Path::new("/p/.cutover/logs/agent.log"));
        assert_eq!(
            s.run_log("deploy-20261123-101500"),
            Path::new("/p/.cutover/logs/deployments/deploy-20261123-101500.log")
        );
        assert_eq!(
            s.service_run_log("deploy-1", "api"),
            Path::new("/p/.cutover/logs/deployments/deploy-1-api.log")
        );
        assert_eq!(
            s.command_log("rollback", "rollback-1"),
            Path::new("/p/.cutover/logs/rollbacks/rollback-1.log")
        );
        assert_eq!(
            s.instance_log("api", "r1"),
            Path::new("/p/.cutover/logs/services/api/r1.log")
        );
        assert!(StateDir::DEFAULT_STORE_URL.ends_with(".cutover/state.db"));
    }
}
