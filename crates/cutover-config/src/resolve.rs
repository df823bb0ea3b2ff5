//! Layering, done once per environment: built-in defaults ← `[defaults]` ← `[services.S]` ←
//! `[environments.E]` ← `[environments.E.services.S]`.
//!
//! `env` merges key by key and `health` field by field; `canary` and `smoke` replace as a whole;
//! every other key (scalars and lists) replaces.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::error::UnknownEnvironment;
use crate::model::{
    DEVELOPMENT, EnvValue, EnvironmentDecl, Health, HealthSettings, Project, ResolvedEnvironment,
    ResolvedService, ServiceDecl, ServiceSettings, TargetKind,
};

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
            finish(decl, merged, env.target)
        })
        .collect();
    ResolvedEnvironment {
        name: env.name.clone(),
        target: env.target,
        branch: env.branch.clone(),
        require_approval: env.require_approval,
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
fn finish(decl: &ServiceDecl, s: ServiceSettings, env_target: TargetKind) -> ResolvedService {
    let builtin = Health::default();
    let h = s.health.unwrap_or_default();
    ResolvedService {
        target: s.target.unwrap_or(env_target),
        name: decl.name.clone(),
        path: decl.path.clone(),
        watch: decl.watch.clone(),
        depends_on: decl.depends_on.clone(),
        checks: s.checks.unwrap_or_default(),
        build: s.build,
        run: s.run,
        port: s.port,
        listen: s.listen.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
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
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use crate::model::{EnvValue, Pause, ProbeKind, StrategyKind, TargetKind};

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
