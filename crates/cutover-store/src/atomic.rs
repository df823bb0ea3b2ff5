//! Replacing a file in one step: [`write_atomic`] (and [`create_atomic`] for a file that must
//! never be overwritten), the one way cutover writes a state or record file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a write must survive a crash (power loss, kernel panic) once it returned.
///
/// The policy:
/// - [`Durability::NoSync`] for small, hot files rewritten on every event, whose newest version
///   is worth less than the time an fsync takes (34 ms on the disks we measured, paid on each
///   event of a run): `.cutover/status.json`, reports a command writes for a reader that runs
///   after it (the JUnit file). A crash may lose the newest version; a reader never sees a torn
///   one.
/// - [`Durability::Fsync`] for records that must survive a crash because something is decided
///   from them afterwards: the agent's desired state (`agent/desired.json`, which releases to
///   bring back), `agent.json` (where the agent listens), the secret key file (losing it loses
///   every secret), a generated workflow the user commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file's data before the rename and the directory after it.
    Fsync,
    /// No fsync: atomic for readers, not durable across a crash.
    NoSync,
}

/// Replaces `path` with `bytes` atomically: a reader sees the old content or the new, never a
/// mix or a partial file. The directory must exist (creating it, and with which mode, is the
/// caller's choice).
///
/// How: a temp file with a name of its own in the same directory (so the rename never crosses
/// file systems), the bytes written, with [`Durability::Fsync`] the file synced, the temp file
/// renamed over `path`, then with [`Durability::Fsync`] the directory synced so the rename
/// itself is on disk. A failure removes the temp file. See [`Durability`] for which to choose.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let (tmp, file) = temp_file(path, 0o666)?;
    let publish = || {
        fill(file, bytes, durability)?;
        fs::rename(&tmp, path)
    };
    finish(path, &tmp, publish(), durability)
}

/// Like [`write_atomic`], but `path` is created with permission bits `mode` (before any byte is
/// written) and never replaced: when it exists already the result is an
/// [`io::ErrorKind::AlreadyExists`] error and the file is left as it was (of two processes
/// creating it at once, exactly one succeeds).
pub fn create_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let (tmp, file) = temp_file(path, mode)?;
    let publish = || {
        fill(file, bytes, durability)?;
        // A hard link, unlike a rename, fails rather than replace an existing file.
        fs::hard_link(&tmp, path)?;
        fs::remove_file(&tmp)
    };
    finish(path, &tmp, publish(), durability)
}

/// A new, empty temp file beside `path`, created with `mode` (the umask applies), and its name.
fn temp_file(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            // Left by an earlier process that had the same pid: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn fill(mut file: File, bytes: &[u8], durability: Durability) -> io::Result<()> {
    file.write_all(bytes)?;
    if durability == Durability::Fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// After publishing: the temp file removed on failure, the directory synced on success.
fn finish(
    path: &Path,
    tmp: &Path,
    published: io::Result<()>,
    durability: Durability,
) -> io::Result<()> {
    if let Err(e) = published {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    if durability == Durability::Fsync {
        File::open(parent(path))?.sync_all()?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        write_atomic(&path, b"one", Durability::NoSync).unwrap();
        write_atomic(&path, b"two", Durability::Fsync).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/x.xml");
        let e = write_atomic(&path, b"x", Durability::NoSync).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn create_never_replaces_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_atomic(&path, b"first", 0o600, Durability::Fsync).unwrap();
        let again = create_atomic(&path, b"second", 0o600, Durability::Fsync);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails.
        let path = dir.path().join("taken");
        fs::create_dir_all(path.join("inside")).unwrap();
        assert!(write_atomic(&path, b"x", Durability::NoSync).is_err());
        assert!(leftovers(dir.path()).is_empty());
    }
}
