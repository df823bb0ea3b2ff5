//! `worktree setup | list | remove`: a branch and a linked worktree per service.

use std::path::{Path, PathBuf};

use git2::{BranchType, Repository, WorktreeAddOptions, WorktreePruneOptions};
use serde::Serialize;

use super::{Team, canonical, dirty_paths, refused, shorten};
use crate::error::EngineError;

/// What `setup` did for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupResult {
    /// Made the branch and the worktree.
    Created,
    /// The branch existed (based on the base); made its worktree.
    CreatedFromExistingBranch,
    /// Both were already there.
    Exists,
}

impl SetupResult {
    /// The word shown to people.
    pub fn as_str(&self) -> &'static str {
        match self {
            SetupResult::Created => "created",
            SetupResult::CreatedFromExistingBranch => "created (existing branch)",
            SetupResult::Exists => "exists",
        }
    }
}

/// One service's worktree after `setup`.
#[derive(Debug, Clone, Serialize)]
pub struct SetupOutcome {
    /// The service.
    pub service: String,
    /// Its branch.
    pub branch: String,
    /// The worktree's root.
    pub path: PathBuf,
    /// The base branch.
    pub base: String,
    /// What happened.
    pub result: SetupResult,
}

/// A git worktree linked to the main one.
#[derive(Debug, Clone)]
struct Linked {
    name: String,
    path: PathBuf,
    branch: Option<String>,
    /// The path no longer exists (git would prune it).
    gone: bool,
}

/// One service's branch and worktree as `list` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct WorktreeInfo {
    /// The service.
    pub service: String,
    /// Its branch.
    pub branch: String,
    /// Whether the branch exists.
    pub branch_exists: bool,
    /// The worktree's root, when one has the branch checked out.
    pub path: Option<PathBuf>,
    /// The base branch.
    pub base: Option<String>,
    /// Commits on the branch not in the base.
    pub ahead: Option<usize>,
    /// Commits in the base not on the branch.
    pub behind: Option<usize>,
    /// Uncommitted changes in the worktree.
    pub dirty: Option<bool>,
    /// The branch's head commit.
    pub head: Option<String>,
}

/// What `remove` did for one service.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveOutcome {
    /// The service.
    pub service: String,
    /// `removed`, `absent` or `refused`.
    pub result: String,
    /// What happened to the branch, or why the removal was refused, in plain words.
    pub note: Option<String>,
}

impl Team {
    fn linked(&self) -> Result<Vec<Linked>, EngineError> {
        let names = self
            .repo
            .worktrees()
            .map_err(|e| EngineError::git("listing worktrees", e))?;
        let mut out = Vec::new();
        for name in names.iter().flatten().flatten() {
            let Ok(wt) = self.repo.find_worktree(name) else {
                continue;
            };
            let path = wt.path().to_path_buf();
            let gone = !path.exists();
            let branch = if gone {
                None
            } else {
                Repository::open_from_worktree(&wt).ok().and_then(|r| {
                    let head = r.head().ok()?;
                    head.is_branch()
                        .then(|| head.shorthand().ok().map(str::to_string))
                        .flatten()
                })
            };
            out.push(Linked {
                name: name.to_string(),
                path: canonical(&path),
                branch,
                gone,
            });
        }
        Ok(out)
    }

