//! The team workflow: a git branch and worktree per service, and merging what is deployed and
//! healthy back into the base branch.
//!
//! # Theory of operation
//! Every operation works on the *main* worktree's repository, wherever cutover was started: a
//! linked worktree finds it through git's common directory. A service's branch is
//! `<branch_prefix>/<service>` and its worktree is named after the service (git's own naming:
//! the basename of its path). The base a branch was made from is remembered in the repository's
//! config as `branch.<branch>.cutoverbase`, so `list` and `merge` compare with the right branch.
//!
//! Everything goes through git2 (libgit2): worktrees are added with `git_worktree_add` and
//! removed with `git_worktree_prune` (which also deletes the working directory), and merges are
//! computed in memory (`merge_commits`), so a conflict never touches the index, the work tree
//! or HEAD. Nothing here shells out to `git`.

pub mod merge;
pub mod worktree;

use std::path::{Path, PathBuf};

use git2::{Repository, StatusOptions};

use crate::error::EngineError;

/// The project directory whose `.cutover/` holds the state when `project_dir` is inside a
/// linked git worktree: the same relative path in the main worktree. None when `project_dir` is
/// not in a linked worktree (the state is its own).
pub fn state_root(project_dir: &Path) -> Option<PathBuf> {
    let repo = Repository::discover(project_dir).ok()?;
    if !repo.is_worktree() {
        return None;
    }
    let linked = canonical(repo.workdir()?);
    let rel = canonical(project_dir)
        .strip_prefix(&linked)
        .ok()?
        .to_path_buf();
    let main = Repository::open(repo.commondir()).ok()?;
    let main_root = canonical(main.workdir()?);
    Some(main_root.join(rel))
}

/// A failure of a team operation that is not a git error: what is wrong and how to fix it.
pub fn refused(message: impl Into<String>, help: impl Into<String>) -> EngineError {
    EngineError::Refused {
        message: message.into(),
        help: Some(help.into()),
    }
}

/// The main worktree's repository, seen from a project.
pub struct Team {
    repo: Repository,
    /// The main worktree's root (canonical).
    root: PathBuf,
    /// The project dir relative to the worktree root ("" at the root).
    project_rel: PathBuf,
    /// `[project] branch_prefix`.
    branch_prefix: String,
    /// `[project] name`.
    project_name: String,
}

impl Team {
    /// Opens the main worktree's repository of the project in `project_dir` (which may be in a
    /// linked worktree).
    pub fn open(
        project_dir: &Path,
        project_name: &str,
        branch_prefix: &str,
    ) -> Result<Team, EngineError> {
        let found = match Repository::discover(project_dir) {
            Ok(r) => r,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Err(EngineError::NotGit {
                    dir: project_dir.to_path_buf(),
                });
            }
            Err(e) => return Err(EngineError::git("opening the repository", e)),
        };
        let Some(workdir) = found.workdir().map(canonical) else {
            return Err(refused(
                format!("{} is in a bare repository", project_dir.display()),
                "run cutover in a checkout with a work tree",
            ));
        };
        let project_rel = canonical(project_dir)
            .strip_prefix(&workdir)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let repo = if found.is_worktree() {
            Repository::open(found.commondir())
                .map_err(|e| EngineError::git("opening the main worktree", e))?
        } else {
            found
        };
        let Some(root) = repo.workdir().map(canonical) else {
            return Err(refused(
                "the repository's main worktree is bare",
                "run cutover from a repository whose main checkout has a work tree",
            ));
        };
        Ok(Team {
            repo,
            root,
            project_rel,
            branch_prefix: branch_prefix.to_string(),
            project_name: project_name.to_string(),
        })
    }

    /// The main worktree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The project directory inside a worktree rooted at `worktree`.
    pub fn project_dir_in(&self, worktree: &Path) -> PathBuf {
        if self.project_rel.as_os_str().is_empty() {
            return worktree.to_path_buf();
        }
        worktree.join(&self.project_rel)
    }

    /// A service's branch: `<branch_prefix>/<service>`.
    pub fn branch_name(&self, service: &str) -> String {
        format!("{}/{service}", self.branch_prefix)
    }

    /// The branch checked out in the main worktree (None when detached or unborn).
    pub fn current_branch(&self) -> Option<String> {
        let head = self.repo.head().ok()?;
        head.is_branch()
            .then(|| head.shorthand().ok().map(str::to_string))
            .flatten()
    }

    /// The directory worktrees go into by default: `../<project>-worktrees` beside the
    /// repository root.
    pub fn default_parent(&self) -> PathBuf {
        let parent = self.root.parent().unwrap_or(&self.root);
        parent.join(format!("{}-worktrees", self.project_name))
    }

    /// The base recorded for `branch` by `worktree setup`.
    pub fn recorded_base(&self, branch: &str) -> Option<String> {
        let cfg = self.repo.config().ok()?;
        cfg.get_string(&format!("branch.{branch}.cutoverbase")).ok()
    }

    /// The base `branch` is compared and merged with: the recorded one, else the main
    /// worktree's branch.
    pub fn base_of(&self, branch: &str) -> Option<String> {
        self.recorded_base(branch).or_else(|| self.current_branch())
    }

    /// The commit a local branch points at.
    pub fn branch_head(&self, branch: &str) -> Option<git2::Oid> {
        self.repo
            .find_branch(branch, git2::BranchType::Local)
            .ok()?
            .get()
            .target()
    }

    /// The main worktree's uncommitted changes (tracked or untracked), leaving out cutover's
    /// `.cutover/` and linked worktrees placed inside it (`--dir` within the repository).
    pub fn main_dirty(&self) -> Result<Vec<String>, EngineError> {
        let inside: Vec<String> = self
            .repo
            .worktrees()
            .map(|names| {
                names
                    .iter()
                    .flatten()
                    .flatten()
                    .filter_map(|n| self.repo.find_worktree(n).ok())
                    .filter_map(|w| {
                        canonical(w.path())
                            .strip_prefix(&self.root)
                            .ok()
                            .map(|p| p.to_string_lossy().into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(dirty_paths(&self.repo)?
            .into_iter()
            .filter(|p| {
                let p = p.trim_end_matches('/');
                !inside.iter().any(|w| {
                    w == p || w.starts_with(&format!("{p}/")) || p.starts_with(&format!("{w}/"))
                })
            })
            .collect())
    }
}

/// Paths with uncommitted changes in `repo`'s work tree (untracked ones included, ignored ones
/// and cutover's own state directories not).
pub fn dirty_paths(repo: &Repository) -> Result<Vec<String>, EngineError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| EngineError::git("reading the work tree's status", e))?;
    Ok(statuses
        .iter()
        .filter_map(|s| s.path().ok().map(str::to_string))
        .filter(|p| !in_state_dir(p))
        .collect())
}

/// The first few paths, for messages.
pub(crate) fn shorten(paths: &[String]) -> String {
    let mut s = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 3 {
        s.push_str(&format!(" and {} more", paths.len() - 3));
    }
    s
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether a path git reports (relative, directories ending in `/`) is a project's state
/// directory or in one.
fn in_state_dir(path: &str) -> bool {
    format!("/{path}").contains(&format!("/{}/", cutover_store::StateDir::NAME))
}
