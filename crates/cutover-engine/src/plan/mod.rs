//! The plan: which services a run touches, why, and in what dependency layer.
//!
//! A service is affected when files under its `path` or `watch` globs changed between the sha
//! of its ACTIVE release in the environment (or `--since REV`) and the working tree; with no
//! ACTIVE release, one built from a dirty tree, or one built from other configuration, it is
//! affected too. `--all` and naming services force them.

pub mod changes;
pub mod dag;
pub mod timing;

use std::collections::{BTreeSet, HashMap};

use cutover_config::{Project, ResolvedEnvironment, ResolvedService};
use cutover_store::ReleaseStore;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::error::EngineError;
pub use changes::{GitRepo, Head};

/// How many changed paths a reason sentence names.
const REASON_PATHS: usize = 3;

/// What the user asked the plan for.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--all`: every service, changed or not.
    pub all: bool,
    /// `--since REV`: compare with this revision instead of each ACTIVE release.
    pub since: Option<String>,
    /// Services named on the command line (forced; the others are skipped).
    pub named: Vec<String>,
    /// Services whose ACTIVE release does not run (the agent could not bring it back), with
    /// why: they count as changed.
    pub not_running: std::collections::BTreeMap<String, String>,
}

/// The plan of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Environment.
    pub env: String,
    /// Every service, in dependency order (layer, then declaration order).
    pub services: Vec<PlannedService>,
    /// HEAD when planned.
    #[serde(skip)]
    pub head: Head,
}

impl Plan {
    /// The affected services.
    pub fn affected(&self) -> impl Iterator<Item = &PlannedService> {
        self.services.iter().filter(|s| s.affected)
    }

