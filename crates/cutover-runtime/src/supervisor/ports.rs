//! Internal instance ports, handed out by the agent from a reserved range.
//!
//! # Theory of operation
//! An instance's `PORT` comes from [`Ports::allocate`], never from the kernel's ephemeral
//! range (binding port 0 and closing the socket leaves a window in which another process, or
//! another agent, gets the same port). The range defaults to [`DEFAULT_RANGE`], below Linux's
//! default ephemeral range (32768-60999), so outgoing connections never take these ports;
//! `CUTOVER_PORT_RANGE=LOW-HIGH` moves it.
//!
//! Three things keep two instances off one port:
//! 1. a table of the ports this agent handed out, each entry held by a [`PortLease`] until the
//!    instance using it is gone (the lease releases on drop);
//! 2. a lock file per port (`<runtime dir>/cutover/ports/<port>.lock`, `flock`ed for as long
//!    as the lease lives), so agents of other projects on this host skip a port one of them
//!    handed out, even before its instance binds it; a lock dies with its agent, so a crashed
//!    agent leaves nothing to clean up;
//! 3. a bind test before a port is handed out, so a port some other program listens on is
//!    skipped.
//!
//! After an agent restart, [`Ports::adopt`] reserves the port of an instance that still runs
//! (it listens there, so no bind test).

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The range used unless `CUTOVER_PORT_RANGE` says otherwise.
pub const DEFAULT_RANGE: RangeInclusive<u16> = 20000..=29999;
/// The environment variable that moves the range (`LOW-HIGH`, inclusive).
pub const RANGE_VAR: &str = "CUTOVER_PORT_RANGE";

/// Why no port could be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// `CUTOVER_PORT_RANGE` does not parse.
    #[error(
        "{RANGE_VAR}={value:?} is not a port range: use LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, e.g. {RANGE_VAR}=20000-29999"
    )]
    BadRange {
        /// The variable's value.
        value: String,
    },
    /// Every port of the range is handed out, locked by another agent or in use.
    #[error(
        "no free port in {low}-{high}: every one is used by an instance, locked by another cutover agent, or taken by another program; widen it with {RANGE_VAR}=LOW-HIGH"
    )]
    Exhausted {
        /// First port of the range.
        low: u16,
        /// Last port of the range.
        high: u16,
    },
    /// The port is already handed out by this agent (adopt).
    #[error("port {0} is already in use by another instance of this agent")]
    Taken(u16),
    /// Another agent holds the port's lock (adopt).
    #[error("port {0} is reserved by another cutover agent on this host")]
    LockedElsewhere(u16),
    /// The lock directory or file could not be used.
    #[error("cannot use the port lock {path}: {why}")]
    Lock {
        /// The file or directory.
        path: PathBuf,
        /// The OS error, in words.
        why: String,
    },
}

/// The agent's port allocator; cheap to clone (clones share the table).
#[derive(Debug, Clone)]
pub struct Ports {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    range: Result<RangeInclusive<u16>, PortError>,
    lock_dir: PathBuf,
    table: Mutex<BTreeSet<u16>>,
    /// Offset into the range where the next search starts: ports rotate, so a port just
    /// released (its process may still be dying) is the last to be handed out again.
    cursor: AtomicU32,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, BTreeSet<u16>> {
        // Every change is one insert or remove: consistent whatever a panic interrupted.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A port handed out to one instance; dropping it releases the port (table entry and lock).
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    inner: Arc<Inner>,
    /// Holds the port's `flock` (released when the file closes).
    _lock: File,
}

impl PortLease {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.inner.table().remove(&self.port);
    }
}

impl Ports {
    /// The allocator the agent uses: the range from `CUTOVER_PORT_RANGE` (or
    /// [`DEFAULT_RANGE`]), locks under [`default_lock_dir`]. A malformed variable is reported
    /// by every [`Ports::allocate`], never replaced by the default silently.
    pub fn from_env() -> Ports {
        let range = match std::env::var(RANGE_VAR) {
            Ok(value) => parse_range(&value),
            Err(_) => Ok(DEFAULT_RANGE),
        };
        Ports::build(range, default_lock_dir())
    }

    /// An allocator over `range` with its lock files in `lock_dir` (created when needed).
    pub fn new(range: RangeInclusive<u16>, lock_dir: PathBuf) -> Ports {
        Ports::build(Ok(range), lock_dir)
    }

