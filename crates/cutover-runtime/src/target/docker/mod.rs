//! The Docker target: instances are containers on a Docker Engine, driven through its API
//! (bollard), never the `docker` CLI.
//!
//! # Layout
//! - `mod.rs`: the engine connection ([`DockerBackend`], [`Engine`]), labels, what a container
//!   of a release runs ([`ContainerRun`]), finding containers an earlier agent left.
//! - `container.rs`: a container as a [`super::Unit`]: a task owns it, like the supervisor's
//!   task owns a process (start, wait, restart with backoff, stop, logs into the release's log).
//! - `image.rs`: image builds from the service's Dockerfile (context honouring `.dockerignore`,
//!   `build_args`, tags), pushes, pruning, and one-off containers for hooks.
//!
//! # Theory of operation
//! A container's `$PORT` is the service's `container_port` (default 8080); the engine publishes
//! it on `127.0.0.1:<leased port>`, the port the agent's probe and proxy use, so the strategies
//! run unchanged. Every container carries the labels `cutover.project`, `cutover.env`,
//! `cutover.service`, `cutover.release`, `cutover.instance`, `cutover.port` and
//! `cutover.agent`: after a `kill -9` of the agent the next one finds them by label and adopts
//! them (no orphan, no duplicate).

mod container;
pub(crate) use container::pipe_lines;
pub mod image;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio::sync::OnceCell;

use super::{Backend, Found, Unit};
use crate::api::types::{ContainerSpec, ReleaseSpec};
use crate::supervisor::{InstanceSpec, RestartPolicy};

pub use image::{BuildRequest, build_image, push_image, remove_images, run_once};

/// Label: the project's name.
pub const LABEL_PROJECT: &str = "cutover.project";
/// Label: the environment.
pub const LABEL_ENV: &str = "cutover.env";
/// Label: the service.
pub const LABEL_SERVICE: &str = "cutover.service";
/// Label: the release id.
pub const LABEL_RELEASE: &str = "cutover.release";
/// Label: the instance's index within its release.
pub const LABEL_INSTANCE: &str = "cutover.instance";
/// Label: the host port the container's port is published on (127.0.0.1).
pub const LABEL_PORT: &str = "cutover.port";
/// Label: the socket of the agent that started it (one checkout's agent never adopts
/// another's containers).
pub const LABEL_AGENT: &str = "cutover.agent";

/// How long an API call may take before it fails (builds stream, so they are not cut).
const API_TIMEOUT_SECS: u64 = 120;

/// A connection to one Docker Engine; the API version is negotiated on first use (Debian's
/// docker.io 20.10 speaks 1.41).
#[derive(Debug)]
pub struct Engine {
    host: String,
    raw: Docker,
    negotiated: OnceCell<Docker>,
}

impl Engine {
    /// A client for the engine at `host` (`unix:///path`, `tcp://host:port`, `http://..`);
    /// nothing is sent yet.
    pub fn connect(host: &str) -> Result<Engine, String> {
        let raw = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            let addr = host.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(&addr, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(format!(
                "Docker host `{host}` is not an address cutover can use: give \
                 unix:///path/to/docker.sock or tcp://host:port"
            ));
        }
        .map_err(|e| unreachable(host, &e.to_string()))?;
        Ok(Engine {
            host: host.to_string(),
            raw,
            negotiated: OnceCell::new(),
        })
    }

    /// The engine named by `[environments.E.docker] host`, else `DOCKER_HOST`, else the local
    /// socket.
    pub fn default_host(configured: Option<&str>) -> String {
        configured
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
    }

    /// The engine's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client, with the API version agreed with the engine (asked once).
    pub async fn client(&self) -> Result<&Docker, String> {
        self.negotiated
            .get_or_try_init(|| async {
                self.raw
                    .clone()
                    .negotiate_version()
                    .await
                    .map_err(|e| unreachable(&self.host, &e.to_string()))
            })
            .await
    }

    /// Checks that the engine answers: one clear error naming the socket otherwise.
    pub async fn ping(&self) -> Result<(), String> {
        let client = self.client().await?;
        client
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| unreachable(&self.host, &e.to_string()))
    }
}

