//! Running one shell command the way every stage does: `sh -c` in a directory, in its own
//! process group, with a timeout and a cancellation token, streaming its output line by line.
//!
//! The whole process group is killed on timeout, on cancel, when the caller drops the future,
//! and after the command exits (so a `sleep 100 &` left behind by a check does not outlive it).
//!
//! A run's commands carry its mark in their environment ([`RUN_MARK`], [`STATE_MARK`]), so
//! when the process running them dies (kill -9, power loss) and nothing is left to kill their
//! groups, the next command that settles the run finds them in /proc ([`end_leftovers`]).

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many trailing output lines a result keeps (the failure summary shows them).
pub const TAIL_LINES: usize = 20;
/// How long a group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// Longest line kept; the rest of a longer line is dropped with a marker.
const MAX_LINE: usize = 16 * 1024;

/// The environment variable naming the run a command belongs to (`CUTOVER_RUN=<run id>`).
pub const RUN_MARK: &str = "CUTOVER_RUN";
/// The environment variable naming the state directory (`.cutover/`) of that run's project, so
/// two projects' runs of the same second are never taken for one another.
pub const STATE_MARK: &str = "CUTOVER_STATE_DIR";

/// The marks every command of run `run_id` of the project with state in `state_dir` carries.
pub fn run_marks(run_id: &str, state_dir: &Path) -> [(String, String); 2] {
    [
        (RUN_MARK.to_string(), run_id.to_string()),
        (STATE_MARK.to_string(), state_dir.display().to_string()),
    ]
}

/// Kills (SIGKILL) the process group of every process still carrying the marks of run
/// `run_id` of the project with state in `state_dir` (see [`run_marks`]); never the caller's
/// own group. Returns how many groups it killed.
///
/// For a run whose process died: its checks, builds and hooks were reparented to PID 1 and
/// would otherwise run on. Processes of other users (unreadable environ) are left alone.
pub fn end_leftovers(run_id: &str, state_dir: &Path) -> usize {
    let [(run_key, run_value), (state_key, state_value)] = run_marks(run_id, state_dir);
    let run_mark = format!("{run_key}={run_value}");
    let state_mark = format!("{state_key}={state_value}");
    let own_group = nix::unistd::getpgrp();
    let own_pid = std::process::id();
    let mut groups = std::collections::BTreeSet::new();
    for (pid, dir) in cutover_runtime::procfs::processes() {
        if pid == own_pid {
            continue;
        }
        let Some(environ) = cutover_runtime::procfs::environ(&dir) else {
            continue;
        };
        let vars = || environ.iter();
        if !(vars().any(|v| v == run_mark.as_bytes()) && vars().any(|v| v == state_mark.as_bytes()))
        {
            continue;
        }
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        if let Ok(group) = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            && group != own_group
            && group.as_raw() > 1
        {
            groups.insert(group);
        }
    }
    groups
        .into_iter()
        .filter(|g| killpg(*g, Signal::SIGKILL).is_ok())
        .count()
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    /// The shell command line.
    pub command: &'a str,
    /// Working directory.
    pub dir: &'a Path,
    /// Extra environment variables (added to the inherited environment).
    pub env: &'a [(String, String)],
    /// Kill the command after this long.
    pub timeout: Duration,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit, or killed by a signal it did not get from us.
    Failed {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal number, when a signal ended it.
        signal: Option<i32>,
    },
    /// Ran past its timeout and was killed.
    TimedOut(Duration),
    /// Canceled (Ctrl-C) and killed.
    Canceled,
    /// Could not be started at all.
    SpawnFailed(String),
}

impl CommandOutcome {
    /// True for [`CommandOutcome::Succeeded`].
    pub fn is_success(&self) -> bool {
        matches!(self, CommandOutcome::Succeeded)
    }
}

/// The result of [`run_command`].
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// How it ended.
    pub outcome: CommandOutcome,
    /// The last [`TAIL_LINES`] lines of combined output.
    pub tail: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