    fn build(range: Result<RangeInclusive<u16>, PortError>, lock_dir: PathBuf) -> Ports {
        let len = range
            .as_ref()
            .map_or(1, |r| u32::from(*r.end() - *r.start()) + 1);
        // Agents start their search at different places, so two rarely contend for a lock.
        let start = std::process::id().wrapping_mul(7919) % len;
        Ports {
            inner: Arc::new(Inner {
                range,
                lock_dir,
                table: Mutex::new(BTreeSet::new()),
                cursor: AtomicU32::new(start),
            }),
        }
    }

    /// The ports handed out now, in order.
    pub fn handed_out(&self) -> Vec<u16> {
        self.inner.table().iter().copied().collect()
    }

    /// Hands out a port that is not in the table, not locked by another agent and free to
    /// bind (on 127.0.0.1 and 0.0.0.0), and records it until the lease is dropped.
    ///
    /// # Errors
    /// A malformed `CUTOVER_PORT_RANGE`, an unusable lock directory, or no port left.
    pub fn allocate(&self) -> Result<PortLease, PortError> {
        let range = self.inner.range.clone()?;
        let (low, high) = (*range.start(), *range.end());
        let len = u32::from(high - low) + 1;
        self.ensure_dir()?;
        for _ in 0..len {
            let offset = self.inner.cursor.fetch_add(1, Ordering::SeqCst) % len;
            let Ok(port) = u16::try_from(u32::from(low) + offset) else {
                continue;
            };
            if !self.inner.table().insert(port) {
                continue;
            }
            match self.lock(port) {
                Ok(Some(lock)) if bind_free(port) => {
                    return Ok(PortLease {
                        port,
                        inner: Arc::clone(&self.inner),
                        _lock: lock,
                    });
                }
                Ok(_) => {
                    self.inner.table().remove(&port);
                }
                Err(e) => {
                    self.inner.table().remove(&port);
                    return Err(e);
                }
            }
        }
        Err(PortError::Exhausted { low, high })
    }

    /// Reserves `port` for an instance that already runs on it (adopted after an agent
    /// restart): no bind test, since the instance listens there. Any port may be adopted,
    /// also one outside the range (an earlier agent may have used another range).
    ///
    /// # Errors
    /// The port is already handed out here, or another agent holds its lock.
    pub fn adopt(&self, port: u16) -> Result<PortLease, PortError> {
        self.ensure_dir()?;
        if !self.inner.table().insert(port) {
            return Err(PortError::Taken(port));
        }
        match self.lock(port) {
            Ok(Some(lock)) => Ok(PortLease {
                port,
                inner: Arc::clone(&self.inner),
                _lock: lock,
            }),
            Ok(None) => {
                self.inner.table().remove(&port);
                Err(PortError::LockedElsewhere(port))
            }
            Err(e) => {
                self.inner.table().remove(&port);
                Err(e)
            }
        }
    }

    fn ensure_dir(&self) -> Result<(), PortError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let dir = &self.inner.lock_dir;
        let lock_err = |why: String| PortError::Lock {
            path: dir.clone(),
            why,
        };
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| lock_err(e.to_string()))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| lock_err(e.to_string()))?;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(lock_err(
                "the directory belongs to another user: remove it, or set XDG_RUNTIME_DIR to a directory of yours".into(),
            ));
        }
        Ok(())
    }

    /// `Some(file)` holding `port`'s lock, `None` when another holder has it.
    fn lock(&self, port: u16) -> Result<Option<File>, PortError> {
        let path = lock_path(&self.inner.lock_dir, port);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PortError::Lock {
                path: path.clone(),
                why: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(PortError::Lock {
                path,
                why: e.to_string(),
            }),
        }
    }
}

/// `<dir>/<port>.lock`.
fn lock_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.lock"))
}

/// Where port locks live: `$XDG_RUNTIME_DIR/cutover/ports`, or `/tmp/cutover-<uid>/ports`.
/// Shared by every agent of the user on this host, whatever its project.
pub fn default_lock_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("cutover").join("ports"),
        None => {
            PathBuf::from(format!("/tmp/cutover-{}", nix::unistd::geteuid().as_raw())).join("ports")
        }
    }
}