/// Checks that `engine` manages a swarm: one clear error naming it otherwise.
pub async fn swarm_manager(engine: &Engine) -> Result<(), String> {
    let client = engine.client().await?;
    let info = client
        .info()
        .await
        .map_err(|e| unreachable(engine.host(), &e.to_string()))?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.control_available == Some(true) {
        return Ok(());
    }
    let state = swarm
        .local_node_state
        .map_or_else(|| "unknown".to_string(), |s| s.to_string());
    Err(format!(
        "the Docker Engine at {} is not a swarm manager (its swarm state: {}); run `docker swarm init` there, or point [environments.<env>.swarm] host at a manager",
        engine.host(),
        if state.is_empty() {
            "inactive".to_string()
        } else {
            state
        }
    ))
}

/// "cannot reach the Docker Engine at unix:///..: why; start dockerd or set ..."
fn unreachable(host: &str, why: &str) -> String {
    format!(
        "cannot reach the Docker Engine at {host}: {why}; start dockerd there, or point \
         [environments.<env>.docker] host (or DOCKER_HOST) at a running engine"
    )
}

/// The Docker target on one engine.
#[derive(Debug)]
pub struct DockerBackend {
    engine: Arc<Engine>,
}

impl DockerBackend {
    /// The backend for the engine at `host` (connects lazily).
    pub fn connect(host: &str) -> Result<DockerBackend, String> {
        Ok(DockerBackend {
            engine: Arc::new(Engine::connect(host)?),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The containers an agent on `socket` started on this engine, running or not: what
    /// their labels say of each.
    pub async fn leftovers(&self, socket: &Path) -> Result<Vec<LabelledContainer>, String> {
        let client = self.engine.client().await?;
        let mut filters = std::collections::HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_AGENT}={}", socket.display())],
        );
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = client
            .list_containers(Some(options))
            .await
            .map_err(|e| unreachable(self.engine.host(), &e.to_string()))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let running = c
                    .state
                    .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
                Some(LabelledContainer {
                    id: c.id?,
                    env: labels.get(LABEL_ENV)?.clone(),
                    service: labels.get(LABEL_SERVICE)?.clone(),
                    release: labels.get(LABEL_RELEASE)?.clone(),
                    index: labels.get(LABEL_INSTANCE)?.parse().ok()?,
                    port: labels.get(LABEL_PORT)?.parse().ok()?,
                    running,
                })
            })
            .collect())
    }

    /// Removes container `id` (stopping it first, at once).
    pub async fn remove(&self, id: &str) {
        if let Ok(client) = self.engine.client().await {
            container::remove(client, id).await;
        }
    }
}

/// A container found by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledContainer {
    /// Container id.
    pub id: String,
    /// `cutover.env`.
    pub env: String,
    /// `cutover.service`.
    pub service: String,
    /// `cutover.release`.
    pub release: String,
    /// `cutover.instance`.
    pub index: u32,
    /// `cutover.port`.
    pub port: u16,
    /// Whether it runs.
    pub running: bool,
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start(&self, spec: InstanceSpec, policy: RestartPolicy) -> Arc<dyn Unit> {
        Arc::new(container::Container::supervise(
            Arc::clone(&self.engine),
            spec,
            policy,
            None,
        ))
    }

    fn adopt(&self, spec: InstanceSpec, policy: RestartPolicy, found: &Found) -> Arc<dyn Unit> {
        let id = match found {
            Found::Container { id, .. } => Some(id.clone()),
            Found::Process(_) | Found::SwarmService { .. } => None,
        };
        Arc::new(container::Container::supervise(
            Arc::clone(&self.engine),
            spec,
            policy,
            id,
        ))
    }
}

/// What a container of a release runs: image, the port inside, labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRun {
    /// Image reference with its tag.
    pub image: String,
    /// The port the service listens on inside (published on 127.0.0.1:`InstanceSpec::port`).
    pub container_port: u16,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
    /// On swarm: the release's swarm service (the instance is a seat in it).
    pub swarm: Option<crate::target::swarm::SwarmRun>,
}

impl ContainerRun {
    /// Instance `index` of `spec`, published on `host_port`, started by the agent on `socket`.
    pub fn new(
        c: &ContainerSpec,
        spec: &ReleaseSpec,
        index: u32,
        host_port: u16,
        socket: &Path,
    ) -> ContainerRun {
        let labels = [
            (LABEL_PROJECT, c.project.clone()),
            (LABEL_ENV, spec.env.clone()),
            (LABEL_SERVICE, spec.service.clone()),
            (LABEL_RELEASE, spec.release.clone()),
            (LABEL_INSTANCE, index.to_string()),
            (LABEL_PORT, host_port.to_string()),
            (LABEL_AGENT, socket.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ContainerRun {
            image: c.image.clone(),
            container_port: c.container_port,
            labels,
            swarm: None,
        }
    }
}