impl CommandResult {
    /// A sentence for a failure reason: "`pytest -q` exited with code 1".
    pub fn describe(&self, command: &str) -> String {
        match &self.outcome {
            CommandOutcome::Succeeded => format!("`{command}` succeeded"),
            CommandOutcome::Failed { code, signal } => {
                match cutover_runtime::supervisor::describe_exit(*code, *signal) {
                    Some(how) => format!("`{command}` {how}"),
                    None => format!("`{command}` failed"),
                }
            }
            CommandOutcome::TimedOut(t) => format!(
                "`{command}` timed out after {}",
                cutover_config::format_duration(*t)
            ),
            CommandOutcome::Canceled => format!("`{command}` was canceled"),
            CommandOutcome::SpawnFailed(e) => format!("`{command}` could not start: {e}"),
        }
    }
}

/// Kills a process group when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the normal case after a clean exit.
            let _ = killpg(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill(Signal::SIGKILL);
    }
}

/// Runs `spec` through `sh -c`, calling `on_line` for every output line.
///
/// Never returns an error: every way a command can end is a [`CommandOutcome`].
pub async fn run_command(
    spec: &CommandSpec<'_>,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Stream, &str),
) -> CommandResult {
    let started = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    // An absolute path: no PATH search (and its failed execs) per command.
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(spec.command)
        .current_dir(spec.dir)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound && !spec.dir.is_dir() {
                format!("directory {} does not exist", spec.dir.display())
            } else {
                e.to_string()
            };
            return CommandResult {
                outcome: CommandOutcome::SpawnFailed(why),
                tail: Vec::new(),
                duration: started.elapsed(),
            };
        }
    };
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };

    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(256);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, Stream::Stderr, tx.clone()));
    }
    drop(tx);

    let mut push = |stream: Stream, line: String, tail: &mut VecDeque<String>| {
        on_line(stream, &line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut output_open = true;
    let outcome = loop {
        tokio::select! {
            biased;
            line = rx.recv(), if output_open => match line {
                Some((stream, line)) => push(stream, line, &mut tail),
                None => output_open = false,
            },
            status = child.wait() => {
                break match status {
                    Ok(s) if s.success() => CommandOutcome::Succeeded,
                    Ok(s) => {
                        use std::os::unix::process::ExitStatusExt;
                        CommandOutcome::Failed { code: s.code(), signal: s.signal() }
                    }
                    Err(e) => CommandOutcome::SpawnFailed(format!("waiting for it failed: {e}")),
                };
            }
            () = &mut deadline => {
                terminate(&mut child, &mut guard).await;
                break CommandOutcome::TimedOut(spec.timeout);
            }
            () = cancel.cancelled() => {
                terminate(&mut child, &mut guard).await;
                break CommandOutcome::Canceled;
            }
        }
    };

    // Whatever the leader left behind in its group goes now, so the pipes close.
    guard.kill(Signal::SIGKILL);
    guard.pgid = None;
    if output_open {
        let drain = async {
            while let Some((stream, line)) = rx.recv().await {
                push(stream, line, &mut tail);
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    }

    CommandResult {
        outcome,
        tail: tail.into_iter().collect(),
        duration: started.elapsed(),
    }
}

/// SIGTERM the group, wait up to [`KILL_GRACE`], then SIGKILL it.
async fn terminate(child: &mut tokio::process::Child, guard: &mut GroupGuard) {
    guard.kill(Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        guard.kill(Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn forward_lines(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let mut line = String::from_utf8_lossy(&buf).into_owned();
                if line.len() > MAX_LINE {
                    let mut cut = MAX_LINE;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str(" [line truncated]");
                }
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Whether `pid` still runs (a zombie awaiting its reaper does not count), after giving
    /// a killed process a moment to die.
    async fn alive(pid: i32) -> bool {
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z") {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn spec<'a>(command: &'a str, dir: &'a Path, timeout: Duration) -> CommandSpec<'a> {
        CommandSpec {
            command,
            dir,
            env: &[],
            timeout,
        }
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let dir = std::env::temp_dir();
        let mut lines = Vec::new();
        let r = run_command(
            &spec(
                "echo out; echo err >&2; exit 3",
                &dir,
                Duration::from_secs(10),
            ),
            &CancellationToken::new(),
            |s, l| lines.push((s, l.to_string())),
        )
        .await;
        assert_eq!(
            r.outcome,
            CommandOutcome::Failed {
                code: Some(3),
                signal: None
            }
        );
        assert!(lines.contains(&(Stream::Stdout, "out".to_string())));
        assert!(lines.contains(&(Stream::Stderr, "err".to_string())));
        assert_eq!(r.describe("x"), "`x` exited with code 3");
    }

    #[tokio::test]
    async fn tail_keeps_last_twenty_lines() {
        let dir = std::env::temp_dir();
        let r = run_command(
            &spec("seq 1 50", &dir, Duration::from_secs(10)),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await;
        assert!(r.outcome.is_success());
        assert_eq!(r.tail.len(), TAIL_LINES);
        assert_eq!(r.tail.first().map(String::as_str), Some("31"));
        assert_eq!(r.tail.last().map(String::as_str), Some("50"));
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let r = run_command(
            &spec(&cmd, dir.path(), Duration::from_millis(300)),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await;
        assert!(matches!(r.outcome, CommandOutcome::TimedOut(_)));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        assert!(!alive(pid).await, "grandchild survived");
    }

    #[tokio::test]
    async fn cancel_stops_quickly_and_background_children_die_after_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            t.cancel();
        });
        let r = run_command(
            &spec("sleep 30", dir.path(), Duration::from_secs(60)),
            &token,
            |_, _| {},
        )
        .await;
        assert_eq!(r.outcome, CommandOutcome::Canceled);
        assert!(r.duration < Duration::from_secs(5));

        let pidfile = dir.path().join("bg");
        let cmd = format!("sleep 60 >/dev/null 2>&1 & echo $! > {}", pidfile.display());
        let r = run_command(
            &spec(&cmd, dir.path(), Duration::from_secs(10)),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await;
        assert!(r.outcome.is_success());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        assert!(!alive(pid).await, "background child outlived its command");
    }

    #[tokio::test]
    async fn leftovers_of_a_run_are_ended_and_no_other() {
        let state = tempfile::tempdir().expect("tempdir");
        let spawn = |run: &str, state: &Path| {
            std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 60 & wait"])
                .envs(run_marks(run, state))
                .process_group(0)
                .spawn()
                .expect("spawn")
        };
        let mut ours = spawn("deploy-20260101-000000", state.path());
        let mut same_id_other_project = spawn("deploy-20260101-000000", Path::new("/elsewhere"));
        let mut other_run = spawn("deploy-20260101-000001", state.path());
        tokio::time::sleep(Duration::from_millis(200)).await;

        assert_eq!(end_leftovers("deploy-20260101-000000", state.path()), 1);
        let status = ours.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        for child in [&mut same_id_other_project, &mut other_run] {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "killed too much"
            );
            let _ = killpg(
                Pid::from_raw(i32::try_from(child.id()).expect("pid")),
                Signal::SIGKILL,
            );
            let _ = child.wait();
        }
        assert_eq!(end_leftovers("deploy-20260101-000000", state.path()), 0);
    }

    #[tokio::test]
    async fn missing_directory_is_named() {
        let r = run_command(
            &spec(
                "true",
                Path::new("/nonexistent/cutover-dir"),
                Duration::from_secs(1),
            ),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await;
        match r.outcome {
            CommandOutcome::SpawnFailed(why) => assert!(why.contains("/nonexistent/cutover-dir")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
