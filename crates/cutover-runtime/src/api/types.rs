//! Requests and answers of the admin API, shared by client and server.

use std::net::IpAddr;
use std::path::PathBuf;

use cutover_config::Health;
use serde::{Deserialize, Serialize};

/// An environment variable for instances: its value, and whether it is a secret (secrets are
/// kept only in memory by the agent and persisted by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value.
    pub value: String,
    /// The secret's name when the value is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// How a release is deployed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start new, wait ready, switch in one step, drain old.
    #[default]
    BlueGreen,
    /// Stop old, start new.
    Immediate,
    /// Replace `batch` instances at a time; each new one is ready before an old one leaves.
    Rolling,
    /// A canary set beside the stable set, weighted steps judged on the canary's own numbers.
    Canary,
}

/// A canary's steps and analysis, as the agent runs them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CanarySpec {
    /// The steps, in order.
    pub steps: Vec<CanaryStepSpec>,
    /// How often the canary is judged, in milliseconds.
    pub interval_ms: u64,
    /// Highest error rate that passes (0..=1).
    pub max_error_rate: f64,
    /// Highest p99 latency that passes, in milliseconds.
    pub max_p99_ms: f64,
    /// Requests needed before a verdict.
    pub min_requests: u64,
    /// How long a step may go without a verdict after its pause, in milliseconds.
    pub verdict_timeout_ms: u64,
    /// Keep a client on one version with a cookie.
    pub sticky: bool,
    /// An extra judgement from a Prometheus query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
}

/// One canary step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CanaryStepSpec {
    /// Percent of the traffic sent to the canary.
    pub weight: u8,
    /// What ends the step's pause.
    pub pause: PauseSpec,
}

/// A step's pause.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseSpec {
    /// No pause: the step advances after its first passing judgement.
    None,
    /// A timed pause, in milliseconds.
    Timed {
        /// Milliseconds.
        ms: u64,
    },
    /// Wait for `cutover promote`.
    Manual,
}

/// `[services.X.canary.prometheus]`: a PromQL query whose scalar result must be <= `max`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrometheusCheck {
    /// Prometheus base URL (`http://127.0.0.1:9090`).
    pub url: String,
    /// The PromQL query (`$release` and `$service` are replaced by the canary's).
    pub query: String,
    /// Highest value that passes.
    pub max: f64,
}

/// Everything the agent needs to run one release of one service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseSpec {
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// Release id.
    pub release: String,
    /// The release snapshot (instances' working directory).
    pub dir: PathBuf,
    /// `run` command.
    pub run: String,
    /// Public port (`None`: the service is only on the shared listener, by `edge`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Listen address of the public port.
    pub listen: IpAddr,
    /// The service's claim on the shared listener (`hosts` in `cutover.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeSpec>,
    /// The proxy's per-service limits and access log.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// Instances.
    pub instances: u32,
    /// Environment variables (without PORT and CUTOVER_*; the agent adds those).
    pub env_vars: Vec<EnvVar>,
    /// Health probe.
    #[serde(with = "health_serde")]
    pub health: Health,
    /// Strategy.
    pub strategy: Strategy,
    /// How long old instances stay warm after a switch, in milliseconds.
    pub scale_down_delay_ms: u64,
    /// How long in-flight requests may take to finish on old instances, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Rolling: instances replaced at a time.
    #[serde(default = "one")]
    pub batch: u32,
    /// Canary: steps and analysis (required when `strategy` is canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// Autoscaling between `min` and `max` instances by in-flight requests per instance;
    /// `instances` is where it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,
    /// Where instances run when they are not local processes (`target = "docker"`): the
    /// engine and the image. `None` for the local target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

/// A service's claim on the shared listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EdgeSpec {
    /// `[proxy] http`: where the shared listener listens.
    pub http: Option<std::net::SocketAddr>,
    /// `[proxy] https`: where the TLS listener listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<std::net::SocketAddr>,
    /// Host names claimed, lowercase.
    pub hosts: Vec<String>,
    /// The path prefix claimed (`/`: every path).
    pub path_prefix: String,
    /// The service's `tls`: its hosts are served on `https` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// `[proxy] redirect_https`: plain HTTP requests get a 308 to https (with `tls` only).
    #[serde(default)]
    pub redirect_https: bool,
    /// `[proxy.acme]`, when `tls` is ACME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeSpec>,
}

/// Where a service's certificates come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsSpec {
    /// PEM files, watched and reloaded when they change.
    Files {
        /// The certificate chain, leaf first (absolute path).
        cert: std::path::PathBuf,
        /// The private key (absolute path).
        key: std::path::PathBuf,
    },
    /// Issued and renewed over ACME.
    Acme,
}

