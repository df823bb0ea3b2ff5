//! Small file helpers.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `body` to `path` through a temp file in the same directory and a rename, so a
/// reader never sees a half-written file. Not fsynced: a crash may lose the newest version,
/// never leave a torn one (for files rewritten often, like `status.json`).
pub fn replace(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(body)?;
    }
    fs::rename(&tmp, path)
}
