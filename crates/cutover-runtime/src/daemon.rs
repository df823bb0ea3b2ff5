//! Running the agent as a process: where its socket lives, refusing a second agent, replacing
//! a stale socket, serving until told to stop, and leaving nothing behind.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cutover_store::StateDir;
use cutover_store::atomic::{Durability, write_atomic};
use tokio::net::UnixListener;

use crate::agent::{Agent, StoreLocation, log};

/// Longest socket path used as is (`sun_path` holds 108 bytes with its terminator).
const MAX_SOCKET_PATH: usize = 100;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent answers on the socket.
    #[error("a cutover agent already runs for this project (socket {})", socket.display())]
    AlreadyRunning {
        /// The socket.
        socket: PathBuf,
    },
    /// The directory meant for the agent's socket belongs to another user.
    #[error(
        "refusing the socket directory {}: it is owned by {owner}, not by you ({user}); \
         its owner could answer in the agent's place. Remove it (e.g. `sudo rm -rf {}`) or set \
         XDG_RUNTIME_DIR to a directory only you own",
        dir.display(),
        dir.display()
    )]
    ForeignSocketDir {
        /// The directory.
        dir: PathBuf,
        /// Who owns it ("nobody, uid 65534").
        owner: String,
        /// Who runs cutover.
        user: String,
    },
    /// A file operation failed.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What it was doing.
        doing: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where the agent of the project whose state is in `state_dir` listens:
/// `<state_dir>/agent.sock`, or, when that path is too long for a socket, a path in the user's
/// runtime directory named after a hash of `state_dir` (recorded in `agent.json` too):
/// `$XDG_RUNTIME_DIR/cutover/`, else `/tmp/cutover-<uid>/cutover/`.
///
/// Those directories, where they exist, must be the user's own: whoever can write in them
/// could put their own socket there and receive what cutover sends its agent (secrets
/// included). One owned by anyone else is refused ([`AgentError::ForeignSocketDir`]).
pub fn socket_path(state_dir: &StateDir) -> Result<PathBuf, AgentError> {
    let direct = state_dir.agent_socket();
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(direct);
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/cutover-{}", nix::unistd::Uid::current())));
    let dir = base.join("cutover");
    owned_by_user(&base)?;
    owned_by_user(&dir)?;
    Ok(dir.join(format!("{:016x}.sock", fnv(state_dir.path()))))
}

/// Ok when `dir` does not exist (cutover makes it) or belongs to the current user.
fn owned_by_user(dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let me = nix::unistd::Uid::current();
    if meta.uid() == me.as_raw() {
        return Ok(());
    }
    let name = |uid: nix::unistd::Uid| {
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
    };
    let owner = nix::unistd::Uid::from_raw(meta.uid());
    Err(AgentError::ForeignSocketDir {
        dir: dir.to_path_buf(),
        owner: match name(owner) {
            Some(n) => format!("{n} (uid {owner})"),
            None => format!("uid {owner}"),
        },
        user: match name(me) {
            Some(n) => format!("{n}, uid {me}"),
            None => format!("uid {me}"),
        },
    })
}