/// `[proxy.acme]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AcmeSpec {
    /// The directory URL.
    pub directory: String,
    /// The account's contact email.
    pub email: String,
    /// A PEM root the directory's HTTPS is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// Renew when less than this is left, in milliseconds (`None`: a third of the lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_ms: Option<u64>,
}

/// What the proxy enforces and records for one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxySpec {
    /// Largest request body passed on, in bytes (413 above it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
    /// Longest wait for a response head, in milliseconds (504 after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// Write one JSON line per request to the service's access log.
    #[serde(default)]
    pub access_log: bool,
}

/// `autoscale = { min, max, target_inflight }` of a service.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AutoscaleSpec {
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// In-flight requests per instance to aim for.
    pub target_inflight: u32,
}

/// A release's instances as containers on a Docker Engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The engine's API address (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    pub host: String,
    /// The image with the release's tag (`fleet-api:deploy-20261204-101500-api`).
    pub image: String,
    /// The port the service listens on inside the container (`$PORT` there).
    pub container_port: u16,
    /// The project's name (the `cutover.project` label).
    pub project: String,
    /// Set when `host` is a swarm manager: the release runs as a swarm service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSpec>,
}

/// What a swarm service of a release gets besides its image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwarmSpec {
    /// Each task's CPU limit, in billionths of a CPU (`cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Each task's memory limit in bytes (`memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Placement constraints (`constraints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
}

fn one() -> u32 {
    1
}

/// `POST /v1/deploy` and `POST /v1/rollback` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// What to run.
    pub spec: ReleaseSpec,
}

/// One line of the streamed answer to a deploy (newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum DeployProgress {
    /// Instances are starting.
    Starting {
        /// How many.
        instances: u32,
    },
    /// Probes are deciding.
    Verifying,
    /// An instance runs (its process or container started).
    InstanceStarted {
        /// Its release.
        release: String,
        /// Its index.
        index: u32,
        /// What it is ("pid 123", "container 3f2a9c1b0d4e").
        unit: String,
        /// The internal port it serves on (127.0.0.1).
        port: u16,
    },
    /// An instance passed its first probe: it takes traffic once its release is routed.
    InstanceReady {
        /// Its release.
        release: String,
        /// Its index.
        index: u32,
    },
    /// A ready instance failed `failure_threshold` probes in a row: out of the route.
    ProbeFailed {
        /// Its release.
        release: String,
        /// Its index.
        index: u32,
        /// The last probe result, in words.
        detail: String,
    },
    /// An instance ended (exited, or was stopped).
    InstanceExited {
        /// Its release.
        release: String,
        /// Its index.
        index: u32,
        /// How, in words ("exited with code 3").
        reason: String,
    },
    /// Instances still starting (not ready yet), every few seconds while the wait lasts.
    Waiting {
        /// Each instance not ready yet.
        starting: Vec<StartingInstance>,
    },
    /// The route now sends all traffic to the release (confirmed).
    Switched {
        /// The route generation applied.
        generation: u64,
    },
    /// The end: the release serves.
    Active,
    /// The end: it failed; traffic stays on the previous release.
    Failed {
        /// Plain-words reason: which probe, last results, last log lines.
        reason: String,
    },
    /// Rolling: a batch of new instances is ready and old ones left.
    Batch {
        /// New instances serving so far.
        replaced: u32,
        /// Instances in all.
        total: u32,
    },
    /// Canary: a step began (its weight is applied).
    Step {
        /// Step number, from 1.
        number: u32,
        /// Steps in all.
        steps: u32,
        /// Percent of the traffic to the canary.
        weight: u8,
    },
    /// Canary: a judgement.
    Judgement {
        /// Step number, from 1.
        number: u32,
        /// The verdict and its numbers.
        judgement: Judgement,
    },
    /// The end: the canary was judged bad (or aborted); all traffic is back on the stable release.
    RolledBack {
        /// Why, with the numbers.
        reason: String,
    },
}

