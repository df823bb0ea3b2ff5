//! `cutover merge`: a non-fast-forward merge of a service branch into its base, only for what
//! is deployed and healthy.
//!
//! The merge is computed in memory first (`merge_commits`); a conflict returns before anything
//! is written, so the repository stays exactly as it was. A clean result is checked out into
//! the (clean) main worktree and committed with both parents.

use git2::build::CheckoutBuilder;
use serde::Serialize;

use super::{Team, refused};
use crate::error::EngineError;

/// What a release and the agent say about a service, for the merge gate.
#[derive(Debug, Clone)]
pub struct Deployed<'a> {
    /// The ACTIVE release's id.
    pub release: &'a str,
    /// Its git sha.
    pub sha: Option<&'a str>,
    /// Built from a dirty tree.
    pub dirty: bool,
    /// Its branch.
    pub branch: Option<&'a str>,
}

/// Why a service branch may not be merged, or None when it may. `live` is the agent's view
/// of the service: the release it serves and its health (None: the agent is not running).
pub fn gate(
    env: &str,
    branch: &str,
    branch_head: &str,
    active: Option<&Deployed<'_>>,
    live: Option<(Option<&str>, &str)>,
) -> Option<String> {
    let Some(active) = active else {
        return Some(format!(
            "no ACTIVE release in {env}: deploy it from its worktree first"
        ));
    };
    if active.sha != Some(branch_head) || active.dirty {
        let built = match (active.sha, active.dirty) {
            (Some(sha), false) => format!("commit {}", &sha[..sha.len().min(7)]),
            (Some(sha), true) => format!(
                "commit {} with uncommitted changes",
                &sha[..sha.len().min(7)]
            ),
            (None, _) => "outside git".to_string(),
        };
        let from = active
            .branch
            .map(|b| format!(" on {b}"))
            .unwrap_or_default();
        return Some(format!(
            "its ACTIVE release {} in {env} was built from {built}{from}, not from {branch}'s head {}: deploy the branch head first",
            active.release,
            &branch_head[..branch_head.len().min(7)]
        ));
    }
    let Some((serving, health)) = live else {
        return Some(format!(
            "the agent is not running, so the health of {} is unknown: start it (`cutover status` does) and try again",
            active.release
        ));
    };
    if serving != Some(active.release) {
        return Some(format!(
            "the agent serves {} instead of the ACTIVE release {}",
            serving.unwrap_or("nothing"),
            active.release
        ));
    }
    if health != "healthy" {
        return Some(format!("release {} is {health} right now", active.release));
    }
    None
}

/// The end of one merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MergeResult {
    /// Merged: the merge commit.
    Merged {
        /// Its sha.
        commit: String,
    },
    /// The branch is already in the base.
    UpToDate,
    /// The merge conflicts; nothing was changed.
    Conflict {
        /// The conflicting paths.
        paths: Vec<String>,
    },
}

impl Team {
    /// Refuses unless the main worktree is on `base` and clean.
    pub fn ready_to_merge_into(&self, base: &str) -> Result<(), EngineError> {
        match self.current_branch() {
            Some(b) if b == base => {}
            other => {
                return Err(refused(
                    format!(
                        "the main worktree {} is on {}, not on the base branch {base}",
                        self.root.display(),
                        other.unwrap_or_else(|| "a detached HEAD".into())
                    ),
                    format!(
                        "switch it to {base} first (`git -C {} switch {base}`)",
                        self.root.display()
                    ),
                ));
            }
        }
        let dirty = self.main_dirty()?;
        if !dirty.is_empty() {
            return Err(refused(
                format!(
                    "the main worktree {} has uncommitted changes ({})",
                    self.root.display(),
                    super::shorten(&dirty)
                ),
                "commit or stash them first: merge only runs on a clean base",
            ));
        }
        Ok(())
    }

    /// Merges `branch` into the main worktree's branch with a merge commit carrying `message`.
    /// The main worktree must be clean and on the base ([`Team::ready_to_merge_into`]).
    pub fn merge_branch(&self, branch: &str, message: &str) -> Result<MergeResult, EngineError> {
        let repo = &self.repo;
        let ours = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| EngineError::git("reading HEAD", e))?;
        let theirs_oid = self.branch_head(branch).ok_or_else(|| {
            refused(
                format!("branch {branch} does not exist"),
                "`cutover worktree setup` creates it",
            )
        })?;
        if theirs_oid == ours.id()
            || repo
                .graph_descendant_of(ours.id(), theirs_oid)
                .unwrap_or(false)
        {
            return Ok(MergeResult::UpToDate);
        }
        let theirs = repo
            .find_commit(theirs_oid)
            .map_err(|e| EngineError::git("reading the branch head", e))?;
        let mut index = repo
            .merge_commits(&ours, &theirs, None)
            .map_err(|e| EngineError::git("merging", e))?;
        if index.has_conflicts() {
            let mut paths: Vec<String> = index
                .conflicts()
                .map_err(|e| EngineError::git("reading the conflicts", e))?
                .flatten()
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .collect();
            paths.dedup();
            return Ok(MergeResult::Conflict { paths });
        }
        let tree_oid = index
            .write_tree_to(repo)
            .map_err(|e| EngineError::git("writing the merged tree", e))?;
        let tree = repo
            .find_tree(tree_oid)
            .map_err(|e| EngineError::git("reading the merged tree", e))?;
        let sig = repo
            .signature()
            .or_else(|_| git2::Signature::now("cutover", "cutover@localhost"))
            .map_err(|e| EngineError::git("making a signature", e))?;
        repo.checkout_tree(tree.as_object(), Some(CheckoutBuilder::new().safe()))
            .map_err(|e| EngineError::git("checking out the merge", e))?;
        match repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&ours, &theirs]) {
            Ok(oid) => Ok(MergeResult::Merged {
                commit: oid.to_string(),
            }),
            Err(e) => {
                // Put the work tree and index back as they were.
                let _ = repo.reset(ours.as_object(), git2::ResetType::Hard, None);
                Err(EngineError::git("committing the merge", e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    fn deployed(sha: Option<&str>, dirty: bool) -> Deployed<'_> {
        Deployed {
            release: "r1",
            sha,
            dirty,
            branch: Some("service/api"),
        }
    }

    #[test]
    fn healthy_release_of_the_head_passes() {
        let d = deployed(Some(HEAD), false);
        assert_eq!(
            gate(
                "dev",
                "service/api",
                HEAD,
                Some(&d),
                Some((Some("r1"), "healthy"))
            ),
            None
        );
    }

    #[test]
    fn each_reason_is_named() {
        let old = deployed(Some("fffffff"), false);
        let dirty = deployed(Some(HEAD), true);
        let ok = deployed(Some(HEAD), false);
        let reason = |a: Option<&Deployed<'_>>, live| {
            gate("dev", "service/api", HEAD, a, live).unwrap_or_default()
        };
        assert!(reason(None, None).contains("no ACTIVE release"));
        assert!(
            reason(Some(&old), Some((Some("r1"), "healthy")))
                .contains("not from service/api's head")
        );
        assert!(reason(Some(&dirty), Some((Some("r1"), "healthy"))).contains("uncommitted"));
        assert!(reason(Some(&ok), None).contains("agent is not running"));
        assert!(reason(Some(&ok), Some((Some("r1"), "unhealthy"))).contains("unhealthy"));
        assert!(reason(Some(&ok), Some((Some("r0"), "healthy"))).contains("serves r0"));
    }
}
