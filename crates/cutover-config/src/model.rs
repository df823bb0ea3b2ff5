//! The validated configuration model: what the rest of cutover sees.
//!
//! Everything here has been checked once (see `validate.rs`); downstream code never re-reads TOML
//! nor re-checks what validation proved. [`Project::resolve`] applies `[defaults]` ← service ←
//! `[environments.E]` ← `[environments.E.services.S]` once and yields a [`ResolvedEnvironment`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The name of the environment that always exists unless declared.
pub const DEVELOPMENT: &str = "development";

/// A whole, validated `cutover.toml`.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project directory (the one holding `cutover.toml`), absolute.
    pub dir: PathBuf,
    /// The directory whose `.cutover/` holds the project's state (store, agent, logs): `dir`
    /// itself, or, when `dir` is in a linked git worktree, the same project directory in the
    /// main worktree (the binary sets it; see `cutover_engine::team::state_root`). The paths in
    /// it are spelled by `cutover_store::StateDir`.
    pub state_root: PathBuf,
    /// The configuration file, absolute.
    pub file: PathBuf,
    /// `[project] name`.
    pub name: String,
    /// `[project]` settings with their defaults applied.
    pub settings: ProjectSettings,
    /// `[defaults]`: the keys every service inherits (the first layer over the built-ins).
    pub defaults: ServiceSettings,
    /// Services in declaration order. Names are unique and match `[a-z0-9-]{1,63}`.
    pub services: Vec<ServiceDecl>,
    /// Environments in declaration order; `development` is appended when not declared.
    pub environments: Vec<EnvironmentDecl>,
    /// `[[notify]]` webhooks.
    pub notify: Vec<Notify>,
    /// `[proxy]`: the shared listeners.
    pub proxy: ProxyListeners,
}

/// `[proxy]`: listeners that services with `hosts` share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyListeners {
    /// `http`: plain HTTP, routed by host and path.
    pub http: Option<std::net::SocketAddr>,
    /// `https`: TLS, routed by SNI, host and path, for services with `tls`.
    pub https: Option<std::net::SocketAddr>,
    /// `redirect_https`: plain HTTP requests for services with `tls` get a 308 to https.
    pub redirect_https: bool,
    /// `[proxy.acme]`: where `tls = "acme"` certificates come from.
    pub acme: Option<Acme>,
}

/// `[proxy.acme]`: the ACME server and account for `tls = "acme"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The directory URL.
    pub directory: String,
    /// The account's contact email.
    pub email: String,
    /// A PEM root certificate the directory's HTTPS is checked against (absolute path).
    pub ca: Option<PathBuf>,
    /// Renew when less than this is left (`None`: a third of the certificate's lifetime).
    pub renew_before: Option<Duration>,
}

/// A service's `tls`: where the certificates for its hosts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// PEM files (absolute paths): a certificate chain and its private key.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// Issued and renewed over ACME (`[proxy.acme]`).
    Acme,
}

/// `[project]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSettings {
    /// Where the release store lives: `sqlite://.cutover/state.db` by default.
    pub state: String,
    /// Services at once per stage (default 16).
    pub max_parallel: usize,
    /// Local snapshots kept per service (default 5).
    pub keep_releases: usize,
    /// Worktree branches are `<branch_prefix>/<service>` (default `service`).
    pub branch_prefix: String,
    /// Optional TCP address for Prometheus metrics.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The environment commands use when `--env` is not given (default `development`).
    pub default_env: Option<String>,
}

/// A service as declared: its identity plus the keys it sets itself (not yet merged with
/// `[defaults]` or an environment; see [`Project::resolve`]).
#[derive(Debug, Clone)]
pub struct ServiceDecl {
    /// The service name (`[services.NAME]`).
    pub name: String,
    /// Source directory, relative to the project dir.
    pub path: PathBuf,
    /// Extra globs (relative to the project dir) whose changes affect this service.
    pub watch: Vec<String>,
    /// Services that must be ACTIVE before this one deploys.
    pub depends_on: Vec<String>,
    /// The overridable keys this service sets.
    pub settings: ServiceSettings,
}