impl DeployProgress {
    /// The event in words, for terminals and log files (`None` for the steps every deploy has,
    /// which the stages already show: starting, verifying, switched, and the ends).
    pub fn describe(&self) -> Option<String> {
        match self {
            DeployProgress::InstanceStarted {
                release,
                index,
                unit,
                port,
            } => Some(format!(
                "instance {index} of {release} started ({unit}, port {port})"
            )),
            DeployProgress::InstanceReady { release, index } => {
                Some(format!("instance {index} of {release} is ready"))
            }
            DeployProgress::ProbeFailed {
                release,
                index,
                detail,
            } => Some(format!(
                "instance {index} of {release} failed its probes: {detail}"
            )),
            DeployProgress::InstanceExited {
                release,
                index,
                reason,
            } => Some(format!("instance {index} of {release} ended: {reason}")),
            DeployProgress::Step {
                number,
                steps,
                weight,
            } => Some(format!(
                "canary step {number}/{steps}: {weight}% of traffic"
            )),
            DeployProgress::Judgement { number, judgement } => Some(format!(
                "canary step {number}: {}: {}",
                judgement.verdict.replace('_', " "),
                judgement.detail
            )),
            DeployProgress::Batch { replaced, total } => {
                Some(format!("{replaced}/{total} instances replaced"))
            }
            DeployProgress::Waiting { starting } => {
                let each: Vec<String> = starting
                    .iter()
                    .map(|s| {
                        let probe = s
                            .last_probe
                            .as_deref()
                            .map(|p| format!(", last probe: {p}"))
                            .unwrap_or_default();
                        format!(
                            "instance {} starting for {}s (of {}s ready_timeout{probe})",
                            s.index, s.seconds, s.ready_timeout_seconds
                        )
                    })
                    .collect();
                Some(format!("still starting: {}", each.join("; ")))
            }
            DeployProgress::Starting { .. }
            | DeployProgress::Verifying
            | DeployProgress::Switched { .. }
            | DeployProgress::Active
            | DeployProgress::Failed { .. }
            | DeployProgress::RolledBack { .. } => None,
        }
    }

    /// Applies `f` to every free-text field (reasons, probe results, log lines), so a redactor
    /// can clean the event without knowing its shape.
    pub fn map_text(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self {
            DeployProgress::InstanceExited { reason, .. }
            | DeployProgress::Failed { reason }
            | DeployProgress::RolledBack { reason } => f(reason),
            DeployProgress::ProbeFailed { detail, .. } => f(detail),
            DeployProgress::Judgement { judgement, .. } => f(&mut judgement.detail),
            DeployProgress::Waiting { starting } => {
                for s in starting {
                    if let Some(p) = s.last_probe.as_mut() {
                        f(p);
                    }
                }
            }
            DeployProgress::InstanceStarted { .. }
            | DeployProgress::InstanceReady { .. }
            | DeployProgress::Starting { .. }
            | DeployProgress::Verifying
            | DeployProgress::Switched { .. }
            | DeployProgress::Step { .. }
            | DeployProgress::Batch { .. }
            | DeployProgress::Active => {}
        }
    }
}

/// An instance that has not passed its first probe yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StartingInstance {
    /// Its index.
    pub index: u32,
    /// Seconds since it was started.
    pub seconds: u64,
    /// The latest probe result, in words ("connection refused"), if one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// Its `ready_timeout`, in seconds.
    pub ready_timeout_seconds: u64,
}

/// A canary judgement with the numbers it was made on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Judgement {
    /// pass | fail | no_verdict.
    pub verdict: String,
    /// Requests the canary served in the window.
    pub requests: u64,
    /// Their error rate (0..=1).
    pub error_rate: f64,
    /// Their p99 latency in milliseconds (None without requests).
    pub p99_ms: Option<f64>,
    /// What decided, in words ("error rate 0.31 > 0.05 over 212 requests at 25%").
    pub detail: String,
}

/// `POST /v1/hand-over` body: the command that deployed `release` died while the agent goes
/// on with it (a canary's pauses, a rolling update); the agent records how it ends in the
/// release store and finishes `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandOverRequest {
    /// The run whose command died.
    pub run: String,
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// The release the agent is deploying.
    pub release: String,
}

/// `POST /v1/down` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownRequest {
    /// The environment to stop.
    pub env: String,
}

/// One instance in a status answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    /// Index within its release.
    pub index: u32,
    /// Internal port.
    pub port: u16,
    /// Process id when running.
    pub pid: Option<u32>,
    /// running | starting | backoff | exited | stopped.
    pub state: String,
    /// Probe says ready.
    pub ready: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Where it runs when that is not this machine: a swarm task's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The address the proxy sends its requests to, when not `127.0.0.1:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// What it is: "pid 123", "container 3f2a9c1b0d4e", "task k3j2… on node-b".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// One release set the agent runs for a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseSetStatus {
    /// Release id.
    pub release: String,
    /// live (receiving traffic) | warm (kept for a fast rollback) | starting | draining.
    pub role: String,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

