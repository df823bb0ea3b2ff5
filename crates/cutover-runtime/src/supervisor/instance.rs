//! One instance: a handle ([`Instance`]) that sends controls to the task owning the child.
//!
//! The task is the only place that spawns, waits for, signals and reaps the process, and the
//! only writer of the instance's [`InstanceState`]; the handle reads state through a watch
//! channel and a few shared counters. This is watchexec's `Job` shape: controls run in order,
//! and `stop` can be awaited until it has been carried out.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::{Backoff, RestartHistory};
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
    controls: mpsc::UnboundedSender<Control>,
    state: watch::Receiver<InstanceState>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
}

/// What the handle and the owning task share besides the state channel.
#[derive(Debug)]
struct Shared {
    /// The live process group, 0 when there is none (read by `Drop` to kill synchronously).
    pgid: AtomicI32,
    /// Restarts so far (crash restarts and [`Instance::restart`]).
    restarts: AtomicU32,
    /// Whether a crash is followed by a restart.
    restart: AtomicBool,
    /// When restarts happened, for crash-loop detection.
    history: Mutex<RestartHistory>,
    /// How the last run ended, in words.
    last_exit: Mutex<Option<String>>,
}

impl Shared {
    fn history(&self) -> std::sync::MutexGuard<'_, RestartHistory> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_last_exit(&self, why: String) {
        *self
            .last_exit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }

    fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        self.history().record(Instant::now());
    }
}

