//! One instance: a handle ([`Instance`]) that sends controls to the task owning the child.
//!
//! The task is the only place that spawns, waits for, signals and reaps the process, and the
//! only writer of the instance's [`InstanceState`]; the handle reads state through a watch
//! channel and a few shared counters. This is watchexec's `Job` shape: controls run in order,
//! and `stop` can be awaited until it has been carried out.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lifecycle::{self, Control, Exit, Handle, Lifecycle, Next, Runner};
use super::logs::{LogSink, capture};
use super::{InstanceSpec, InstanceState, RestartPolicy};

/// How long a liveness restart waits between SIGTERM and SIGKILL.
pub const RESTART_GRACE: Duration = Duration::from_secs(5);
/// How long an exit waits for the last output lines before it is reported.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// The file descriptor at which an instance keeps the read end of its own output pipe. While
/// the instance holds it, its writes never fail with EPIPE when the agent dies (they wait in
/// the pipe), and the next agent reads the pipe again through `/proc/<pid>/fd/9`.
pub const OUTPUT_FD: u8 = 9;
/// How often an adopted process (not this agent's child) is looked at for its end.
const ADOPTED_WATCH: Duration = Duration::from_millis(100);

/// A running (or restarting, or ended) instance of a release.
///
/// The handle is cheap to query and safe to share (`Send + Sync`). Dropping it kills the
/// instance's whole process group at once (SIGKILL, no grace) so nothing outlives the agent;
/// call [`Instance::stop`] first for a graceful shutdown.
#[derive(Debug)]
pub struct Instance {
    spec: Arc<InstanceSpec>,
    handle: Handle,
    /// The live process group, 0 when there is none (read by `Drop` to kill synchronously).
    pgid: Arc<AtomicI32>,
}

impl Instance {
    /// Starts supervising `spec`: spawns its process now, on the current Tokio runtime.
    ///
    /// Never fails: a process that cannot start is reported like a crash, through the state
    /// (`Backoff` or `Exited`), [`Instance::last_exit`] and the log.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn spawn(spec: InstanceSpec, policy: RestartPolicy) -> Instance {
        Self::supervise(spec, policy, None)
    }

    /// Takes over the running process `pid` (a process group leader) that an earlier agent
    /// started for `spec`, instead of starting one: after that agent's `kill -9` its instances
    /// keep serving, and this one watches, restarts and stops them as its own. A restart runs
    /// `spec` afresh.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn adopt(spec: InstanceSpec, policy: RestartPolicy, pid: u32) -> Instance {
        Self::supervise(spec, policy, Some(pid))
    }

    fn supervise(spec: InstanceSpec, policy: RestartPolicy, adopt: Option<u32>) -> Instance {
        let spec = Arc::new(spec);
        let pgid = Arc::new(AtomicI32::new(
            adopt.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
        ));
        let logs = Arc::new(LogSink::open(
            spec.log.clone(),
            spec.index,
            spec.redact.clone(),
        ));
        let (handle, lifecycle) = lifecycle::pair(&policy, logs);
        let runner = ProcessRunner {
            spec: Arc::clone(&spec),
            pgid: Arc::clone(&pgid),
        };
        tokio::spawn(lifecycle.run(runner, adopt.map_or(Next::Start, Next::Adopt)));
        Instance { spec, handle, pgid }
    }

    /// The lifecycle's handle (the target seam drives instances through it).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// What this instance runs.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// The current state.
    pub fn state(&self) -> InstanceState {
        self.handle.state()
    }

    /// A receiver of the state; `changed()` wakes on each transition (a receiver that looks
    /// late sees the latest). After `Stopped` the sender is gone, so `changed()` returns an
    /// error: wait with `wait_for(..)`, which still checks the final value.
    pub fn watch(&self) -> watch::Receiver<InstanceState> {
        self.handle.watch()
    }

    /// The process id (also the process group id) while running.
    pub fn pid(&self) -> Option<u32> {
        match self.handle.state() {
            InstanceState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Restarts so far: after crashes, and by [`Instance::restart`].
    pub fn restarts(&self) -> u32 {
        self.handle.restarts()
    }

    /// Whether it restarted at least `crash_loop_restarts` times within `crash_loop_window`.
    pub fn crash_looping(&self) -> bool {
        self.handle.crash_looping()
    }

    /// How the last run ended, in words ("exited with code 1", "could not start: ..."), if one
    /// has ended.
    pub fn last_exit(&self) -> Option<String> {
        self.handle.last_exit()
    }

    /// Turns restarting after a crash on or off.
    ///
    /// Off during deploy verification, so an exit fails the deploy at once; on once the
    /// release is live. Turning it off during a backoff cancels the pending restart (the state
    /// becomes `Exited`); turning it on does not revive an `Exited` instance (use
    /// [`Instance::restart`] for that).
    pub fn set_restart(&self, on: bool) {
        self.handle.set_restart(on);
    }

    /// Whether crash restarts are on (the instance is past its deploy's verification).
    pub fn restart_enabled(&self) -> bool {
        self.handle.restart_enabled()
    }

    /// Kills the process group (SIGTERM, [`RESTART_GRACE`], SIGKILL) and starts again now,
    /// without backoff; counts as a restart. Used when liveness fails. Also starts an
    /// `Exited` instance or one waiting in `Backoff` at once. Does nothing once stopped.
    pub fn restart(&self) {
        self.handle.restart();
    }

    /// Stops for good: SIGTERM to the process group, up to `grace` for the process to exit,
    /// then SIGKILL to the group (which also takes whatever the process left behind).
    /// No restart follows; the state ends `Stopped`. Idempotent; returns once the process has
    /// been reaped and the rest of its group SIGKILLed.
    pub async fn stop(&self, grace: Duration) {
        self.handle.stop(grace).await;
    }

    /// The last `n` output lines (at most [`super::RING_LINES`]), oldest first, for failure
    /// reasons. Spawn and log-file errors appear here too, prefixed `cutover:`.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.handle.last_lines(n)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The owning task sees the channel close and reaps; killing here too means the group
        // dies even when the runtime is shutting down and the task never runs again.
        kill_group(self.pgid.load(Ordering::SeqCst), Signal::SIGKILL);
    }
}