/// One service in a status answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// The release receiving traffic.
    pub release: Option<String>,
    /// healthy | unhealthy | unknown | stopped.
    pub health: String,
    /// Ready instances of the live release.
    pub ready: u32,
    /// Desired instances.
    pub desired: u32,
    /// Route weights.
    pub traffic: Vec<Traffic>,
    /// Public URL.
    pub url: String,
    /// Every release set it runs.
    pub sets: Vec<ReleaseSetStatus>,
    /// The proxy's numbers over the last seconds, over all releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<LiveNumbers>,
    /// The canary in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Why the agent does not run the release it should (it could not bring it back after a
    /// restart): the service counts as changed for the next deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The release a deploy (or rollback) is bringing in right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploying: Option<String>,
    /// The autoscaler's last change, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled: Option<Scaled>,
}

/// An autoscaling change: from how many instances to how many, on what numbers, when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scaled {
    /// The release scaled.
    pub release: String,
    /// Instances before.
    pub from: u32,
    /// Instances after.
    pub to: u32,
    /// Requests in flight (averaged) that decided it.
    pub in_flight: f64,
    /// The target per instance.
    pub target_inflight: u32,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// A service's recent traffic, from the proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveNumbers {
    /// Requests per second over the window.
    pub requests_per_second: f64,
    /// Error rate over the window (0..=1; 0 without requests).
    pub error_rate: f64,
    /// p99 latency over the window in milliseconds (None without requests).
    pub p99_ms: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
    /// The window, in seconds.
    pub window_seconds: f64,
}

/// A canary in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CanaryStatus {
    /// The canary release.
    pub release: String,
    /// The stable release.
    pub stable: String,
    /// Current step, from 1.
    pub step: u32,
    /// Steps in all.
    pub steps: u32,
    /// Percent of the traffic to the canary.
    pub weight: u8,
    /// waiting_for_promote | paused | judging.
    pub state: String,
    /// The latest judgement of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// Deploys the agent handled since it started, by service and result (for `/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployCount {
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// deploy | rollback.
    pub kind: String,
    /// active | failed | rolled_back.
    pub result: String,
    /// How many.
    pub count: u64,
}

/// `POST /v1/promote` and `POST /v1/abort` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryControlRequest {
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// `promote --full`: 100% now, no further judgement.
    #[serde(default)]
    pub full: bool,
}

/// `POST /v1/pause` and `POST /v1/resume` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseRequest {
    /// Environment.
    pub env: String,
    /// Service.
    pub service: String,
    /// `pause`: how long a held request waits before it gets 503, in milliseconds.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// A route weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Release id.
    pub release: String,
    /// Percent.
    pub weight: u8,
}

/// `GET /v1/status` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    /// Agent pid.
    pub pid: u32,
    /// Socket path.
    pub socket: PathBuf,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Every service it runs.
    pub services: Vec<ServiceStatus>,
    /// Deploys and rollbacks handled since it started.
    #[serde(default)]
    pub deploys: Vec<DeployCount>,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// `Health` has no serde impls in the config crate; the API carries it field by field.
mod health_serde {
    use std::time::Duration;

    use cutover_config::{Health, ProbeKind};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        tcp: bool,
        path: String,
        expect_status: u16,
        expect_json: Option<serde_json::Value>,
        initial_delay_ms: u64,
        period_ms: u64,
        timeout_ms: u64,
        success_threshold: u32,
        failure_threshold: u32,
        /// Absent from an older agent's desired state: the built-in default then.
        #[serde(default)]
        ready_timeout_ms: Option<u64>,
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn serialize<S: Serializer>(h: &Health, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            tcp: h.kind == ProbeKind::Tcp,
            path: h.path.clone(),
            expect_status: h.expect_status,
            expect_json: h.expect_json.clone(),
            initial_delay_ms: ms(h.initial_delay),
            period_ms: ms(h.period),
            timeout_ms: ms(h.timeout),
            success_threshold: h.success_threshold,
            failure_threshold: h.failure_threshold,
            ready_timeout_ms: Some(ms(h.ready_timeout)),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Health, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(Health {
            kind: if w.tcp {
                ProbeKind::Tcp
            } else {
                ProbeKind::Http
            },
            path: w.path,
            expect_status: w.expect_status,
            expect_json: w.expect_json,
            initial_delay: Duration::from_millis(w.initial_delay_ms),
            period: Duration::from_millis(w.period_ms),
            timeout: Duration::from_millis(w.timeout_ms),
            success_threshold: w.success_threshold,
            failure_threshold: w.failure_threshold,
            ready_timeout: w
                .ready_timeout_ms
                .map_or(Health::default().ready_timeout, Duration::from_millis),
        })
    }
}
