//! After a restart (or the `kill -9` of the previous agent): finding the instances the earlier
//! agent left running, adopting those of the releases that should run, and bringing back the
//! rest.
//!
//! Adopting is the point: a healthy instance that outlived its agent keeps serving, and only
//! the route is rebuilt to it, so a crash of the agent costs no restart of the services (and
//! no 5xx from one). What cannot be brought back is kept as a *problem*, shown by `status` with
//! its reason and counted as a change by the next deploy, never silently dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::set::{INSTANCE_VAR, ReleaseSet};
use super::{AGENT_MARK, Agent, Mode, log};
use crate::api::types::{EnvVar, ReleaseSpec};
use crate::target::{Backends, Found};

/// Where the agent finds the project's store (secret values after a restart, run records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// The project directory (the secret key file must lie outside it).
    pub project_dir: PathBuf,
    /// `[project] state`, e.g. `sqlite://.cutover/state.db`.
    pub url: String,
    /// The directory relative store paths are resolved against.
    pub root: PathBuf,
}

impl StoreLocation {
    /// Opens the store.
    pub fn open(&self) -> Result<cutover_store::SqliteStore, String> {
        cutover_store::SqliteStore::open_url(&self.url, &self.root)
            .map_err(|e| format!("cannot open the release store {}: {e}", self.url))
    }
}

/// An instance an earlier agent of this project started and that still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leftover {
    /// The process (group leader) or container.
    pub(crate) what: Found,
    pub(crate) env: String,
    pub(crate) service: String,
    pub(crate) release: String,
    pub(crate) index: u32,
    pub(crate) port: u16,
}

