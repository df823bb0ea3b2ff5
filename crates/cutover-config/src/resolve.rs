//! Layering, done once per environment: built-in defaults ← `[defaults]` ← `[services.S]` ←
//! `[environments.E]` ← `[environments.E.services.S]`.
//!
//! `env` and `build_args` merge key by key and `health` field by field; `canary`, `smoke` and
//! `autoscale` replace as a whole; every other key (scalars and lists) replaces.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::UnknownEnvironment;
use crate::model::{
    ContainerSettings, DEVELOPMENT, EnvValue, EnvironmentDecl, Health, HealthSettings, Project,
    ResolvedEnvironment, ResolvedService, ServiceDecl, ServiceSettings,
};

/// The `dockerfile` a service uses when no layer sets one (relative to its path).
pub(crate) const DEFAULT_DOCKERFILE: &str = "Dockerfile";

/// The port a service listens on inside its container when no layer sets `container_port`.
pub(crate) const DEFAULT_CONTAINER_PORT: u16 = 8080;

impl Project {
    /// Environment names in declaration order, `development` included.
    pub fn environment_names(&self) -> Vec<&str> {
        self.environments.iter().map(|e| e.name.as_str()).collect()
    }

    /// The environment commands use without `--env`: `[project] default_env`, else `development`.
    pub fn default_env(&self) -> &str {
        self.settings.default_env.as_deref().unwrap_or(DEVELOPMENT)
    }