/// The keys that `[defaults]`, a service, `[environments.E]` and `[environments.E.services.S]`
/// may all set. `None` means "not set here"; resolution layers them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSettings {
    /// `checks`: commands run in the service's path.
    pub checks: Option<Vec<String>>,
    /// `build`: command run in the release snapshot.
    pub build: Option<String>,
    /// `run`: command that starts one instance.
    pub run: Option<String>,
    /// `port`: public port.
    pub port: Option<u16>,
    /// `listen`: address the proxy listens on.
    pub listen: Option<IpAddr>,
    /// `hosts`: host names claimed on the shared `[proxy]` listeners (lowercase).
    pub hosts: Option<Vec<String>>,
    /// `path_prefix`: with `hosts`, the paths claimed (starts with `/`, no trailing `/`).
    pub path_prefix: Option<String>,
    /// `max_body`: largest request body passed on, in bytes.
    pub max_body: Option<u64>,
    /// `upstream_timeout`: longest wait for a response head.
    pub upstream_timeout: Option<Duration>,
    /// `access_log`: one JSON line per request.
    pub access_log: Option<bool>,
    /// `tls`: HTTPS for `hosts` on `[proxy] https`.
    pub tls: Option<Tls>,
    /// `instances`.
    pub instances: Option<u32>,
    /// `batch` (rolling).
    pub batch: Option<u32>,
    /// `drain_timeout`.
    pub drain_timeout: Option<Duration>,
    /// `scale_down_delay`.
    pub scale_down_delay: Option<Duration>,
    /// `timeout` per command.
    pub timeout: Option<Duration>,
    /// `pre_deploy` hooks.
    pub pre_deploy: Option<Vec<String>>,
    /// `post_deploy` hooks.
    pub post_deploy: Option<Vec<String>>,
    /// `rollback_on_hook_failure`.
    pub rollback_on_hook_failure: Option<bool>,
    /// `env`: merged key by key across layers (a later layer overrides a key).
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// `strategy`.
    pub strategy: Option<StrategyKind>,
    /// `health`: merged field by field across layers.
    pub health: Option<HealthSettings>,
    /// `canary`: replaced as a whole by a later layer.
    pub canary: Option<Canary>,
    /// `smoke` entries: replaced as a whole by a later layer.
    pub smoke: Option<Vec<Smoke>>,
    /// `target` (only meaningful on an environment, but accepted on layers for symmetry).
    pub target: Option<TargetKind>,
    /// `dockerfile`: relative to the service's path.
    pub dockerfile: Option<PathBuf>,
    /// `image`: an image name without a tag, as written.
    pub image: Option<String>,
    /// `build_args`: merged key by key across layers (a later layer overrides a key).
    pub build_args: Option<BTreeMap<String, String>>,
    /// `container_port`: where the service listens inside its container.
    pub container_port: Option<u16>,
    /// `autoscale`: replaced as a whole by a later layer.
    pub autoscale: Option<Autoscale>,
    /// `cpus`, in billionths of a CPU (swarm's `NanoCPUs`).
    pub nano_cpus: Option<i64>,
    /// `memory`, in bytes.
    pub memory: Option<i64>,
    /// `constraints`: replaced as a whole by a later layer.
    pub constraints: Option<Vec<String>>,
}

/// `[health]` keys as set on one layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSettings {
    /// `type`: `http` (default) or `tcp`.
    pub kind: Option<ProbeKind>,
    /// `path`.
    pub path: Option<String>,
    /// `expect_status`.
    pub expect_status: Option<u16>,
    /// `expect_json`: a subset the JSON body must contain.
    pub expect_json: Option<serde_json::Value>,
    /// `initial_delay`.
    pub initial_delay: Option<Duration>,
    /// `period`.
    pub period: Option<Duration>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `success_threshold`.
    pub success_threshold: Option<u32>,
    /// `failure_threshold`.
    pub failure_threshold: Option<u32>,
    /// `ready_timeout`.
    pub ready_timeout: Option<Duration>,
}

/// A declared environment.
#[derive(Debug, Clone)]
pub struct EnvironmentDecl {
    /// The environment's name.
    pub name: String,
    /// `target` (default local).
    pub target: TargetKind,
    /// `branch`: what auto-deploy follows.
    pub branch: Option<String>,
    /// `require_approval` (default false).
    pub require_approval: bool,
    /// `registry`: where container targets push images, `host[:port][/path]`.
    pub registry: Option<String>,
    /// `[environments.E.docker] host`: `unix:///path` or `tcp://host:port`; `None` means
    /// `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// `[environments.E.swarm] host`: a swarm manager's Docker API, in the same forms.
    pub swarm_host: Option<String>,
    /// Overrides for every service in this environment.
    pub overrides: ServiceSettings,
    /// Per-service overrides (`[environments.E.services.S]`).
    pub service_overrides: BTreeMap<String, ServiceSettings>,
    /// False for the implicit `development` environment.
    pub declared: bool,
}

