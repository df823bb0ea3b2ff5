//! Release snapshots: the service's `path` as it is in the working tree, `.gitignore` honoured,
//! copied into `.cutover/releases/<service>/<release>/`.
//!
//! The copy goes to `<release>.partial` first and is renamed into place, so an interrupted copy
//! never looks like a release.

use std::fs;
use std::io;
use std::path::Path;

use ignore::WalkBuilder;

/// Copies `src` into `dest` (which must not exist), skipping what git ignores, `.git` and
/// `.cutover`. Returns the number of files copied.
pub fn copy_tree(src: &Path, dest: &Path) -> io::Result<usize> {
    if !src.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", src.display()),
        ));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial).to_path_buf();
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    let walker = WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .parents(true)
        .ignore(false)
        .follow_links(false)
        .filter_entry(|e| {
            let name = e.file_name();
            name != ".git" && name != cutover_store::StateDir::NAME
        })
        .build();
    let mut files = 0;
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel = match entry.path().strip_prefix(src) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            _ => continue,
        };
        let target = partial.join(rel);
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            fs::create_dir_all(&target)?;
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(link, &target)?;
        } else if ft.is_file() {
            fs::copy(entry.path(), &target)?;
            files += 1;
        }
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(&partial, dest)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_tree_and_honours_gitignore() {
        let root = tempfile::tempdir().expect("tempdir");
        let repo = root.path();
        std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(repo)
            .status()
            .expect("git init");
        fs::write(repo.join(".gitignore"), "*.log\nbuild/\n").expect("write");
        let svc = repo.join("svc");
        fs::create_dir_all(svc.join("src")).expect("mkdir");
        fs::create_dir_all(svc.join("build")).expect("mkdir");
        fs::write(svc.join("app.py"), "print(1)").expect("write");
        fs::write(svc.join(".env.example"), "A=1").expect("write");
        fs::write(svc.join("src/lib.py"), "x = 1").expect("write");
        fs::write(svc.join("debug.log"), "noise").expect("write");
        fs::write(svc.join("build/out"), "old").expect("write");
        let dest = repo.join(".cutover/releases/svc/r1");
        let n = copy_tree(&svc, &dest).expect("copy");
        assert_eq!(n, 3);
        assert!(dest.join("app.py").is_file());
        assert!(dest.join(".env.example").is_file());
        assert!(dest.join("src/lib.py").is_file());
        assert!(!dest.join("debug.log").exists());
        assert!(!dest.join("build").exists());
        assert!(!repo.join(".cutover/releases/svc/r1.partial").exists());
    }
}

/// Removes the oldest snapshots in `service_dir` (`.cutover/releases/<service>/`) so that at
/// most `keep` remain, never removing one named in `protected` (ACTIVE or serving releases).
/// `newest_first` is the store's creation order of the service's releases (ids made in the same
/// second do not sort by age); a snapshot the store does not know counts as oldest. Returns the
/// ids removed.
pub fn prune(
    service_dir: &Path,
    keep: usize,
    protected: &[String],
    newest_first: &[String],
) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = match fs::read_dir(service_dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.ends_with(".partial"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let rank = |id: &String| {
        newest_first
            .iter()
            .position(|n| n == id)
            .unwrap_or(usize::MAX)
    };
    ids.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| b.cmp(a)));
    let mut removed = Vec::new();
    for id in ids.into_iter().skip(keep) {
        if protected.contains(&id) {
            continue;
        }
        fs::remove_dir_all(service_dir.join(&id))?;
        removed.push(id);
    }
    Ok(removed)
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_the_protected() {
        let root = tempfile::tempdir().expect("tempdir");
        let ids = [
            "20261123-100000-aaaaaaa",
            "20261123-100001-bbbbbbb",
            "20261123-100002-ccccccc",
            "20261123-100002-ccccccc-2",
            "20261123-100003-ddddddd",
        ];
        for id in ids {
            fs::create_dir_all(root.path().join(id)).expect("mkdir");
        }
        // The store says ccccccc-2 is newer than ddddddd, whatever the names say; the ids it
        // does not know (aaaaaaa, bbbbbbb) count as oldest.
        let order: Vec<String> = [
            "20261123-100002-ccccccc-2",
            "20261123-100003-ddddddd",
            "20261123-100002-ccccccc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let removed = prune(
            root.path(),
            2,
            &["20261123-100000-aaaaaaa".to_string()],
            &order,
        )
        .expect("prune");
        assert_eq!(
            removed,
            ["20261123-100002-ccccccc", "20261123-100001-bbbbbbb"]
        );
        let mut left: Vec<String> = fs::read_dir(root.path())
            .expect("read")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20261123-100000-aaaaaaa",
                "20261123-100002-ccccccc-2",
                "20261123-100003-ddddddd"
            ]
        );
    }
}