    /// Creates `service`'s branch from `base` and its worktree at `parent/<service>`;
    /// reports "exists" when both are already there.
    pub fn setup(
        &self,
        service: &str,
        parent: &Path,
        base: &str,
    ) -> Result<SetupOutcome, EngineError> {
        let branch = self.branch_name(service);
        let path = parent.join(service);
        let linked = self.linked()?;
        let outcome = |result, path: PathBuf| SetupOutcome {
            service: service.to_string(),
            branch: branch.clone(),
            path,
            base: base.to_string(),
            result,
        };
        // The branch already checked out somewhere.
        if let Some(l) = linked.iter().find(|l| l.branch.as_deref() == Some(&branch)) {
            if l.path == canonical(&path) {
                return Ok(outcome(SetupResult::Exists, l.path.clone()));
            }
            return Err(refused(
                format!(
                    "branch {branch} is already checked out in the worktree {}",
                    l.path.display()
                ),
                format!(
                    "use that worktree, or remove it first (`cutover worktree remove {service}`)"
                ),
            ));
        }
        if self.current_branch().as_deref() == Some(branch.as_str()) {
            return Err(refused(
                format!("branch {branch} is checked out in the main worktree"),
                format!("switch the main worktree back to {base} first (`git switch {base}`)"),
            ));
        }
        // A stale registration (its directory was deleted by hand) is pruned; a live one of
        // this name on another branch is in the way.
        if let Some(l) = linked.iter().find(|l| l.name == service) {
            if l.gone {
                if let Ok(wt) = self.repo.find_worktree(&l.name) {
                    wt.prune(Some(WorktreePruneOptions::new().valid(true)))
                        .map_err(|e| EngineError::git("pruning a stale worktree", e))?;
                }
            } else {
                return Err(refused(
                    format!(
                        "a worktree named {service} already exists at {} on {}",
                        l.path.display(),
                        l.branch.as_deref().unwrap_or("a detached HEAD")
                    ),
                    format!(
                        "remove it (`git worktree remove {}`) first",
                        l.path.display()
                    ),
                ));
            }
        }
        if path.exists() && std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_some()) {
            return Err(refused(
                format!(
                    "{} already exists and is not {branch}'s worktree",
                    path.display()
                ),
                "move it away, or pass --dir to put the worktrees elsewhere".to_string(),
            ));
        }
        let base_oid = self.branch_head(base).ok_or_else(|| {
            refused(
                format!("base branch {base} does not exist"),
                "pass --base with an existing local branch (`git branch` lists them)",
            )
        })?;
        if self.current_branch().as_deref() == Some(base) {
            let dirty = self.main_dirty()?;
            if !dirty.is_empty() {
                return Err(refused(
                    format!(
                        "the base branch {base} has uncommitted changes in {} ({})",
                        self.root.display(),
                        shorten(&dirty)
                    ),
                    "commit or stash them first, so the service branches start from what you see",
                ));
            }
        }
        let mut result = SetupResult::Created;
        let reference = match self.repo.find_branch(&branch, BranchType::Local) {
            Ok(existing) => {
                // Ours when cutover made it from this base, or when it is the base's head
                // or built on it; anything else is someone else's branch.
                let head = existing.get().target();
                let made_here = self.recorded_base(&branch).as_deref() == Some(base);
                let based = made_here
                    || head.is_some_and(|h| {
                        h == base_oid || self.repo.graph_descendant_of(h, base_oid).unwrap_or(false)
                    });
                if !based {
                    return Err(refused(
                        format!(
                            "branch {branch} already exists and points at {}, which is neither {base}'s head nor built on it",
                            head.map(|h| short(&h.to_string())).unwrap_or_default()
                        ),
                        format!(
                            "delete or rename it (`git branch -m {branch} {branch}-old`), or pass --base with the branch it came from"
                        ),
                    ));
                }
                result = SetupResult::CreatedFromExistingBranch;
                existing.into_reference()
            }
            Err(_) => {
                let commit = self
                    .repo
                    .find_commit(base_oid)
                    .map_err(|e| EngineError::git("reading the base commit", e))?;
                self.repo
                    .branch(&branch, &commit, false)
                    .map_err(|e| EngineError::git("creating the branch", e))?
                    .into_reference()
            }
        };
        if let Ok(mut cfg) = self.repo.config() {
            let _ = cfg.set_str(&format!("branch.{branch}.cutoverbase"), base);
        }
        std::fs::create_dir_all(parent).map_err(|e| {
            refused(
                format!("cannot create {}: {e}", parent.display()),
                "pass --dir with a directory you can write to",
            )
        })?;
        if path.exists() {
            // An empty directory: libgit2 wants to create it itself.
            let _ = std::fs::remove_dir(&path);
        }
        let mut opts = WorktreeAddOptions::new();
        opts.reference(Some(&reference));
        self.repo
            .worktree(service, &path, Some(&opts))
            .map_err(|e| EngineError::git("adding the worktree", e))?;
        Ok(outcome(result, canonical(&path)))
    }

    /// Every service's branch and worktree (services with neither are left out).
    pub fn list(&self, services: &[String]) -> Result<Vec<WorktreeInfo>, EngineError> {
        let linked = self.linked()?;
        let mut out = Vec::new();
        for service in services {
            let branch = self.branch_name(service);
            let head = self.branch_head(&branch);
            let wt = linked.iter().find(|l| l.branch.as_deref() == Some(&branch));
            if head.is_none() && wt.is_none() {
                continue;
            }
            let base = self.base_of(&branch);
            let (ahead, behind) = match (head, base.as_deref().and_then(|b| self.branch_head(b))) {
                (Some(h), Some(b)) => match self.repo.graph_ahead_behind(h, b) {
                    Ok((a, b)) => (Some(a), Some(b)),
                    Err(_) => (None, None),
                },
                _ => (None, None),
            };
            let dirty = match wt {
                Some(l) => Repository::open(&l.path)
                    .ok()
                    .and_then(|r| dirty_paths(&r).ok())
                    .map(|d| !d.is_empty()),
                None => None,
            };
            out.push(WorktreeInfo {
                service: service.clone(),
                branch,
                branch_exists: head.is_some(),
                path: wt.map(|l| l.path.clone()),
                base,
                ahead,
                behind,
                dirty,
                head: head.map(|h| h.to_string()),
            });
        }
        Ok(out)
    }

    /// Removes `service`'s worktree: refused when it has uncommitted changes unless `force`.
    /// With `delete_branch`, its branch goes too when it is merged into its base.
    pub fn remove(
        &self,
        service: &str,
        force: bool,
        delete_branch: bool,
    ) -> Result<RemoveOutcome, EngineError> {
        let branch = self.branch_name(service);
        let linked = self.linked()?;
        let wt = linked
            .iter()
            .find(|l| l.branch.as_deref() == Some(&branch) || (l.gone && l.name == service));
        let mut result = "absent".to_string();
        if let Some(l) = wt {
            if !l.gone && !force {
                let dirty = Repository::open(&l.path)
                    .map_err(|e| EngineError::git("opening the worktree", e))
                    .and_then(|r| dirty_paths(&r))?;
                if !dirty.is_empty() {
                    return Ok(RemoveOutcome {
                        service: service.to_string(),
                        result: "refused".into(),
                        note: Some(format!(
                            "{} has uncommitted changes ({}); commit them, or pass --force to throw them away",
                            l.path.display(),
                            shorten(&dirty)
                        )),
                    });
                }
            }
            let found = self
                .repo
                .find_worktree(&l.name)
                .map_err(|e| EngineError::git("finding the worktree", e))?;
            found
                .prune(Some(
                    WorktreePruneOptions::new()
                        .valid(true)
                        .locked(force)
                        .working_tree(true),
                ))
                .map_err(|e| EngineError::git("removing the worktree", e))?;
            result = "removed".into();
        }
        let mut note = None;
        if delete_branch {
            note = Some(self.delete_if_merged(&branch)?);
        }
        Ok(RemoveOutcome {
            service: service.to_string(),
            result,
            note,
        })
    }

    /// Deletes `branch` when its head is in its base; says what it did either way.
    pub fn delete_if_merged(&self, branch: &str) -> Result<String, EngineError> {
        let Ok(mut b) = self.repo.find_branch(branch, BranchType::Local) else {
            return Ok(format!("branch {branch} does not exist"));
        };
        let Some(base) = self.base_of(branch) else {
            return Ok(format!("kept branch {branch}: its base is unknown"));
        };
        let (Some(head), Some(base_head)) = (b.get().target(), self.branch_head(&base)) else {
            return Ok(format!("kept branch {branch}: {base} has no commits"));
        };
        let merged = head == base_head
            || self
                .repo
                .graph_descendant_of(base_head, head)
                .unwrap_or(false);
        if !merged {
            let ahead = self
                .repo
                .graph_ahead_behind(head, base_head)
                .map_or(0, |(a, _)| a);
            return Ok(format!(
                "kept branch {branch}: not merged into {base} ({ahead} commit(s) ahead); \
                 `cutover merge` it, or delete it with `git branch -D {branch}`"
            ));
        }
        b.delete()
            .map_err(|e| EngineError::git("deleting the branch", e))?;
        if let Ok(mut cfg) = self.repo.config() {
            let _ = cfg.remove(&format!("branch.{branch}.cutoverbase"));
        }
        Ok(format!("deleted branch {branch} (merged into {base})"))
    }
}

fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}
