//! Changed paths from git, gathered once per baseline and matched in memory.
//!
//! One `diff_tree_to_workdir_with_index` per distinct baseline commit (untracked files
//! included, ignored files excluded) gives every changed path of the project; services are then
//! matched against that set by path prefix and `watch` globs, never by running git per file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use git2::{DiffOptions, Oid, Repository};

use crate::error::EngineError;

/// A git repository holding the project.
pub struct GitRepo {
    repo: Repository,
    /// The project dir relative to the work tree root, with `/` separators ("" at the root).
    prefix: String,
}

/// What HEAD is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    /// Full sha, None when the repo has no commits.
    pub sha: Option<String>,
    /// Branch name, None when detached or unborn.
    pub branch: Option<String>,
    /// Commit time.
    pub commit_at: Option<DateTime<Utc>>,
}

impl GitRepo {
    /// The repository holding `project_dir`, or None when it is not inside one.
    pub fn discover(project_dir: &Path) -> Result<Option<GitRepo>, EngineError> {
        let repo = match Repository::discover(project_dir) {
            Ok(r) => r,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(EngineError::git("opening the repository", e)),
        };
        let Some(workdir) = repo.workdir() else {
            return Ok(None);
        };
        let workdir = canonical(workdir);
        let project = canonical(project_dir);
        let prefix = project
            .strip_prefix(&workdir)
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        Ok(Some(GitRepo { repo, prefix }))
    }

    /// The work tree root.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// HEAD's sha, branch and commit time.
    pub fn head(&self) -> Head {
        let Ok(head) = self.repo.head() else {
            return Head::default();
        };
        let branch = head
            .is_branch()
            .then(|| head.shorthand().ok().map(str::to_string))
            .flatten();
        match head.peel_to_commit() {
            Ok(commit) => Head {
                sha: Some(commit.id().to_string()),
                branch,
                commit_at: Utc.timestamp_opt(commit.time().seconds(), 0).single(),
            },
            Err(_) => Head {
                branch,
                ..Head::default()
            },
        }
    }

    /// The committer time of the commit `sha`, None when the repository does not have it
    /// (for lead-time metrics).
    pub fn commit_time(&self, sha: &str) -> Option<DateTime<Utc>> {
        let oid = Oid::from_str(sha).ok()?;
        let commit = self.repo.find_commit(oid).ok()?;
        Utc.timestamp_opt(commit.time().seconds(), 0).single()
    }

    /// The commit `rev` names (`main`, `HEAD~3`, a sha...).
    pub fn resolve(&self, rev: &str) -> Result<Oid, EngineError> {
        let obj = self
            .repo
            .revparse_single(rev)
            .map_err(|e| EngineError::Revision {
                rev: rev.to_string(),
                why: if self.repo.head().is_err() {
                    "the repository has no commits yet".to_string()
                } else {
                    e.message().to_string()
                },
            })?;
        obj.peel_to_commit()
            .map(|c| c.id())
            .map_err(|e| EngineError::Revision {
                rev: rev.to_string(),
                why: e.message().to_string(),
            })
    }

    /// Whether `sha` names a commit in this repository.
    pub fn has_commit(&self, sha: &str) -> bool {
        Oid::from_str(sha)
            .ok()
            .and_then(|oid| self.repo.find_commit(oid).ok())
            .is_some()
    }

    /// Paths (relative to the project dir, `/`-separated) that differ between `base` (None:
    /// the empty tree) and the working tree, untracked files included. Paths outside the
    /// project and under its `.cutover/` are left out.
    pub fn changed_since(&self, base: Option<Oid>) -> Result<BTreeSet<String>, EngineError> {
        let tree = match base {
            Some(oid) => Some(
                self.repo
                    .find_commit(oid)
                    .and_then(|c| c.tree())
                    .map_err(|e| EngineError::git("reading the baseline commit", e))?,
            ),
            None => None,
        };
        let mut opts = DiffOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_typechange(true)
            .ignore_submodules(true);
        if !self.prefix.is_empty() {
            opts.pathspec(&self.prefix);
        }
        let diff = self
            .repo
            .diff_tree_to_workdir_with_index(tree.as_ref(), Some(&mut opts))
            .map_err(|e| EngineError::git("comparing with the working tree", e))?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path().and_then(|p| p.to_str())
                    && let Some(rel) = self.project_relative(p)
                    && !is_state_dir(rel)
                {
                    paths.insert(rel.to_string());
                }
            }
        }
        Ok(paths)
    }

    /// The HEAD commit id, if any.
    pub fn head_oid(&self) -> Option<Oid> {
        self.repo.head().ok().and_then(|h| h.target())
    }

    fn project_relative<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(path);
        }
        path.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `path` (project-relative) lies under the service's `dir` (project-relative, "" or
/// "." meaning the whole project).
pub fn under(dir: &str, path: &str) -> bool {
    let dir = dir.trim_start_matches("./").trim_end_matches('/');
    dir.is_empty()
        || dir == "."
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Whether `rel` (a project-relative path) is the state directory or in it.
fn is_state_dir(rel: &str) -> bool {
    rel.strip_prefix(cutover_store::StateDir::NAME)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn prefix_matching_respects_component_boundaries() {
        assert!(under("skills/a", "skills/a/app.py"));
        assert!(under("skills/a/", "skills/a/app.py"));
        assert!(under("./skills/a", "skills/a"));
        assert!(!under("skills/a", "skills/ab/app.py"));
        assert!(under(".", "anything"));
        assert!(under("", "x/y"));
    }
}
