//! Reading `/proc`: the processes of this host, their environment and command line. Shared by
//! everything that finds processes by what they carry (an agent's instances after a restart, a
//! dead run's builds, the holder of a socket).

use std::path::{Path, PathBuf};

/// Every process: its pid and its `/proc/<pid>` directory (empty when `/proc` is unreadable).
pub fn processes() -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, e.path()))
        })
        .collect()
}

/// The `NAME=value` entries of a process's initial environment (None when unreadable: another
/// user's process, or gone).
pub fn environ(proc: &Path) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(proc.join("environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// The command line of a process, for messages (`python3 app.py`); empty when unreadable.
pub fn command_line(proc: &Path) -> String {
    std::fs::read(proc.join("cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