/// One environment with every service's settings resolved.
#[derive(Debug, Clone)]
pub struct ResolvedEnvironment {
    /// The environment's name.
    pub name: String,
    /// Where releases run.
    pub target: TargetKind,
    /// `branch`: what auto-deploy follows.
    pub branch: Option<String>,
    /// Runs stop before traffic changes until approved.
    pub require_approval: bool,
    /// `registry`: where container targets push images, `host[:port][/path]`.
    pub registry: Option<String>,
    /// `[environments.E.docker] host` (`None`: `DOCKER_HOST`, else the local socket).
    pub docker_host: Option<String>,
    /// `[environments.E.swarm] host`: a swarm manager's Docker API.
    pub swarm_host: Option<String>,
    /// Services in declaration order.
    pub services: Vec<ResolvedService>,
}

impl ResolvedEnvironment {
    /// The service named `name`, if declared.
    pub fn service(&self, name: &str) -> Option<&ResolvedService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A service with defaults, its own keys and the environment's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedService {
    /// Where its releases run: its own `target`, else the environment's.
    pub target: TargetKind,
    /// The service name.
    pub name: String,
    /// Source directory, relative to the project dir.
    pub path: PathBuf,
    /// Extra globs whose changes affect this service.
    pub watch: Vec<String>,
    /// Services that must be ACTIVE before this one deploys.
    pub depends_on: Vec<String>,
    /// Check commands (default none).
    pub checks: Vec<String>,
    /// Build command (default none).
    pub build: Option<String>,
    /// Run command (required by the local target).
    pub run: Option<String>,
    /// Public port (required by the local target).
    pub port: Option<u16>,
    /// Listen address (default 127.0.0.1).
    pub listen: IpAddr,
    /// Host names claimed on the shared `[proxy]` listeners (lowercase; empty: none).
    pub hosts: Vec<String>,
    /// With `hosts`: the path prefix claimed (`/` when not set).
    pub path_prefix: String,
    /// `[proxy]`: the shared listeners its `hosts` are served on.
    pub shared_listeners: ProxyListeners,
    /// Largest request body the proxy passes on (`None`: no limit).
    pub max_body: Option<u64>,
    /// Longest wait for a response head (`None`: no limit).
    pub upstream_timeout: Option<Duration>,
    /// Write an access log (default false).
    pub access_log: bool,
    /// HTTPS for `hosts` on `[proxy] https` (`None`: plain HTTP only).
    pub tls: Option<Tls>,
    /// Instances (default 1).
    pub instances: u32,
    /// Rolling batch size (default 1).
    pub batch: u32,
    /// Drain timeout (default 30s).
    pub drain_timeout: Duration,
    /// Scale-down delay (default 30s).
    pub scale_down_delay: Duration,
    /// Timeout per command (default 10m).
    pub timeout: Duration,
    /// Commands run before traffic changes.
    pub pre_deploy: Vec<String>,
    /// Commands run after a deploy.
    pub post_deploy: Vec<String>,
    /// Roll back when a post_deploy hook fails (default false).
    pub rollback_on_hook_failure: bool,
    /// Environment variables for every command and instance of the service.
    pub env: BTreeMap<String, EnvValue>,
    /// Deploy strategy (default blue-green).
    pub strategy: StrategyKind,
    /// Health probe.
    pub health: Health,
    /// Canary settings, when given (kept even when the strategy is not canary).
    pub canary: Option<Canary>,
    /// Extra smoke checks for `cutover test`.
    pub smoke: Vec<Smoke>,
    /// How container targets build and run it (defaults filled in; unused by the local target).
    pub container: ContainerSettings,
}

/// A service's container keys, resolved: what the docker, swarm and kubernetes targets build
/// and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// The Dockerfile, relative to the project dir: the service's path joined with the
    /// `dockerfile` key (default `Dockerfile`), `.` and `..` folded away.
    pub dockerfile: PathBuf,
    /// The image name without a tag: the `image` key, else `<project>-<service>`; prefixed with
    /// `<registry>/` when the environment has a registry the name does not already start with.
    pub image: String,
    /// `--build-arg` values (plain strings: secrets never go into an image).
    pub build_args: BTreeMap<String, String>,
    /// The port the service listens on inside its container, given to it as `$PORT`
    /// (default 8080).
    pub container_port: u16,
    /// Instances between `min` and `max` by in-flight requests, when set.
    pub autoscale: Option<Autoscale>,
    /// Swarm: each task's CPU limit in billionths of a CPU (`cpus`).
    pub nano_cpus: Option<i64>,
    /// Swarm: each task's memory limit in bytes (`memory`).
    pub memory: Option<i64>,
    /// Swarm: placement constraints (`constraints`).
    pub constraints: Vec<String>,
}

/// `autoscale = { min, max, target_inflight }`: instances between `min` and `max`, aiming at
/// `target_inflight` in-flight requests per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscale {
    /// Fewest instances (at least 1).
    pub min: u32,
    /// Most instances (at least `min`).
    pub max: u32,
    /// In-flight requests per instance to aim for (at least 1).
    pub target_inflight: u32,
}