/// Whether nothing listens on `port`, on loopback or on any address (a listener on 0.0.0.0
/// or a dual-stack `::` makes the 0.0.0.0 bind fail too).
fn bind_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// `LOW-HIGH` (inclusive), with 1024 <= LOW <= HIGH.
fn parse_range(value: &str) -> Result<RangeInclusive<u16>, PortError> {
    let bad = || PortError::BadRange {
        value: value.to_string(),
    };
    let (low, high) = value.trim().split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low < 1024 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A range of `n` ports unlikely to be used by anything else on the machine, different
    /// per test process.
    fn ports(n: u16) -> (Ports, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let base = 21000 + u16::try_from(std::process::id() % 400).unwrap() * 20;
        (
            Ports::new(base..=base + n - 1, dir.path().join("locks")),
            dir,
        )
    }

    #[test]
    fn ranges_parse_and_bad_ones_say_how_to_fix_them() {
        assert_eq!(parse_range("20000-29999"), Ok(20000..=29999));
        assert_eq!(parse_range(" 3000 - 3000 "), Ok(3000..=3000));
        for bad in ["", "20000", "a-b", "30000-20000", "80-90", "1-70000"] {
            let e = parse_range(bad).unwrap_err().to_string();
            assert!(e.contains("e.g. CUTOVER_PORT_RANGE=20000-29999"), "{e}");
        }
        let p = Ports::build(parse_range("x"), PathBuf::from("/nonexistent"));
        assert!(matches!(p.allocate(), Err(PortError::BadRange { .. })));
    }

    #[test]
    fn never_hands_out_a_port_twice_while_leased() {
        let (p, _dir) = ports(4);
        let leases: Vec<PortLease> = (0..4).map(|_| p.allocate().unwrap()).collect();
        let mut got: Vec<u16> = leases.iter().map(PortLease::port).collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(p.handed_out(), got);
        assert!(matches!(p.allocate(), Err(PortError::Exhausted { .. })));
        let freed = leases[1].port();
        drop(leases);
        assert!(p.handed_out().is_empty());
        // Released ports come back (rotation puts the freed one among the candidates).
        let again: Vec<PortLease> = (0..4).map(|_| p.allocate().unwrap()).collect();
        assert!(again.iter().any(|l| l.port() == freed));
    }

    #[test]
    fn two_agents_sharing_the_lock_dir_never_share_a_port() {
        let dir = tempfile::tempdir().unwrap();
        let base = 21000 + u16::try_from(std::process::id() % 400).unwrap() * 20;
        let locks = dir.path().join("locks");
        let a = Ports::new(base..=base + 5, locks.clone());
        let b = Ports::new(base..=base + 5, locks);
        let mut seen = BTreeSet::new();
        let mut held = Vec::new();
        for i in 0..6 {
            let lease = if i % 2 == 0 {
                a.allocate()
            } else {
                b.allocate()
            }
            .unwrap();
            assert!(
                seen.insert(lease.port()),
                "{} handed out twice",
                lease.port()
            );
            held.push(lease);
        }
        assert!(a.allocate().is_err() && b.allocate().is_err());
        // A port the other agent holds cannot be adopted; after its release it can.
        let theirs = held
            .iter()
            .position(|l| b.handed_out().contains(&l.port()))
            .unwrap();
        let port = held[theirs].port();
        assert_eq!(a.adopt(port).unwrap_err(), PortError::LockedElsewhere(port));
        held.remove(theirs);
        let adopted = a.adopt(port).unwrap();
        assert_eq!(adopted.port(), port);
        assert_eq!(a.adopt(port).unwrap_err(), PortError::Taken(port));
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        let (p, _dir) = ports(3);
        let first = p.allocate().unwrap().port();
        // Something else listens on the two other ports of the range.
        let occupied: Vec<std::net::TcpListener> = (0..3)
            .filter_map(|i| {
                let port = p.inner.range.clone().unwrap().start() + i;
                (port != first)
                    .then(|| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
                    .flatten()
            })
            .collect();
        assert_eq!(occupied.len(), 2, "test ports busy");
        for _ in 0..3 {
            let lease = p.allocate().unwrap();
            assert_eq!(lease.port(), first, "handed out a port someone listens on");
        }
    }

    #[test]
    fn the_lock_dir_of_another_user_is_refused() {
        let p = Ports::new(20000..=20001, PathBuf::from("/"));
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let e = p.allocate().unwrap_err().to_string();
        assert!(e.contains("belongs to another user"), "{e}");
    }
}