fn fnv(path: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the agent for the project whose state is in `state_dir` until it is stopped (API
/// `stop`, SIGTERM, SIGINT). Stops every instance before returning.
///
/// `store` is where the project's release store is: the agent reads secret values there when
/// it brings services back after a restart.
///
/// With `metrics_listen` (`[project] metrics_listen`), `GET /metrics` is served on that TCP
/// address too; an address that cannot be bound is logged and the agent runs on without it.
pub async fn run(
    state_dir: StateDir,
    metrics_listen: Option<SocketAddr>,
    store: Option<StoreLocation>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(state_dir.path()).map_err(io("cannot create", state_dir.path()))?;
    let socket = socket_path(&state_dir)?;
    if let Some(dir) = socket.parent()
        && dir != state_dir.path()
    {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        // Checked again now that it exists: made by someone else since, it is refused.
        socket_path(&state_dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("cannot restrict", dir))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(AgentError::AlreadyRunning { socket });
        }
        // Nobody answers: a dead agent's socket. Replace it.
        std::fs::remove_file(&socket).map_err(io("cannot remove the stale socket", &socket))?;
        log(&format!("replaced the stale socket {}", socket.display()));
    }
    let listener = UnixListener::bind(&socket).map_err(io("cannot listen on", &socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot restrict", &socket))?;
    let info = state_dir.agent_info();
    let body = serde_json::json!({ "pid": std::process::id(), "socket": socket });
    write_atomic(&info, body.to_string().as_bytes(), Durability::Fsync)
        .map_err(io("cannot write", &info))?;
    log(&format!(
        "agent {} listening on {}",
        std::process::id(),
        socket.display()
    ));

    let agent = Agent::new(state_dir.clone(), socket.clone(), store);
    let leftovers = agent.find_leftovers();
    if !leftovers.is_empty() {
        log(&format!(
            "found {} instance(s) left running by a previous agent",
            leftovers.len()
        ));
    }
    let shutdown = agent.shutdown.clone();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    if let Some(addr) = metrics_listen {
        // Logged either way; a port in use must not stop the agent from deploying.
        let _ = crate::metrics_listen::start(addr, agent.clone(), shutdown.clone()).await;
    }
    let server = tokio::spawn(crate::api::server::serve(
        listener,
        agent.clone(),
        shutdown.clone(),
    ));
    agent.recover(leftovers).await;
    shutdown.cancelled().await;
    log("stopping every instance");
    agent.stop_all().await;
    let _ = server.await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&info);
    log("agent stopped");
    Ok(())
}

async fn stop_on_signals(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

/// Crashes within this window slow the next restart down (the first is immediate).
const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait before a restart.
const MAX_RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the agent running: runs the worker that `worker()` describes (the agent itself) and,
/// when it dies by a signal (`kill -9`) or a panic, starts it again at once, so the services
/// are adopted and served again within moments without anyone running a command. A worker that
/// exits on its own (`cutover agent stop`, SIGTERM, or an error at start) ends the supervisor
/// with its exit code. SIGTERM and SIGINT are passed on to the worker. It never gives up
/// (the instances would be left without their proxy): repeated crashes within a minute are
/// restarted after a growing delay, at most [`MAX_RESTART_DELAY`].
pub async fn supervise(
    mut worker: impl FnMut() -> tokio::process::Command,
) -> Result<i32, AgentError> {
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            return Err(AgentError::Io {
                doing: "cannot watch signals for",
                path: PathBuf::from("the agent supervisor"),
                source: e,
            });
        }
    };
    let mut crashes: std::collections::VecDeque<std::time::Instant> =
        std::collections::VecDeque::new();
    loop {
        let mut child = worker().spawn().map_err(|source| AgentError::Io {
            doing: "cannot start the agent worker",
            path: std::env::current_exe().unwrap_or_default(),
            source,
        })?;
        let mut stopping = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = term.recv() => stopping = true,
                _ = int.recv() => stopping = true,
            }
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        };
        let status = status.map_err(|source| AgentError::Io {
            doing: "cannot wait for the agent worker",
            path: PathBuf::from("the agent worker"),
            source,
        })?;
        let crashed = status.signal().is_some() || status.code() == Some(101);
        if stopping || !crashed {
            return Ok(status.code().unwrap_or(1));
        }
        let now = std::time::Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|at| now.duration_since(*at) > RESTART_WINDOW)
        {
            crashes.pop_front();
        }
        let how = crate::supervisor::describe_exit(status.code(), status.signal())
            .unwrap_or_else(|| "ended".to_string());
        log(&format!(
            "the agent {how}; starting it again ({} crash(es) within a minute)",
            crashes.len()
        ));
        if crashes.len() > 3 {
            let backoff = std::time::Duration::from_millis(100 << crashes.len().min(8))
                .min(MAX_RESTART_DELAY);
            tokio::time::sleep(backoff).await;
        }
    }
}