/// A value in a service's `env` table.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A literal value.
    Plain(String),
    /// `{ secret = "NAME" }`: resolved at run time, redacted everywhere.
    Secret(String),
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Plain(v) => write!(f, "{v:?}"),
            EnvValue::Secret(name) => write!(f, "secret({name})"),
        }
    }
}

/// Deploy strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrategyKind {
    /// Start all new instances, switch in one step, drain the old.
    #[default]
    BlueGreen,
    /// Replace `batch` instances at a time.
    Rolling,
    /// Weighted steps with automated analysis.
    Canary,
    /// Stop old, start new.
    Immediate,
}

impl StrategyKind {
    /// The name used in `cutover.toml` and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Rolling => "rolling",
            StrategyKind::Canary => "canary",
            StrategyKind::Immediate => "immediate",
        }
    }
}

/// Where releases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TargetKind {
    /// This host, through the cutover agent.
    #[default]
    Local,
    /// A Docker engine.
    Docker,
    /// Docker Swarm.
    Swarm,
    /// Kubernetes.
    Kubernetes,
    /// Any CLI.
    Exec,
}

impl TargetKind {
    /// Whether its instances are containers of an image cutover builds (docker, swarm).
    pub fn runs_images(self) -> bool {
        matches!(self, TargetKind::Docker | TargetKind::Swarm)
    }

    /// The name used in `cutover.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Docker => "docker",
            TargetKind::Swarm => "swarm",
            TargetKind::Kubernetes => "kubernetes",
            TargetKind::Exec => "exec",
        }
    }
}

/// Probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeKind {
    /// An HTTP GET with status (and optional JSON) expectations.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// A resolved health probe (built-in defaults: http, /health, 200, delay 0s, period 1s,
/// timeout 1s, success 1, failure 3, ready_timeout 60s).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// HTTP or TCP.
    pub kind: ProbeKind,
    /// Request path.
    pub path: String,
    /// Expected status.
    pub expect_status: u16,
    /// JSON subset the body must contain.
    pub expect_json: Option<serde_json::Value>,
    /// Grace period: failures before it ends don't count.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Consecutive successes to become ready.
    pub success_threshold: u32,
    /// Consecutive failures of a ready instance to take it out of the route (and restart it).
    pub failure_threshold: u32,
    /// How long a starting instance (no passing probe yet) may take to become ready; until
    /// then failed probes mean "not yet".
    pub ready_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: ProbeKind::Http,
            path: "/health".to_string(),
            expect_status: 200,
            expect_json: None,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// `[services.S.canary]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Steps in order; weights are integer percents 1..=100, non-decreasing.
    pub steps: Vec<CanaryStep>,
    /// Time between judgements.
    pub interval: Duration,
    /// Highest acceptable error rate (0.0..=1.0).
    pub max_error_rate: f64,
    /// Highest acceptable p99 latency.
    pub max_p99_latency: Duration,
    /// Requests needed before a verdict.
    pub min_requests: u64,
    /// How long a step may go without a verdict after its pause (default 10m).
    pub verdict_timeout: Duration,
    /// Keep a client on one version with a cookie (default false).
    pub sticky: bool,
    /// Optional external analysis.
    pub prometheus: Option<PrometheusAnalysis>,
}

/// One canary step.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStep {
    /// Percent of traffic to the canary.
    pub weight: u8,
    /// How the step ends.
    pub pause: Pause,
}

/// How a canary step waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// No pause: advance after the first passing judgement.
    None,
    /// Advance when this has elapsed and the latest judgement passed.
    Timed(Duration),
    /// Wait for `cutover promote`.
    Manual,
}

/// `[services.S.canary.prometheus]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusAnalysis {
    /// Prometheus base URL.
    pub url: String,
    /// A PromQL query returning a scalar.
    pub query: String,
    /// Highest acceptable value.
    pub max: f64,
}

/// One `[[services.S.smoke]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Smoke {
    /// Request path.
    pub path: String,
    /// HTTP method (default GET), uppercase.
    pub method: String,
    /// Expected status (default 200).
    pub expect_status: u16,
    /// Optional latency bound.
    pub max_latency: Option<Duration>,
}

/// Webhook body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The JSON body in DESIGN.md.
    Json,
    /// Slack `{"text", "blocks"}`.
    Slack,
}

/// One `[[notify]]` webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// Where to POST.
    pub url: String,
    /// Body format (default json).
    pub format: NotifyFormat,
    /// Event names that trigger it (default all of deploy.started, deploy.succeeded,
    /// deploy.failed, rollback, approval.requested).
    pub on: Vec<String>,
    /// HMAC key, as a plain value or secret reference.
    pub secret: Option<EnvValue>,
}