/// Signals process group `pgid` (0 means none); a group already gone is not an error.
fn kill_group(pgid: i32, signal: Signal) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// A process's exit status as an [`Exit`].
fn exit_of(status: ExitStatus) -> Exit {
    let why =
        super::describe_exit(status.code(), status.signal()).unwrap_or_else(|| "ended".to_string());
    Exit {
        code: status.code(),
        signal: status.signal(),
        at: Utc::now(),
        why,
    }
}

/// How one run of a process goes: spawned in a process group of its own (or adopted), its
/// output captured, reaped.
struct ProcessRunner {
    spec: Arc<InstanceSpec>,
    pgid: Arc<AtomicI32>,
}

impl Runner for ProcessRunner {
    type Adopt = u32;

    /// Spawns the process and supervises it until it exits or a control ends it.
    async fn run_once(&mut self, lc: &mut Lifecycle) -> Next<u32> {
        if lc.pending_stop() {
            return Next::Stopped;
        }
        lc.set(InstanceState::Starting);
        let spawned = output_pipe().and_then(|(reader, stdio)| {
            let child = self.command(stdio).spawn()?;
            Ok((child, reader))
        });
        let (mut child, output) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::NotFound && !self.spec.dir.is_dir() {
                    format!("directory {} does not exist", self.spec.dir.display())
                } else {
                    e.to_string()
                };
                let why = format!("could not start `{}`: {why}", self.spec.command);
                lc.logs.failure(&why);
                return lc.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        let pid = child.id().unwrap_or(0);
        let pgid = i32::try_from(pid).unwrap_or(0);
        self.pgid.store(pgid, Ordering::SeqCst);
        let started = Instant::now();
        lc.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        lc.logs.note(&format!(
            "started pid {pid} on port {}: {}",
            self.spec.port, self.spec.command
        ));
        let readers = vec![capture(output, Arc::clone(&lc.logs))];

        loop {
            tokio::select! {
                status = child.wait() => {
                    let exit = match status {
                        Ok(status) => exit_of(status),
                        Err(e) => Exit::failed(format!("waiting for the process failed: {e}")),
                    };
                    self.clear_group(pgid, readers).await;
                    return lc.ended(exit, started.elapsed());
                }
                control = lc.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        lc.logs.note("restarting (requested)");
                        let exit = terminate(&mut child, pgid, RESTART_GRACE).await;
                        self.clear_group(pgid, readers).await;
                        return lc.restarted(exit);
                    }
                    Some(Control::Stop { grace, done }) => {
                        lc.stop_waiters.push(done);
                        let exit = terminate(&mut child, pgid, grace).await;
                        self.clear_group(pgid, readers).await;
                        lc.logs.note(&format!("stopped ({})", exit.why));
                        return Next::Stopped;
                    }
                    None => {
                        // The handle was dropped (and has already sent SIGKILL).
                        kill_group(pgid, Signal::SIGKILL);
                        let _ = child.wait().await;
                        self.clear_group(pgid, readers).await;
                        lc.logs.note("killed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }

    /// Supervises a process an earlier agent started (found after that agent's `kill -9`):
    /// not this agent's child, so its end is seen by watching `/proc`, and its output is read
    /// again through the pipe end the instance keeps open for that ([`OUTPUT_FD`]).
    async fn run_adopted(&mut self, lc: &mut Lifecycle, pid: u32) -> Next<u32> {
        let pgid = i32::try_from(pid).unwrap_or(0);
        self.pgid.store(pgid, Ordering::SeqCst);
        let started = Instant::now();
        lc.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        lc.logs.note(&format!(
            "adopted pid {pid} on port {} after an agent restart",
            self.spec.port
        ));
        let readers: Vec<JoinHandle<()>> = match reopen_output(pid) {
            Ok(output) => vec![capture(output, Arc::clone(&lc.logs))],
            Err(e) => {
                lc.logs
                    .note(&format!("cannot read the adopted process's output: {e}"));
                Vec::new()
            }
        };
        let mut ticks = tokio::time::interval(ADOPTED_WATCH);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if !process_alive(pid) {
                        self.clear_group(pgid, readers).await;
                        let exit = Exit::failed(
                            "exited (exit status unknown: it was adopted after an agent restart)"
                                .to_string(),
                        );
                        return lc.ended(exit, started.elapsed());
                    }
                }
                control = lc.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        lc.logs.note("restarting (requested)");
                        let exit = terminate_adopted(pid, RESTART_GRACE).await;
                        self.clear_group(pgid, readers).await;
                        return lc.restarted(exit);
                    }
                    Some(Control::Stop { grace, done }) => {
                        lc.stop_waiters.push(done);
                        let exit = terminate_adopted(pid, grace).await;
                        self.clear_group(pgid, readers).await;
                        lc.logs.note(&format!("stopped ({})", exit.why));
                        return Next::Stopped;
                    }
                    None => {
                        kill_group(pgid, Signal::SIGKILL);
                        self.clear_group(pgid, readers).await;
                        lc.logs.note("killed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }
}

impl ProcessRunner {
    /// `sh -c` of the run command, in a process group of its own, with `output` as stdin,
    /// stdout and stderr: the script first keeps the pipe's read end as [`OUTPUT_FD`] and
    /// takes stdin from /dev/null.
    fn command(&self, output: OutputStdio) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "exec {OUTPUT_FD}<&0 </dev/null\n{}",
                self.spec.command
            ))
            .current_dir(&self.spec.dir)
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(output.read)
            .stdout(output.out)
            .stderr(output.err)
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// After the leader is reaped: kill what it left in its group (so pipes close and nothing
    /// lingers), then give the readers a moment to deliver the last lines.
    async fn clear_group(&self, pgid: i32, readers: Vec<JoinHandle<()>>) {
        kill_group(pgid, Signal::SIGKILL);
        self.pgid.store(0, Ordering::SeqCst);
        let drain = async {
            for reader in readers {
                let _ = reader.await;
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN, drain).await;
    }
}

/// The instance's ends of its output pipe.
struct OutputStdio {
    read: Stdio,
    out: Stdio,
    err: Stdio,
}

/// A pipe for an instance's stdout and stderr: the agent's read end, and the instance's three
/// ends (the read end too, which the instance keeps as [`OUTPUT_FD`]).
fn output_pipe() -> std::io::Result<(tokio::net::unix::pipe::Receiver, OutputStdio)> {
    let (reader, writer) = std::io::pipe()?;
    let stdio = OutputStdio {
        read: Stdio::from(reader.try_clone()?),
        out: Stdio::from(writer.try_clone()?),
        err: Stdio::from(writer),
    };
    let reader =
        tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))?;
    Ok((reader, stdio))
}

/// Opens the output pipe of adopted process `pid` again, through the read end it keeps.
fn reopen_output(pid: u32) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(format!("/proc/{pid}/fd/{OUTPUT_FD}"))?;
    tokio::net::unix::pipe::Receiver::from_file(file)
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let after = stat.rfind(')').map(|i| &stat[i + 1..])?;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Stops an adopted process: SIGTERM to its group, up to `grace` for it to go, then SIGKILL.
async fn terminate_adopted(pid: u32, grace: Duration) -> Exit {
    let pgid = i32::try_from(pid).unwrap_or(0);
    kill_group(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while process_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = if process_alive(pid) {
        kill_group(pgid, Signal::SIGKILL);
        super::describe_exit(None, Some(Signal::SIGKILL as i32))
    } else {
        None
    };
    Exit::failed(why.unwrap_or_else(|| "ended after SIGTERM".to_string()))
}

/// SIGTERM the group, wait up to `grace` for the leader, then SIGKILL the group.
async fn terminate(child: &mut Child, pgid: i32, grace: Duration) -> Exit {
    kill_group(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            kill_group(pgid, Signal::SIGKILL);
            child.wait().await
        }
    };
    match status {
        Ok(status) => exit_of(status),
        Err(e) => Exit::failed(format!("waiting for the process failed: {e}")),
    }
}