    /// The declared environment `name`, if any.
    pub fn environment(&self, name: &str) -> Option<&EnvironmentDecl> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// Every service of environment `env` with all layers applied.
    pub fn resolve(&self, env: &str) -> Result<ResolvedEnvironment, UnknownEnvironment> {
        match self.environment(env) {
            Some(decl) => Ok(resolve_decl(self, decl)),
            None => Err(UnknownEnvironment {
                name: env.to_string(),
                known: self
                    .environment_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            }),
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceDecl> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every secret referenced anywhere (env values of every layer and environment, notify
    /// secrets), sorted and deduplicated.
    pub fn secret_names(&self) -> Vec<String> {
        let mut layers: Vec<&ServiceSettings> = vec![&self.defaults];
        layers.extend(self.services.iter().map(|s| &s.settings));
        for env in &self.environments {
            layers.push(&env.overrides);
            layers.extend(env.service_overrides.values());
        }
        let mut names: Vec<String> = layers
            .iter()
            .filter_map(|l| l.env.as_ref())
            .flat_map(|env| env.values())
            .chain(self.notify.iter().filter_map(|n| n.secret.as_ref()))
            .filter_map(|v| match v {
                EnvValue::Secret(name) => Some(name.clone()),
                EnvValue::Plain(_) => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Resolves every service of a (declared or implicit) environment.
pub(crate) fn resolve_decl(project: &Project, env: &EnvironmentDecl) -> ResolvedEnvironment {
    let services = project
        .services
        .iter()
        .map(|decl| {
            let mut merged = layer(project.defaults.clone(), &decl.settings);
            merged = layer(merged, &env.overrides);
            if let Some(over) = env.service_overrides.get(&decl.name) {
                merged = layer(merged, over);
            }
            finish(project, env, decl, merged)
        })
        .collect();
    ResolvedEnvironment {
        name: env.name.clone(),
        target: env.target,
        branch: env.branch.clone(),
        require_approval: env.require_approval,
        registry: env.registry.clone(),
        docker_host: env.docker_host.clone(),
        swarm_host: env.swarm_host.clone(),
        services,
    }
}

/// `over` on top of `base`.
pub(crate) fn layer(base: ServiceSettings, over: &ServiceSettings) -> ServiceSettings {
    let env = match (base.env, &over.env) {
        (Some(mut b), Some(o)) => {
            b.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(b)
        }
        (b, o) => o.clone().or(b),
    };
    let build_args = match (base.build_args, &over.build_args) {
        (Some(mut b), Some(o)) => {
            b.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(b)
        }
        (b, o) => o.clone().or(b),
    };
    let health = match (base.health, &over.health) {
        (Some(b), Some(o)) => Some(layer_health(b, o)),
        (b, o) => o.clone().or(b),
    };
    ServiceSettings {
        checks: over.checks.clone().or(base.checks),
        build: over.build.clone().or(base.build),
        run: over.run.clone().or(base.run),
        port: over.port.or(base.port),
        listen: over.listen.or(base.listen),
        hosts: over.hosts.clone().or(base.hosts),
        path_prefix: over.path_prefix.clone().or(base.path_prefix),
        max_body: over.max_body.or(base.max_body),
        upstream_timeout: over.upstream_timeout.or(base.upstream_timeout),
        access_log: over.access_log.or(base.access_log),
        tls: over.tls.clone().or(base.tls),
        instances: over.instances.or(base.instances),
        batch: over.batch.or(base.batch),
        drain_timeout: over.drain_timeout.or(base.drain_timeout),
        scale_down_delay: over.scale_down_delay.or(base.scale_down_delay),
        timeout: over.timeout.or(base.timeout),
        pre_deploy: over.pre_deploy.clone().or(base.pre_deploy),
        post_deploy: over.post_deploy.clone().or(base.post_deploy),
        rollback_on_hook_failure: over
            .rollback_on_hook_failure
            .or(base.rollback_on_hook_failure),
        env,
        strategy: over.strategy.or(base.strategy),
        health,
        canary: over.canary.clone().or(base.canary),
        smoke: over.smoke.clone().or(base.smoke),
        target: over.target.or(base.target),
        dockerfile: over.dockerfile.clone().or(base.dockerfile),
        image: over.image.clone().or(base.image),
        build_args,
        container_port: over.container_port.or(base.container_port),
        autoscale: over.autoscale.clone().or(base.autoscale),
        nano_cpus: over.nano_cpus.or(base.nano_cpus),
        memory: over.memory.or(base.memory),
        constraints: over.constraints.clone().or(base.constraints),
    }
}

fn layer_health(base: HealthSettings, over: &HealthSettings) -> HealthSettings {
    HealthSettings {
        kind: over.kind.or(base.kind),
        path: over.path.clone().or(base.path),
        expect_status: over.expect_status.or(base.expect_status),
        expect_json: over.expect_json.clone().or(base.expect_json),
        initial_delay: over.initial_delay.or(base.initial_delay),
        period: over.period.or(base.period),
        timeout: over.timeout.or(base.timeout),
        success_threshold: over.success_threshold.or(base.success_threshold),
        failure_threshold: over.failure_threshold.or(base.failure_threshold),
        ready_timeout: over.ready_timeout.or(base.ready_timeout),
    }
}

/// Applies the built-in defaults.
fn finish(
    project: &Project,
    env: &EnvironmentDecl,
    decl: &ServiceDecl,
    s: ServiceSettings,
) -> ResolvedService {
    let builtin = Health::default();
    let h = s.health.unwrap_or_default();
    let dockerfile = s
        .dockerfile
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKERFILE));
    let container = ContainerSettings {
        dockerfile: fold(&decl.path.join(dockerfile)),
        image: image_name(
            s.image.as_deref(),
            &project.name,
            &decl.name,
            env.registry.as_deref(),
        ),
        build_args: s.build_args.unwrap_or_default(),
        container_port: s.container_port.unwrap_or(DEFAULT_CONTAINER_PORT),
        autoscale: s.autoscale,
        nano_cpus: s.nano_cpus,
        memory: s.memory,
        constraints: s.constraints.unwrap_or_default(),
    };
    ResolvedService {
        target: s.target.unwrap_or(env.target),
        name: decl.name.clone(),
        path: decl.path.clone(),
        watch: decl.watch.clone(),
        depends_on: decl.depends_on.clone(),
        checks: s.checks.unwrap_or_default(),
        build: s.build,
        run: s.run,
        port: s.port,
        listen: s.listen.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        hosts: s.hosts.unwrap_or_default(),
        path_prefix: s.path_prefix.unwrap_or_else(|| "/".to_string()),
        shared_listeners: project.proxy.clone(),
        max_body: s.max_body,
        upstream_timeout: s.upstream_timeout,
        access_log: s.access_log.unwrap_or(false),
        tls: s.tls,
        instances: s.instances.unwrap_or(1),
        batch: s.batch.unwrap_or(1),
        drain_timeout: s.drain_timeout.unwrap_or(Duration::from_secs(30)),
        scale_down_delay: s.scale_down_delay.unwrap_or(Duration::from_secs(30)),
        timeout: s.timeout.unwrap_or(Duration::from_secs(600)),
        pre_deploy: s.pre_deploy.unwrap_or_default(),
        post_deploy: s.post_deploy.unwrap_or_default(),
        rollback_on_hook_failure: s.rollback_on_hook_failure.unwrap_or(false),
        env: s.env.unwrap_or_default(),
        strategy: s.strategy.unwrap_or_default(),
        health: Health {
            kind: h.kind.unwrap_or(builtin.kind),
            path: h.path.unwrap_or(builtin.path),
            expect_status: h.expect_status.unwrap_or(builtin.expect_status),
            expect_json: h.expect_json.or(builtin.expect_json),
            initial_delay: h.initial_delay.unwrap_or(builtin.initial_delay),
            period: h.period.unwrap_or(builtin.period),
            timeout: h.timeout.unwrap_or(builtin.timeout),
            success_threshold: h.success_threshold.unwrap_or(builtin.success_threshold),
            failure_threshold: h.failure_threshold.unwrap_or(builtin.failure_threshold),
            ready_timeout: h.ready_timeout.unwrap_or(builtin.ready_timeout),
        },
        canary: s.canary,
        smoke: s.smoke.unwrap_or_default(),
        container,
    }
}

/// The image a service's releases are tagged on: `image`, else `<project>-<service>`, after
/// `<registry>/` unless it already starts with that.
pub(crate) fn image_name(
    image: Option<&str>,
    project: &str,
    service: &str,
    registry: Option<&str>,
) -> String {
    let name = image.map_or_else(|| format!("{project}-{service}"), str::to_string);
    match registry {
        Some(r) if !name.starts_with(&format!("{r}/")) => format!("{r}/{name}"),
        _ => name,
    }
}

/// `path` with `.` removed and each `..` folded into the component before it; a `..` with
/// nothing left to fold stays at the front (validation reports such a path as leaving the
/// project dir).
pub(crate) fn fold(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::model::{Autoscale, EnvValue, Pause, ProbeKind, StrategyKind, TargetKind};

    fn project(src: &str) -> crate::Project {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["api", "web"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        match crate::parse(src, &tmp.path().join("cutover.toml"), tmp.path()) {
            Ok(p) => p,
            Err(e) => panic!("{}", e.report()),
        }
    }

    const LAYERS: &str = r#"
[project]
name = "demo"

[defaults]
instances = 2
timeout = "1m"
batch = 2
env = { A = "defaults", B = "defaults" }
health = { path = "/ready", period = "5s" }
smoke = [{ path = "/a" }, { path = "/b" }]

[services.api]
path = "api"
run = "python3 app.py"
port = 8080
timeout = "2m"
env = { B = "service", C = { secret = "API_KEY" } }
health = { timeout = "3s" }
strategy = "canary"
canary = { steps = [{ weight = 10, pause = "manual" }, { weight = 100 }] }

[services.web]
path = "web"
run = "npm start"
port = 8081
smoke = [{ path = "/web", method = "head", expect_status = 204 }]

[environments.production]
target = "local"
instances = 4
env = { C = "production" }
health = { type = "tcp", ready_timeout = "2m" }
canary = { steps = [{ weight = 50 }], max_error_rate = 0 }

[environments.production.services.api]
instances = 5
env = { D = { secret = "PROD_ONLY" } }
health = { period = "9s" }
"#;

    #[test]
    fn scalars_follow_defaults_service_env_env_service() {
        let p = project(LAYERS);
        let dev = p.resolve("development").unwrap();
        let prod = p.resolve("production").unwrap();
        let (dev_api, dev_web) = (dev.service("api").unwrap(), dev.service("web").unwrap());
        let (prod_api, prod_web) = (prod.service("api").unwrap(), prod.service("web").unwrap());
        assert_eq!((dev_api.instances, dev_web.instances), (2, 2));
        assert_eq!((prod_api.instances, prod_web.instances), (5, 4));
        assert_eq!(dev_api.timeout, Duration::from_secs(120));
        assert_eq!(dev_web.timeout, Duration::from_secs(60));
        assert_eq!(dev_web.batch, 2);
        // Built-in defaults where no layer sets a key.
        assert_eq!(dev_web.drain_timeout, Duration::from_secs(30));
        assert_eq!(dev_web.scale_down_delay, Duration::from_secs(30));
        assert_eq!(dev_web.listen.to_string(), "127.0.0.1");
        assert_eq!(dev_web.strategy, StrategyKind::BlueGreen);
        assert!(!dev_web.rollback_on_hook_failure);
    }

    #[test]
    fn env_merges_key_by_key() {
        let p = project(LAYERS);
        let prod = p.resolve("production").unwrap();
        let env = &prod.service("api").unwrap().env;
        assert_eq!(env.get("A"), Some(&EnvValue::Plain("defaults".into())));
        assert_eq!(env.get("B"), Some(&EnvValue::Plain("service".into())));
        assert_eq!(env.get("C"), Some(&EnvValue::Plain("production".into())));
        assert_eq!(env.get("D"), Some(&EnvValue::Secret("PROD_ONLY".into())));
        let dev = p.resolve("development").unwrap();
        let env = &dev.service("api").unwrap().env;
        assert_eq!(env.get("C"), Some(&EnvValue::Secret("API_KEY".into())));
        assert_eq!(env.get("D"), None);
        assert_eq!(p.secret_names(), ["API_KEY", "PROD_ONLY"]);
    }

    #[test]
    fn health_merges_field_by_field() {
        let p = project(LAYERS);
        let dev = p.resolve("development").unwrap();
        let h = &dev.service("api").unwrap().health;
        assert_eq!(h.path, "/ready");
        assert_eq!(h.period, Duration::from_secs(5));
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(h.kind, ProbeKind::Http);
        assert_eq!(h.failure_threshold, 3);
        assert_eq!(
            h.ready_timeout,
            Duration::from_secs(60),
            "the built-in default"
        );
        let prod = p.resolve("production").unwrap();
        let h = &prod.service("api").unwrap().health;
        assert_eq!(
            (h.kind, h.period, h.timeout),
            (
                ProbeKind::Tcp,
                Duration::from_secs(9),
                Duration::from_secs(3)
            )
        );
        assert_eq!(h.path, "/ready");
        assert_eq!(h.ready_timeout, Duration::from_secs(120));
    }

    #[test]
    fn canary_and_smoke_replace_as_a_whole() {
        let p = project(LAYERS);
        let dev = p.resolve("development").unwrap();
        let canary = dev.service("api").unwrap().canary.clone().unwrap();
        assert_eq!(canary.steps.len(), 2);
        assert_eq!(canary.steps[0].pause, Pause::Manual);
        assert_eq!(canary.max_error_rate, 0.05);
        let prod = p.resolve("production").unwrap();
        let canary = prod.service("api").unwrap().canary.clone().unwrap();
        assert_eq!(canary.steps.len(), 1);
        assert_eq!(canary.max_error_rate, 0.0);
        assert_eq!(canary.interval, Duration::from_secs(10));
        let smoke = &dev.service("web").unwrap().smoke;
        assert_eq!(smoke.len(), 1);
        assert_eq!(
            (smoke[0].method.as_str(), smoke[0].expect_status),
            ("HEAD", 204)
        );
        assert_eq!(dev.service("api").unwrap().smoke.len(), 2);
    }

    const CONTAINERS: &str = r#"
[project]
name = "demo"

[defaults]
container_port = 9000
build_args = { A = "defaults", B = "defaults" }

[services.api]
path = "api"
run = "python3 app.py"
port = 8080
dockerfile = "docker/Dockerfile.prod"
build_args = { B = "service", C = "service" }
autoscale = { min = 2, max = 6, target_inflight = 10 }

[services.web]
path = "web"
run = "npm start"
port = 8081
image = "acme/web"

[environments.preprod]
target = "docker"
registry = "127.0.0.1:5000"
container_port = 7000
[environments.preprod.docker]
host = "tcp://127.0.0.1:2375"
[environments.preprod.services.api]
image = "127.0.0.1:5000/team/api"
dockerfile = "../Dockerfile"
container_port = 7001
build_args = { C = "preprod" }
autoscale = { min = 1, max = 1, target_inflight = 5 }

[environments.cluster]
target = "swarm"
registry = "registry.example.com/acme"
[environments.cluster.swarm]
host = "unix:///run/manager.sock"
"#;

    #[test]
    fn container_keys_resolve_with_defaults_on_a_local_target() {
        let p = project(CONTAINERS);
        let dev = p.resolve("development").unwrap();
        assert_eq!(dev.target, TargetKind::Local);
        assert_eq!(
            (&dev.registry, &dev.docker_host, &dev.swarm_host),
            (&None, &None, &None)
        );
        let api = &dev.service("api").unwrap().container;
        assert_eq!(api.dockerfile, Path::new("api/docker/Dockerfile.prod"));
        assert_eq!(
            api.image, "demo-api",
            "<project>-<service> without a registry"
        );
        assert_eq!(api.container_port, 9000, "from [defaults]");
        assert_eq!(
            api.autoscale,
            Some(Autoscale {
                min: 2,
                max: 6,
                target_inflight: 10
            })
        );
        let args: Vec<(&str, &str)> = api
            .build_args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            args,
            [("A", "defaults"), ("B", "service"), ("C", "service")]
        );
        let web = &dev.service("web").unwrap().container;
        assert_eq!(web.dockerfile, Path::new("web/Dockerfile"), "the default");
        assert_eq!(web.image, "acme/web");
        assert_eq!(web.autoscale, None);
        assert_eq!(web.build_args.len(), 2);
    }

    #[test]
    fn container_keys_follow_the_layers_and_the_registry() {
        let p = project(CONTAINERS);
        let preprod = p.resolve("preprod").unwrap();
        assert_eq!(preprod.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(preprod.docker_host.as_deref(), Some("tcp://127.0.0.1:2375"));
        assert_eq!(preprod.swarm_host, None);
        let api = &preprod.service("api").unwrap();
        assert_eq!(api.target, TargetKind::Docker);
        let api = &api.container;
        assert_eq!(
            api.image, "127.0.0.1:5000/team/api",
            "an image already under the registry is not prefixed twice"
        );
        assert_eq!(api.dockerfile, Path::new("Dockerfile"), "api/../Dockerfile");
        assert_eq!(
            api.container_port, 7001,
            "environment.service over environment"
        );
        assert_eq!(api.build_args.get("C").map(String::as_str), Some("preprod"));
        assert_eq!(api.build_args.get("B").map(String::as_str), Some("service"));
        assert_eq!(
            api.autoscale,
            Some(Autoscale {
                min: 1,
                max: 1,
                target_inflight: 5
            }),
            "replaced as a whole"
        );
        let web = &preprod.service("web").unwrap().container;
        assert_eq!(web.image, "127.0.0.1:5000/acme/web");
        assert_eq!(web.container_port, 7000, "environment over [defaults]");

        let cluster = p.resolve("cluster").unwrap();
        assert_eq!(cluster.target, TargetKind::Swarm);
        assert_eq!(
            cluster.swarm_host.as_deref(),
            Some("unix:///run/manager.sock")
        );
        assert_eq!(cluster.docker_host, None);
        let images: Vec<&str> = cluster
            .services
            .iter()
            .map(|s| s.container.image.as_str())
            .collect();
        assert_eq!(
            images,
            [
                "registry.example.com/acme/demo-api",
                "registry.example.com/acme/acme/web"
            ]
        );
    }

    #[test]
    fn image_names_and_dockerfile_paths() {
        use super::{fold, image_name};
        assert_eq!(image_name(None, "shop", "api", None), "shop-api");
        assert_eq!(
            image_name(None, "shop", "api", Some("localhost:5000")),
            "localhost:5000/shop-api"
        );
        assert_eq!(
            image_name(
                Some("localhost:5000/x"),
                "shop",
                "api",
                Some("localhost:5000")
            ),
            "localhost:5000/x"
        );
        assert_eq!(
            image_name(
                Some("localhost:50000/x"),
                "shop",
                "api",
                Some("localhost:5000")
            ),
            "localhost:5000/localhost:50000/x",
            "a prefix of the registry is not the registry"
        );
        assert_eq!(fold(Path::new("./Dockerfile")), Path::new("Dockerfile"));
        assert_eq!(
            fold(Path::new("a/./b/../Dockerfile")),
            Path::new("a/Dockerfile")
        );
        assert_eq!(fold(Path::new("a/../../x")), Path::new("../x"));
    }

    #[test]
    fn development_is_implicit_unless_declared() {
        let p = project(LAYERS);
        assert_eq!(p.environment_names(), ["production", "development"]);
        let dev = p
            .environments
            .iter()
            .find(|e| e.name == "development")
            .unwrap();
        assert!(!dev.declared);
        assert_eq!(dev.target, TargetKind::Local);
        assert_eq!(p.default_env(), "development");

        let p = project(
            "[project]\nname = \"x\"\ndefault_env = \"staging\"\n[environments.development]\nbranch = \"dev\"\n[environments.staging]\n",
        );
        assert_eq!(p.environment_names(), ["development", "staging"]);
        assert!(p.environments[0].declared);
        assert_eq!(p.default_env(), "staging");
        assert_eq!(
            p.resolve("development").unwrap().branch.as_deref(),
            Some("dev")
        );
        assert!(p.resolve("nope").is_err());
    }
}