/// A request from the handle to the owning task.
#[derive(Debug)]
enum Control {
    SetRestart(bool),
    Restart,
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
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
        let (state_tx, state_rx) = watch::channel(InstanceState::Starting);
        let (controls, controls_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pgid: AtomicI32::new(adopt.and_then(|p| i32::try_from(p).ok()).unwrap_or(0)),
            restarts: AtomicU32::new(0),
            restart: AtomicBool::new(policy.restart),
            history: Mutex::new(RestartHistory::new(
                policy.crash_loop_restarts,
                policy.crash_loop_window,
            )),
            last_exit: Mutex::new(None),
        });
        let logs = Arc::new(LogSink::open(
            spec.log.clone(),
            spec.index,
            spec.redact.clone(),
        ));
        let owner = Owner {
            spec: Arc::clone(&spec),
            backoff: Backoff::new(policy.initial, policy.max),
            stable_after: policy.crash_loop_window,
            shared: Arc::clone(&shared),
            logs: Arc::clone(&logs),
            state: state_tx,
            controls: controls_rx,
            stop_waiters: Vec::new(),
            last: None,
        };
        tokio::spawn(owner.run(adopt.map_or(Next::Start, Next::Adopt)));
        Instance {
            spec,
            controls,
            state: state_rx,
            shared,
            logs,
        }
    }

    /// What this instance runs.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// The current state.
    pub fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    /// A receiver of the state; `changed()` wakes on each transition (a receiver that looks
    /// late sees the latest). After `Stopped` the sender is gone, so `changed()` returns an
    /// error: wait with `wait_for(..)`, which still checks the final value.
    pub fn watch(&self) -> watch::Receiver<InstanceState> {
        self.state.clone()
    }

    /// The process id (also the process group id) while running.
    pub fn pid(&self) -> Option<u32> {
        match *self.state.borrow() {
            InstanceState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Restarts so far: after crashes, and by [`Instance::restart`].
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Whether it restarted at least `crash_loop_restarts` times within `crash_loop_window`.
    pub fn crash_looping(&self) -> bool {
        self.shared.history().crash_looping(Instant::now())
    }

    /// How the last run ended, in words ("exited with code 1", "could not start: ..."), if one
    /// has ended.
    pub fn last_exit(&self) -> Option<String> {
        self.shared
            .last_exit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Turns restarting after a crash on or off.
    ///
    /// Off during deploy verification, so an exit fails the deploy at once; on once the
    /// release is live. Turning it off during a backoff cancels the pending restart (the state
    /// becomes `Exited`); turning it on does not revive an `Exited` instance (use
    /// [`Instance::restart`] for that).
    pub fn set_restart(&self, on: bool) {
        self.shared.restart.store(on, Ordering::SeqCst);
        let _ = self.controls.send(Control::SetRestart(on));
    }

    /// Whether crash restarts are on (the instance is past its deploy's verification).
    pub fn restart_enabled(&self) -> bool {
        self.shared.restart.load(Ordering::SeqCst)
    }

    /// Kills the process group (SIGTERM, [`RESTART_GRACE`], SIGKILL) and starts again now,
    /// without backoff; counts as a restart. Used when liveness fails. Also starts an
    /// `Exited` instance or one waiting in `Backoff` at once. Does nothing once stopped.
    pub fn restart(&self) {
        // A closed channel means the instance is stopped: nothing to restart.
        let _ = self.controls.send(Control::Restart);
    }

    /// Stops for good: SIGTERM to the process group, up to `grace` for the process to exit,
    /// then SIGKILL to the group (which also takes whatever the process left behind).
    /// No restart follows; the state ends `Stopped`. Idempotent; returns once the process has
    /// been reaped and the rest of its group SIGKILLed.
    pub async fn stop(&self, grace: Duration) {
        if *self.state.borrow() == InstanceState::Stopped {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.controls.send(Control::Stop { grace, done }).is_err() {
            return;
        }
        // An error means the task ended without answering: it has stopped already.
        let _ = wait.await;
    }

    /// The last `n` output lines (at most [`super::RING_LINES`]), oldest first, for failure
    /// reasons. Spawn and log-file errors appear here too, prefixed `cutover:`.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.logs.last_lines(n)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The owning task sees the channel close and reaps; killing here too means the group
        // dies even when the runtime is shutting down and the task never runs again.
        kill_group(self.shared.pgid.load(Ordering::SeqCst), Signal::SIGKILL);
    }
}

/// Signals process group `pgid` (0 means none); a group already gone is not an error.
fn kill_group(pgid: i32, signal: Signal) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// How one run ended.
#[derive(Debug, Clone)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    at: DateTime<Utc>,
    why: String,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Exit {
        let why = match (status.code(), status.signal()) {
            (Some(127), _) => "exited with code 127 (command not found)".to_string(),
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            (None, None) => "ended".to_string(),
        };
        Exit {
            code: status.code(),
            signal: status.signal(),
            at: Utc::now(),
            why,
        }
    }

    fn failed(why: String) -> Exit {
        Exit {
            code: None,
            signal: None,
            at: Utc::now(),
            why,
        }
    }

    fn state(&self) -> InstanceState {
        InstanceState::Exited {
            code: self.code,
            signal: self.signal,
            at: self.at,
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    Signal::try_from(signal).map_or("unknown", Signal::as_str)
}

/// What the owning task does next.
enum Next {
    Start,
    Adopt(u32),
    Backoff(Duration),
    Idle,
    Stopped,
}

/// The task that owns the child process.
struct Owner {
    spec: Arc<InstanceSpec>,
    backoff: Backoff,
    /// A run at least this long resets the backoff.
    stable_after: Duration,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
    state: watch::Sender<InstanceState>,
    controls: mpsc::UnboundedReceiver<Control>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    last: Option<Exit>,
}

impl Owner {
    async fn run(mut self, first: Next) {
        let mut next = first;
        loop {
            next = match next {
                Next::Start => self.run_once().await,
                Next::Adopt(pid) => self.run_adopted(pid).await,
                Next::Backoff(delay) => self.backoff(delay).await,
                Next::Idle => self.idle().await,
                Next::Stopped => break,
            };
        }
        self.state.send_replace(InstanceState::Stopped);
        for done in self.stop_waiters.drain(..) {
            let _ = done.send(());
        }
    }

    fn set(&self, state: InstanceState) {
        self.state.send_replace(state);
    }

    /// Handles controls that arrived while the previous run was being torn down, so a stop
    /// requested during a restart does not start a process only to kill it.
    fn pending_stop(&mut self) -> bool {
        while let Ok(control) = self.controls.try_recv() {
            match control {
                Control::SetRestart(_) | Control::Restart => {}
                Control::Stop { done, .. } => self.stop_waiters.push(done),
            }
        }
        !self.stop_waiters.is_empty()
    }

    /// Spawns the process and supervises it until it exits or a control ends it.
    async fn run_once(&mut self) -> Next {
        if self.pending_stop() {
            return Next::Stopped;
        }
        self.set(InstanceState::Starting);
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
                self.logs.failure(&why);
                return self.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        let pid = child.id().unwrap_or(0);
        let pgid = i32::try_from(pid).unwrap_or(0);
        self.shared.pgid.store(pgid, Ordering::SeqCst);
        let started = Instant::now();
        self.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        self.logs.note(&format!(
            "started pid {pid} on port {}: {}",
            self.spec.port, self.spec.command
        ));
        let readers = vec![capture(output, Arc::clone(&self.logs))];

        loop {
            tokio::select! {
                status = child.wait() => {
                    let exit = match status {
                        Ok(status) => Exit::from_status(status),
                        Err(e) => Exit::failed(format!("waiting for the process failed: {e}")),
                    };
                    self.clear_group(pgid, readers).await;
                    return self.ended(exit, started.elapsed());
                }
                control = self.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        self.logs.note("restarting (requested)");
                        let exit = terminate(&mut child, pgid, RESTART_GRACE).await;
                        self.clear_group(pgid, readers).await;
                        return self.restarted(exit);
                    }
                    Some(Control::Stop { grace, done }) => {
                        self.stop_waiters.push(done);
                        let exit = terminate(&mut child, pgid, grace).await;
                        self.clear_group(pgid, readers).await;
                        self.logs.note(&format!("stopped ({})", exit.why));
                        return Next::Stopped;
                    }
                    None => {
                        // The handle was dropped (and has already sent SIGKILL).
                        kill_group(pgid, Signal::SIGKILL);
                        let _ = child.wait().await;
                        self.clear_group(pgid, readers).await;
                        self.logs.note("killed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }

    /// Supervises a process an earlier agent started (found after that agent's `kill -9`):
    /// not this agent's child, so its end is seen by watching `/proc`, and its output is read
    /// again through the pipe end the instance keeps open for that ([`OUTPUT_FD`]).
    async fn run_adopted(&mut self, pid: u32) -> Next {
        let pgid = i32::try_from(pid).unwrap_or(0);
        self.shared.pgid.store(pgid, Ordering::SeqCst);
        let started = Instant::now();
        self.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        self.logs.note(&format!(
            "adopted pid {pid} on port {} after an agent restart",
            self.spec.port
        ));
        let readers: Vec<JoinHandle<()>> = match reopen_output(pid) {
            Ok(output) => vec![capture(output, Arc::clone(&self.logs))],
            Err(e) => {
                self.logs
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
                        return self.ended(exit, started.elapsed());
                    }
                }
                control = self.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        self.logs.note("restarting (requested)");
                        let exit = terminate_adopted(pid, RESTART_GRACE).await;
                        self.clear_group(pgid, readers).await;
                        return self.restarted(exit);
                    }
                    Some(Control::Stop { grace, done }) => {
                        self.stop_waiters.push(done);
                        let exit = terminate_adopted(pid, grace).await;
                        self.clear_group(pgid, readers).await;
                        self.logs.note(&format!("stopped ({})", exit.why));
                        return Next::Stopped;
                    }
                    None => {
                        kill_group(pgid, Signal::SIGKILL);
                        self.clear_group(pgid, readers).await;
                        self.logs.note("killed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }

    /// A run ended by a requested restart: recorded, then started again at once.
    fn restarted(&mut self, exit: Exit) -> Next {
        self.logs.note(&format!("{} (restart)", exit.why));
        self.shared.set_last_exit(exit.why.clone());
        self.last = Some(exit);
        self.shared.record_restart();
        Next::Start
    }

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
        self.shared.pgid.store(0, Ordering::SeqCst);
        let drain = async {
            for reader in readers {
                let _ = reader.await;
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN, drain).await;
    }

    /// A run ended on its own (or never started): back off and restart, or stay exited.
    fn ended(&mut self, exit: Exit, ran_for: Duration) -> Next {
        self.shared.set_last_exit(exit.why.clone());
        let next = if self.shared.restart.load(Ordering::SeqCst) {
            if ran_for >= self.stable_after {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            self.logs.note(&format!(
                "{}; restarting in {}",
                exit.why,
                cutover_config::format_duration(delay)
            ));
            Next::Backoff(delay)
        } else {
            self.logs
                .note(&format!("{}; not restarting (restart is off)", exit.why));
            self.set(exit.state());
            Next::Idle
        };
        self.last = Some(exit);
        next
    }

    /// Waits out a restart delay, unless a control changes the plan.
    async fn backoff(&mut self, delay: Duration) -> Next {
        let until = Instant::now() + delay;
        let until_utc = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.set(InstanceState::Backoff {
            until: until_utc,
            restarts: self.shared.restarts.load(Ordering::SeqCst),
            last_exit: self
                .last
                .as_ref()
                .map(|e| e.why.clone())
                .unwrap_or_default(),
        });
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {
                    self.shared.record_restart();
                    return Next::Start;
                }
                control = self.controls.recv() => match control {
                    Some(Control::SetRestart(true)) => {}
                    Some(Control::SetRestart(false)) => {
                        self.logs.note("restart turned off; not restarting");
                        let exit = self.last.clone().unwrap_or_else(|| Exit::failed(String::new()));
                        self.set(exit.state());
                        return Next::Idle;
                    }
                    Some(Control::Restart) => {
                        self.shared.record_restart();
                        return Next::Start;
                    }
                    Some(Control::Stop { done, .. }) => {
                        self.stop_waiters.push(done);
                        self.logs.note("stopped");
                        return Next::Stopped;
                    }
                    None => return Next::Stopped,
                },
            }
        }
    }

    /// Exited with restart off: wait for a restart or a stop.
    async fn idle(&mut self) -> Next {
        loop {
            match self.controls.recv().await {
                Some(Control::SetRestart(_)) => {}
                Some(Control::Restart) => {
                    self.shared.record_restart();
                    return Next::Start;
                }
                Some(Control::Stop { done, .. }) => {
                    self.stop_waiters.push(done);
                    return Next::Stopped;
                }
                None => return Next::Stopped,
            }
        }
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
        "killed by signal 9 (SIGKILL)"
    } else {
        "ended after SIGTERM"
    };
    Exit::failed(why.to_string())
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
        Ok(status) => Exit::from_status(status),
        Err(e) => Exit::failed(format!("waiting for the process failed: {e}")),
    }
}