impl Leftover {
    /// Ends it and whatever it started (SIGKILL to its process group; a container is removed).
    pub(crate) async fn kill(&self, backends: &Backends) {
        match &self.what {
            Found::Process(pid) => {
                if let Ok(pgid) = i32::try_from(*pid)
                    && pgid > 1
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Found::Container { host, id } => {
                if let Ok(docker) = backends.docker(host) {
                    docker.remove(id).await;
                }
            }
            Found::SwarmService { host, name } => {
                if let Ok(swarm) = backends.swarm(host) {
                    swarm.remove(name).await;
                }
            }
        }
    }
}

/// The containers an earlier agent on `socket` started on the engines of `specs`: the running
/// ones to adopt; those that no longer run are removed here.
pub(crate) async fn container_leftovers(
    specs: &[ReleaseSpec],
    socket: &Path,
    backends: &Backends,
) -> Vec<Leftover> {
    let hosts: std::collections::BTreeSet<&str> = specs
        .iter()
        .filter_map(|s| s.container.as_ref())
        .filter(|c| c.swarm.is_none())
        .map(|c| c.host.as_str())
        .collect();
    let managers: std::collections::BTreeSet<&str> = specs
        .iter()
        .filter_map(|s| s.container.as_ref())
        .filter(|c| c.swarm.is_some())
        .map(|c| c.host.as_str())
        .collect();
    let mut found = Vec::new();
    for host in managers {
        let swarm = match backends.swarm(host) {
            Ok(s) => s,
            Err(e) => {
                log(&format!("cannot look for swarm services on {host}: {e}"));
                continue;
            }
        };
        match swarm.leftovers(socket).await {
            // One leftover per task the service runs: each becomes a seat again.
            Ok(list) => {
                for (env, service, release, name, replicas) in list {
                    for index in 0..replicas {
                        found.push(Leftover {
                            what: Found::SwarmService {
                                host: host.to_string(),
                                name: name.clone(),
                            },
                            env: env.clone(),
                            service: service.clone(),
                            release: release.clone(),
                            index,
                            port: 0,
                        });
                    }
                }
            }
            Err(e) => log(&format!("cannot look for swarm services: {e}")),
        }
    }
    for host in hosts {
        let docker = match backends.docker(host) {
            Ok(d) => d,
            Err(e) => {
                log(&format!("cannot look for containers on {host}: {e}"));
                continue;
            }
        };
        match docker.leftovers(socket).await {
            Ok(list) => {
                for c in list {
                    if !c.running {
                        docker.remove(&c.id).await;
                        continue;
                    }
                    found.push(Leftover {
                        what: Found::Container {
                            host: host.to_string(),
                            id: c.id,
                        },
                        env: c.env,
                        service: c.service,
                        release: c.release,
                        index: c.index,
                        port: c.port,
                    });
                }
            }
            Err(e) => log(&format!("cannot look for containers: {e}")),
        }
    }
    found.sort_by(|a, b| (&a.env, &a.service, a.index).cmp(&(&b.env, &b.service, b.index)));
    found
}

/// The instances an earlier agent on `socket` started that still run: process group leaders
/// whose environment carries [`AGENT_MARK`] for this socket.
pub(crate) fn leftovers(socket: &Path) -> Vec<Leftover> {
    let mark = format!("{AGENT_MARK}={}", socket.display());
    let me = std::process::id();
    let mut found = Vec::new();
    for (pid, dir) in crate::procfs::processes() {
        if pid == me || !crate::supervisor::process_alive(pid) {
            continue;
        }
        let Some(environ) = crate::procfs::environ(&dir) else {
            continue;
        };
        let vars: BTreeMap<&[u8], &[u8]> = environ
            .iter()
            .filter_map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((&kv[..eq], &kv[eq + 1..]))
            })
            .collect();
        let marked = vars
            .get(AGENT_MARK.as_bytes())
            .is_some_and(|v| format!("{AGENT_MARK}={}", String::from_utf8_lossy(v)) == mark);
        if !marked {
            continue;
        }
        // Only group leaders are instances; the rest are what an instance started.
        let leader = i32::try_from(pid).ok().is_some_and(|p| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(p))).is_ok_and(|g| g.as_raw() == p)
        });
        if !leader {
            continue;
        }
        let text = |k: &str| {
            vars.get(k.as_bytes())
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let leftover = (|| {
            Some(Leftover {
                what: Found::Process(pid),
                env: text("CUTOVER_ENV")?,
                service: text("CUTOVER_SERVICE")?,
                release: text("CUTOVER_RELEASE")?,
                index: text(INSTANCE_VAR)?.parse().ok()?,
                port: text("PORT")?.parse().ok()?,
            })
        })();
        match leftover {
            Some(l) => found.push(l),
            None => {
                // Marked as ours but not describable (an older agent's): it cannot be adopted.
                if let Ok(pgid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.env, &a.service, a.index).cmp(&(&b.env, &b.service, b.index)));
    found
}

/// Puts secret values (named in `secret`) back: from the project's secret store (this
/// environment's value, else every environment's), else from the agent's own environment.
/// Returns the first secret it cannot find, with why.
pub(crate) fn fill_secrets(
    vars: &mut [EnvVar],
    env: &str,
    store: Option<&StoreLocation>,
) -> Result<(), String> {
    if vars.iter().all(|v| v.secret.is_none()) {
        return Ok(());
    }
    let opened = store.map(StoreLocation::open);
    let mut key = None;
    for v in vars.iter_mut() {
        let Some(name) = v.secret.clone() else {
            continue;
        };
        let mut why =
            format!("secret {name} is neither in the secret store nor in the agent's environment");
        if let (Some(Ok(store)), Some(location)) = (&opened, store) {
            match cutover_store::secrets::lookup(store, &location.project_dir, &name, env, &mut key)
            {
                Ok(Some(value)) => {
                    v.value = value;
                    continue;
                }
                Ok(None) => {}
                Err(e) => why = format!("secret {name}: {}", e.message),
            }
        } else if let Some(Err(e)) = &opened {
            why = format!("secret {name}: {e}");
        }
        match std::env::var(&name) {
            Ok(value) if !value.is_empty() => v.value = value,
            _ => return Err(why),
        }
    }
    Ok(())
}

impl Agent {
    /// After a restart: brings every service of the recorded desired state back to the
    /// release it served, adopting the instances of that release that still run (`found`,
    /// from [`leftovers`]) and starting what is missing. Instances of other releases (a warm
    /// set, a canary the crash interrupted) are ended. A service that cannot be brought back
    /// becomes a problem with its reason.
    pub(crate) async fn recover_from(self: &Arc<Self>, found: Vec<Leftover>) {
        let specs: Vec<ReleaseSpec> = match std::fs::read(self.desired_path()) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    log(&format!("ignoring an unreadable desired state: {e}"));
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        let mut found = found;
        found.extend(container_leftovers(&specs, &self.socket, &self.backends).await);
        self.recovering
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut restores = tokio::task::JoinSet::new();
        for mut spec in specs {
            let (mut mine, rest): (Vec<Leftover>, Vec<Leftover>) =
                found.into_iter().partition(|l| {
                    l.env == spec.env && l.service == spec.service && l.release == spec.release
                });
            found = rest;
            let keep = usize::try_from(spec.instances.max(1)).unwrap_or(usize::MAX);
            for extra in mine.split_off(keep.min(mine.len())) {
                // A swarm seat more than asked for is one replica less, not a service to remove.
                if !matches!(extra.what, Found::SwarmService { .. }) {
                    extra.kill(&self.backends).await;
                }
            }
            let secrets = fill_secrets(&mut spec.env_vars, &spec.env, self.store.as_ref());
            if mine.is_empty() {
                // A container's release lives in its image: no snapshot is needed to restart.
                let snapshot = spec.container.is_some() || spec.dir.is_dir();
                let cannot = match (&secrets, snapshot) {
                    (Err(why), _) => Some(why.clone()),
                    (Ok(()), false) => Some(format!("its snapshot {} is gone", spec.dir.display())),
                    (Ok(()), true) => None,
                };
                if let Some(why) = cannot {
                    log(&format!(
                        "{}/{}: cannot restart {}: {why}",
                        spec.env, spec.service, spec.release
                    ));
                    self.set_problem(&spec, format!("cannot restart {}: {why}", spec.release));
                    continue;
                }
                log(&format!(
                    "{}/{}: restoring {}",
                    spec.env, spec.service, spec.release
                ));
                let (tx, _rx) = mpsc::unbounded_channel();
                restores.spawn(self.clone().deploy_as(spec, tx, Mode::Restore));
            } else {
                log(&format!(
                    "{}/{}: adopting {} running instance(s) of {}",
                    spec.env,
                    spec.service,
                    mine.len(),
                    spec.release
                ));
                restores.spawn(self.clone().adopt(spec, mine, secrets.err()));
            }
        }
        // A stale swarm service is one leftover per task: it is removed once.
        found.dedup_by(|a, b| matches!(a.what, Found::SwarmService { .. }) && a.what == b.what);
        for stale in &found {
            log(&format!(
                "{}/{}: stopping instance {} of {} left by the previous agent",
                stale.env, stale.service, stale.index, stale.release
            ));
            stale.kill(&self.backends).await;
        }
        while restores.join_next().await.is_some() {}
        self.recovering
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.persist().await {
            log(&format!("could not record the desired state: {e}"));
        }
    }

    /// Makes the running instances `found` of `spec` its live set again: they are probed, the
    /// route goes to them once ready, and missing instances are started. With
    /// `secrets_missing`, nothing new can start (its environment would lack a secret): the
    /// adopted instances serve, are not restarted when they exit, and the service carries
    /// that problem.
    async fn adopt(
        self: Arc<Self>,
        spec: ReleaseSpec,
        found: Vec<Leftover>,
        secrets_missing: Option<String>,
    ) {
        let name = format!("{}/{} {}", spec.env, spec.service, spec.release);
        // Ready first, listening after: until the adopted instances pass a probe the public
        // port stays closed (a client sees a refused connection, never a 503 from an empty
        // route), and then the route is set the moment the listener opens.
        let set = Arc::new(ReleaseSet::new(spec.clone()));
        let ctx = self.spawn_context();
        let triples: Vec<(u32, u16, Found)> = found
            .iter()
            .map(|l| (l.index, l.port, l.what.clone()))
            .collect();
        let mut members = match set.adopt(&triples, &ctx) {
            Ok(m) => m,
            Err(why) => {
                self.set_problem(&spec, format!("cannot adopt {}: {why}", spec.release));
                return;
            }
        };
        let missing = spec
            .instances
            .max(1)
            .saturating_sub(u32::try_from(members.len()).unwrap_or(u32::MAX));
        if missing > 0 && secrets_missing.is_none() {
            match set.start(missing, &ctx) {
                Ok(more) => members.extend(more),
                Err(e) => log(&format!("{name}: cannot start the missing instances: {e}")),
            }
        }
        let ready = set.wait_ready(&members).await;
        let rt = match self.runtime_for(&spec).await {
            Ok(rt) => rt,
            Err(why) => {
                set.stop().await;
                self.set_problem(&spec, format!("cannot restore {}: {why}", spec.release));
                return;
            }
        };
        let deploying = rt.deploying.lock().await;
        {
            let mut sets = rt.sets.lock().await;
            if sets.live.is_some() {
                drop(sets);
                set.stop().await;
                return;
            }
            sets.desired = spec.instances;
        }
        match ready {
            Ok(_) => {
                let (tx, _rx) = mpsc::unbounded_channel();
                let mut sets = rt.sets.lock().await;
                self.switch(&rt, &mut sets, set.clone(), &tx);
                drop(sets);
                log(&format!("{name}: adopted, live"));
                match secrets_missing {
                    Some(why) => {
                        set.set_restart(false);
                        self.set_problem(
                            &spec,
                            format!(
                                "serving, but its instances cannot be restarted if they exit: {why}"
                            ),
                        );
                    }
                    None => self.clear_problem(&spec.env, &spec.service),
                }
            }
            Err(reason) => {
                set.stop().await;
                drop(deploying);
                log(&format!(
                    "{name}: adopted instances not ready: {}",
                    reason.lines().next().unwrap_or("")
                ));
                match secrets_missing {
                    Some(why) => {
                        self.set_problem(&spec, format!("cannot restart {}: {why}", spec.release))
                    }
                    None => {
                        let (tx, _rx) = mpsc::unbounded_channel();
                        self.deploy_as(spec, tx, Mode::Restore).await;
                    }
                }
            }
        }
    }
}