    /// The planned service named `name`.
    pub fn service(&self, name: &str) -> Option<&PlannedService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// One service in a [`Plan`].
#[derive(Debug, Clone, Serialize)]
pub struct PlannedService {
    /// Name.
    pub name: String,
    /// Whether the run works on it.
    pub affected: bool,
    /// Why, as a sentence.
    pub reason: String,
    /// Changed paths under its scope (project-relative), when detection ran.
    pub changed_paths: Vec<String>,
    /// Dependency layer (0: no dependencies).
    pub layer: usize,
    /// Deploy strategy.
    pub strategy: &'static str,
    /// The least time its strategy takes once instances start, in seconds (see
    /// [`timing::min_duration`]: canary pauses and judgements, readiness probes).
    pub min_duration_seconds: f64,
    /// Canary steps that wait for `cutover promote` (not counted in `min_duration_seconds`).
    pub manual_pauses: u32,
    /// Its dependencies.
    pub depends_on: Vec<String>,
    /// Whether its scope has uncommitted changes.
    pub dirty: bool,
    /// Hash of its resolved configuration.
    #[serde(skip)]
    pub config_hash: String,
}

/// Builds the plan for `env`.
pub fn plan(
    project: &Project,
    env: &ResolvedEnvironment,
    store: Option<&dyn ReleaseStore>,
    opts: &PlanOptions,
) -> Result<Plan, EngineError> {
    for name in &opts.named {
        if env.service(name).is_none() {
            return Err(EngineError::UnknownService {
                name: name.clone(),
                known: env.services.iter().map(|s| s.name.clone()).collect(),
            });
        }
    }
    let repo = GitRepo::discover(&project.dir)?;
    let head = repo.as_ref().map(GitRepo::head).unwrap_or_default();
    let forced_all = opts.all;
    let named: BTreeSet<&str> = opts.named.iter().map(String::as_str).collect();
    let detection_needed = !forced_all && named.is_empty();
    if detection_needed && repo.is_none() {
        return Err(EngineError::NotGit {
            dir: project.dir.clone(),
        });
    }

    // Dirty flags: changes against HEAD (or everything, with no commits), once.
    let dirty_paths = match &repo {
        Some(r) => r.changed_since(r.head_oid())?,
        None => BTreeSet::new(),
    };
    let since_oid = match (&opts.since, &repo) {
        (Some(rev), Some(r)) => Some(r.resolve(rev)?),
        (Some(_), None) => {
            return Err(EngineError::NotGit {
                dir: project.dir.clone(),
            });
        }
        _ => None,
    };

    let mut diffs: HashMap<Option<git2::Oid>, BTreeSet<String>> = HashMap::new();
    let deps: Vec<(&str, &[String])> = env
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    let layers = dag::layers(&deps);

    let mut services = Vec::with_capacity(env.services.len());
    for svc in &env.services {
        let matcher = ScopeMatcher::new(svc)?;
        let dirty = dirty_paths.iter().any(|p| matcher.matches(p));
        let config_hash = config_hash(svc);
        let min = timing::min_duration(svc);
        let mut planned = PlannedService {
            name: svc.name.clone(),
            affected: true,
            reason: String::new(),
            changed_paths: Vec::new(),
            layer: layers.get(svc.name.as_str()).copied().unwrap_or(0),
            strategy: svc.strategy.as_str(),
            min_duration_seconds: min.time.as_secs_f64(),
            manual_pauses: min.manual_pauses,
            depends_on: svc.depends_on.clone(),
            dirty,
            config_hash,
        };
        if !named.is_empty() {
            planned.affected = named.contains(svc.name.as_str());
            planned.reason = if planned.affected {
                "named on the command line".to_string()
            } else {
                "not named on the command line".to_string()
            };
        } else if forced_all {
            planned.reason = "--all takes every service".to_string();
        }
        let not_running = opts
            .not_running
            .get(&svc.name)
            .filter(|_| named.is_empty() && !forced_all);
        if let Some(why) = not_running {
            planned.reason = format!("its ACTIVE release is not running: {why}");
        } else if let Some(repo) = repo.as_ref().filter(|_| detection_needed) {
            detect(
                repo,
                &env.name,
                store,
                since_oid,
                opts.since.as_deref(),
                &matcher,
                &mut diffs,
                &mut planned,
            )?;
        }
        services.push(planned);
    }
    let order: HashMap<&str, usize> = env
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    services.sort_by_key(|s| (s.layer, order.get(s.name.as_str()).copied()));
    Ok(Plan {
        env: env.name.clone(),
        services,
        head,
    })
}

/// Change detection for one service (no `--all`, nothing named).
#[allow(clippy::too_many_arguments)]
fn detect(
    repo: &GitRepo,
    env: &str,
    store: Option<&dyn ReleaseStore>,
    since_oid: Option<git2::Oid>,
    since: Option<&str>,
    matcher: &ScopeMatcher,
    diffs: &mut HashMap<Option<git2::Oid>, BTreeSet<String>>,
    planned: &mut PlannedService,
) -> Result<(), EngineError> {
    let (base, base_label) = match since_oid {
        Some(oid) => (oid, format!("since {}", since.unwrap_or_default())),
        None => {
            let active = match store {
                Some(s) => s
                    .active_release(&planned.name, env)
                    .map_err(EngineError::Store)?,
                None => None,
            };
            let Some(active) = active else {
                planned.reason = format!("no ACTIVE release in {env}");
                return Ok(());
            };
            if active.dirty {
                planned.reason = format!(
                    "its ACTIVE release {} was built from a dirty tree",
                    active.id
                );
                return Ok(());
            }
            if active.config_hash != planned.config_hash {
                planned.reason = format!(
                    "its configuration changed since its ACTIVE release {}",
                    active.id
                );
                return Ok(());
            }
            let Some(sha) = active.sha.filter(|s| repo.has_commit(s)) else {
                planned.reason = format!(
                    "the commit of its ACTIVE release {} is not in this repository",
                    active.id
                );
                return Ok(());
            };
            let oid = repo.resolve(&sha)?;
            (oid, format!("since {} ({})", active.id, short(&sha)))
        }
    };
    let key = Some(base);
    let all = match diffs.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(repo.changed_since(key)?),
    };
    let changed: Vec<String> = all.iter().filter(|p| matcher.matches(p)).cloned().collect();
    if changed.is_empty() {
        planned.affected = false;
        planned.reason = format!("no changes {base_label}");
    } else {
        let shown: Vec<&str> = changed
            .iter()
            .take(REASON_PATHS)
            .map(String::as_str)
            .collect();
        let more = changed.len().saturating_sub(REASON_PATHS);
        planned.reason = format!(
            "{} changed {} {base_label}: {}{}",
            changed.len(),
            if changed.len() == 1 { "path" } else { "paths" },
            shown.join(", "),
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            }
        );
        planned.changed_paths = changed;
    }
    Ok(())
}

/// First 7 characters of a sha.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Matches project-relative paths against a service's `path` and `watch` globs.
struct ScopeMatcher {
    dir: String,
    watch: Option<GlobSet>,
}

impl ScopeMatcher {
    fn new(svc: &ResolvedService) -> Result<Self, EngineError> {
        let dir = svc
            .path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != ".")
            .collect::<Vec<_>>()
            .join("/");
        let watch = if svc.watch.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for w in &svc.watch {
                let glob = Glob::new(w).map_err(|e| EngineError::Glob {
                    service: svc.name.clone(),
                    glob: w.clone(),
                    why: e.to_string(),
                })?;
                b.add(glob);
            }
            Some(b.build().map_err(|e| EngineError::Glob {
                service: svc.name.clone(),
                glob: svc.watch.join(", "),
                why: e.to_string(),
            })?)
        };
        Ok(ScopeMatcher { dir, watch })
    }

    fn matches(&self, path: &str) -> bool {
        changes::under(&self.dir, path) || self.watch.as_ref().is_some_and(|w| w.is_match(path))
    }
}

/// A stable hash (FNV-1a, 64 bit, hex) of a service's resolved configuration. Secret values
/// are not part of it (only their names are).
pub fn config_hash(svc: &ResolvedService) -> String {
    let text = format!("{svc:?}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
